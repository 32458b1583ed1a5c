"""The template catalog over the API: built in, readable by every user, immutable once published."""

from __future__ import annotations

import copy

from tests.integration.conftest import Wharf, manifest


def test_the_catalog_is_built_in_and_published_versions_are_immutable(wharf: Wharf):
    items = wharf.admin.ok("GET", "/api/v1/apptemplates")["items"]
    assert {t["metadata"]["name"]: t["status"]["published"] for t in items} == {
        "cron-job": ["1.0.0"],
        "stateful-service": ["1.0.0"],
        "web-service": ["1.0.0"],
        "worker": ["1.0.0"],
    }
    # Any signed-in user reads the catalog; only platform admins change it.
    dev = wharf.user()
    wharf.tenant({"cpu": "1"}, admins=[dev.user])
    assert dev.ok("GET", "/api/v1/apptemplates/web-service")["spec"]["versions"][0]["published"]
    web = manifest(wharf.admin.ok("GET", "/api/v1/apptemplates/web-service"))
    assert dev.put("/api/v1/apptemplates/web-service", web).status_code == 403

    changed = copy.deepcopy(web)
    changed["spec"]["versions"][0]["parameters"]["properties"]["replicas"]["default"] = 5
    refused = wharf.admin.put("/api/v1/apptemplates/web-service", changed)
    assert refused.status_code == 422
    assert "1.0.0 is published and cannot change" in refused.json()["message"]

    newer = copy.deepcopy(changed["spec"]["versions"][0])
    newer.update(version="1.1.0", published=False)
    web["spec"]["versions"].append(newer)
    answer = wharf.admin.put("/api/v1/apptemplates/web-service", web)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"]["versions"] == ["1.0.0", "1.1.0"]

    undeclared = copy.deepcopy(web)
    undeclared["spec"]["versions"][1]["objects"][0]["metadata"]["name"] = "${nope}"
    refused = wharf.admin.put("/api/v1/apptemplates/web-service", undeclared)
    assert refused.status_code == 422
    assert refused.json()["field"] == "spec.versions[1].objects[0].metadata.name"
