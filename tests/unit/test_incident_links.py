"""An incident's links are built from its alert's labels, which a tenant's rule can set: a
label never turns a link into the path of another page."""

from __future__ import annotations

from wharf.alerts.service import links


def test_links_lead_to_the_applications_pages():
    assert links("acme", "shop", "web", "lab1") == {
        "logs": "/console/tenants/acme/applications/web/logs",
        "charts": "/console/tenants/acme/projects/shop/metrics?app=web&cluster=lab1",
    }
    assert links("acme", "shop", "", "lab1") == {}


def test_a_hostile_label_leads_nowhere_else():
    # Not an application's name: no links at all.
    for app in ("..", "../../../clusters?x=1#", "web/../x", "Web"):
        assert links("acme", "shop", app, "lab1") == {}
    # A cluster label stays one query value.
    got = links("acme", "shop", "web", "lab1&app=db")
    assert got["charts"] == (
        "/console/tenants/acme/projects/shop/metrics?app=web&cluster=lab1%26app%3Ddb"
    )
