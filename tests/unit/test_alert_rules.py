"""Alert rules: every expression is confined to its rule's tenant and project, hostile ones
are refused, and every template renders a rule file promtool accepts."""

from __future__ import annotations

import subprocess
import typing
from pathlib import Path

import promql_parser
import pytest
import yaml

from wharf.alerts.model import (
    AlertRuleSpec,
    TemplateName,
    TemplateParams,
    alert_name,
    rule_expr,
    rule_file,
)
from wharf.alerts.service import PROMTOOL, check_rule_file, receiver_allows
from wharf.core.errors import InvalidError

TEMPLATES: tuple[TemplateName, ...] = typing.get_args(TemplateName)


def custom(expr: str) -> AlertRuleSpec:
    return AlertRuleSpec(project="shop", expr=expr)


@pytest.mark.parametrize(
    "expr",
    [
        'up{tenant="other"}',
        'up{tenant=~".*"}',
        'up{project!="shop"}',
        '{__name__=~".+",tenant="other"}',
        'sum(rate(x{tenant="other"}[5m]))',
        'up{a="1" or tenant="other"}',
        "rate(up[5m]",
    ],
)
def test_a_hostile_or_broken_expr_is_refused_naming_spec_expr(expr: str) -> None:
    with pytest.raises(InvalidError) as caught:
        rule_expr(custom(expr), "acme")
    assert caught.value.field == "spec.expr"


@pytest.mark.parametrize(
    "expr",
    [
        "up",
        '{__name__=~".+"}',
        "up or on() vector(1)",
        'label_replace(up, "tenant", "other", "", "")',
        "sum by (tenant) (rate(x[5m])) / ignoring(project) group_left sum(y)",
        "max_over_time(up[10m:1m])",
    ],
)
def test_every_selector_gets_the_rules_own_tenant_and_project(expr: str) -> None:
    confined = rule_expr(custom(expr), "acme")
    seen: list[str] = []

    def visit(node: typing.Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names = {(m.name, m.value) for m in node.matchers.matchers}
            assert ("tenant", "acme") in names, str(node)
            assert ("project", "shop") in names, str(node)
            seen.append(str(node))
        return None

    promql_parser.transform(promql_parser.parse(confined), pre_visit=visit)
    assert seen


def test_the_alert_carries_its_owners_labels_whatever_the_series_say() -> None:
    spec = custom('label_replace(up, "tenant", "other", "", "")')
    rule = yaml.safe_load(rule_file(spec, "acme", "r1"))["groups"][0]["rules"][0]
    assert rule["labels"]["tenant"] == "acme"
    assert rule["labels"]["project"] == "shop"
    assert rule["labels"]["wharf_rule"] == "r1"


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_renders_a_rule_file_promtool_accepts(template: TemplateName) -> None:
    spec = AlertRuleSpec(project="shop", template=template, params=TemplateParams(app="web"))
    check_rule_file(rule_file(spec, "acme", f"r-{template.lower()}"), "spec.template")


def test_a_rule_is_a_template_or_an_expr_not_both() -> None:
    with pytest.raises(InvalidError):
        rule_expr(AlertRuleSpec(project="shop", template="podNotReady", expr="up"), "acme")
    with pytest.raises(InvalidError):
        rule_expr(AlertRuleSpec(project="shop"), "acme")


def test_the_receiver_takes_only_its_bearer_token() -> None:
    assert receiver_allows("s3cret-token", "Bearer s3cret-token")
    assert not receiver_allows("s3cret-token", "Bearer s3cret-tokeN")
    assert not receiver_allows("s3cret-token", "Basic s3cret-token")
    assert not receiver_allows("s3cret-token", None)
    assert not receiver_allows("s3cret-token", "Bearer ")


def test_a_summary_is_told_as_written_never_run_as_a_prometheus_template(tmp_path: Path) -> None:
    """Prometheus expands Go templates in annotations, and `query` there runs unconfined
    PromQL: another tenant's series must not reach the summary (and so the incident)."""
    hostile = '{{ range query "secret" }}{{ .Value }}{{ end }}'
    spec = AlertRuleSpec(project="shop", expr="up", summary=hostile)
    (tmp_path / "rules.yml").write_text(rule_file(spec, "acme", "r1"))
    alert = {"exp_labels": {"tenant": "acme", "project": "shop", "wharf_rule": "r1"}}
    alert["exp_labels"] |= {"severity": spec.severity}
    test = {
        "rule_files": ["rules.yml"],
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'up{tenant="acme",project="shop"}', "values": "1 1"},
                    {"series": 'secret{tenant="other",project="x"}', "values": "42 42"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "1m",
                        "alertname": alert_name("acme", "r1"),
                        "exp_alerts": [alert | {"exp_annotations": {"summary": hostile}}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
