"""Log search's model: bounds named by field, user text only ever a literal in the store's
query, continue tokens tied to their search, the collector's flags per placed namespace."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wharf.core.errors import InvalidError, NotFoundError, ThrottledError
from wharf.logs.model import (
    MAX_SEARCH_LIMIT,
    Cursor,
    LogSearch,
    LogSource,
    collector_flags,
    epoch_ns,
    found_line,
    next_cursor,
    re2_literal,
    rfc3339_ns,
)
from wharf.logs.service import SearchSlots

NOW = dt.datetime(2026, 11, 30, 2, 0, tzinfo=dt.UTC)
NS = "shop--web-dev"


def _search(**asked: object) -> LogSearch:
    args: dict[str, object] = {"since": "1h", "now": NOW, **asked}
    return LogSearch.of(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"since": None}, "since"),
        ({"since": ""}, "since"),
        ({"since": "8d"}, "since"),
        ({"since": "2026-11-01T00:00:00Z"}, "since"),
        ({"since": "2026-11-30T01:00:00"}, "since"),  # no zone
        ({"since": "yesterday"}, "since"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"limit": 0}, "limit"),
        ({"limit": MAX_SEARCH_LIMIT + 1}, "limit"),
        ({"q": "x" * 513}, "q"),
        ({"q": "(", "regex": True}, "q"),
        ({"q": None, "regex": True}, "q"),
        ({"pod": "../other"}, "pod"),
        ({"container": "a b"}, "container"),
        ({"cluster": "lab1/x"}, "cluster"),
        ({"token": "not-a-token"}, "continue"),
    ],
)
def test_a_search_out_of_bounds_is_refused_naming_the_field(asked, field):
    with pytest.raises(InvalidError) as caught:
        _search(**asked)
    assert caught.value.field == field


def test_a_search_takes_durations_or_rfc3339_within_seven_days():
    search = _search(since="2026-11-23T02:00:00Z", until="2026-11-30T02:00:00+00:00")
    assert search.until - search.since == dt.timedelta(days=7)
    assert _search().since == NOW - dt.timedelta(hours=1)
    assert _search().limit == 100


def _literal(query: str, prefix: str) -> str:
    """The string literal after `prefix` in a query, decoded."""
    start = query.index(prefix) + len(prefix)
    decoded, _ = json.JSONDecoder().raw_decode(query[start:])
    return str(decoded)


HOSTILE = [
    '"} or {tenant="a"',
    '" OR * | delete',
    ".*",
    "a|b",
    '\\" | fields *',
    "x\ny",
    "`~'",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_is_an_escaped_literal_and_never_query_language(text):
    query = _search(q=text).logsql(NS, "web")
    pattern = _literal(query, "_msg:~")
    assert re.fullmatch(pattern, text)  # it matches the text itself, literally
    assert not re.search(pattern, "any other line")
    assert query.endswith(" | fields _time, _msg, file, cluster")
    assert query.count(" AND ") == 1  # nothing the text said became another clause


@given(st.text(max_size=60))
def test_re2_literal_matches_exactly_its_text(text):
    assert re.fullmatch(re2_literal(text), text, re.S)


def test_the_application_pattern_is_its_namespace_and_its_pods_only():
    query = _search().logsql(NS, "web")
    file = _literal(query, "file:~")
    assert re.search(file, f"/var/log/pods/{NS}_web-7d9c6c8f5-x2k9p_uid/web/0.log")
    assert not re.search(file, f"/var/log/pods/{NS}_web-api-7d9c6-x2k9p_uid/web/0.log")
    assert not re.search(file, "/var/log/pods/other--web-dev_web-7d9c6-x2k9p_uid/web/0.log")
    assert not re.search(file, f"/var/log/pods/x{NS}_web-7d9c6-x2k9p_uid/web/0.log")
    # Its release's canary and preview pods are its own; a StatefulSet `web-x`'s are not,
    # nor those of an application `web-canary-api`.
    assert re.search(file, f"/var/log/pods/{NS}_web-canary-7d9c6c8f5-x2k9p_uid/web/0.log")
    assert re.search(file, f"/var/log/pods/{NS}_web-preview-7d9c6c8f5-x2k9p_uid/web/0.log")
    assert not re.search(file, f"/var/log/pods/{NS}_web-x-0_uid/web/0.log")
    assert not re.search(file, f"/var/log/pods/{NS}_web-canary-api-7d9c6-x2k9p_uid/web/0.log")


def test_a_pod_of_another_application_is_not_found():
    with pytest.raises(NotFoundError):
        _search(pod="api-7d9c6-x2k9p").logsql(NS, "web")
    query = _search(pod="web-7d9c6-x2k9p", container="web").logsql(NS, "web")
    assert "web-7d9c6-x2k9p" in _literal(query, "file:~")


def test_a_continue_token_belongs_to_its_search():
    first = _search(q="paid", limit=2)
    start = epoch_ns("2026-11-30T00:30:00Z")  # the first page's since, not this one's
    cursor = Cursor(epoch_ns("2026-11-30T01:59:00.000000005Z"), 1, first.digest(), start)
    again = _search(q="paid", limit=2, token=cursor.token())
    assert again.cursor == cursor
    assert again.window() == (
        "2026-11-30T00:30:00.000000000Z",
        "2026-11-30T01:59:00.000000006Z",
        1,
    )
    with pytest.raises(InvalidError) as caught:
        _search(q="other", limit=2, token=cursor.token())
    assert caught.value.field == "continue"
    wide = Cursor(cursor.end_ns, 1, first.digest(), start - 8 * 86400 * 10**9)
    with pytest.raises(InvalidError) as caught:  # an edited token widens nothing
        _search(q="paid", limit=2, token=wide.token())
    assert caught.value.field == "continue"


def test_the_next_cursor_skips_lines_of_the_same_nanosecond():
    search = _search(limit=3)
    rows = [
        {
            "_time": t,
            "_msg": "2026-11-30T01:00:00.5Z stdout F hi",
            "file": f"/p/{NS}_w-a-b_u/c/0.log",
        }
        for t in ("2026-11-30T01:00:03Z", "2026-11-30T01:00:02Z", "2026-11-30T01:00:02Z")
    ]
    lines = [line for line in map(found_line, rows) if line]
    assert [(x.pod, x.container, x.line, x.time) for x in lines[:1]] == [
        ("w-a-b", "c", "hi", "2026-11-30T01:00:00.500000000Z")
    ]
    cursor = next_cursor(search, lines)
    assert cursor is not None
    assert (rfc3339_ns(cursor.end_ns), cursor.skip) == ("2026-11-30T01:00:02.000000000Z", 2)
    assert next_cursor(search, lines[:2]) is None  # a short page is the last


def test_the_collector_ships_each_placed_namespace_to_its_tenant():
    sources = [
        LogSource("lab1", "shop", 7, "web", "dev", "shop--web-dev", tenant_uid="u-7"),
        LogSource("lab2", "bank", 9, "core", "prod", "bank--core-prod"),
        LogSource("gone", "bank", 9, "core", "prod", "bank--core-prod"),
    ]
    flags = collector_flags(sources, {"lab1": "/l1/pod-logs", "lab2": "/l2/pod-logs"})
    assert flags[:4] == [
        "-fileCollector.glob=/l1/pod-logs/shop--web-dev_*/*/*.log",
        "-fileCollector.excludeGlob=",
        "-fileCollector.tenantID=7:0",
        '-fileCollector.extraFields={"cluster": "lab1", "environment": "dev", '
        '"namespace": "shop--web-dev", "project": "web", "tenant": "shop", "tenantUid": "u-7"}',
    ]
    assert "-fileCollector.tenantID=9:0" in flags
    assert not any("gone" in flag for flag in flags)
    assert collector_flags([], {}) == []


def test_wharf_logs_search_pages_through_the_search_api(monkeypatch):
    from typer.testing import CliRunner

    from wharf.cli import app
    from wharf.core.apiclient import ApiClient

    asked: list[tuple[str, dict[str, object]]] = []
    pages = [
        {"items": [_printed("second")], "continue": "tok"},
        {"items": [_printed("first")], "continue": None},
    ]

    def answer(self, method, path, params=None, **_):
        asked.append((path, dict(params or {})))
        return pages[len(asked) - 1]

    monkeypatch.setattr(ApiClient, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(ApiClient, "json", answer)
    args = ["logs", "web", "-t", "shop", "--search", "paid", "--since", "2h", "--pages", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["lab1/web-a-b web │ second", "lab1/web-a-b web │ first"]
    path = "/api/v1/tenants/shop/applications/web/logs/search"
    assert asked == [
        (path, {"q": "paid", "since": "2h"}),
        (path, {"q": "paid", "since": "2h", "continue": "tok"}),
    ]


def _printed(line: str) -> dict[str, str]:
    return {"time": "", "cluster": "lab1", "pod": "web-a-b", "container": "web", "line": line}


def test_an_edited_continue_token_is_a_422_not_a_crash():
    digest = _search(q="paid").digest()
    for end, since in ((10**30, 10**30 - 1), (5, -(10**20)), (10**20, 10**20 - 10)):
        token = Cursor(end, 0, digest, since).token()
        with pytest.raises(InvalidError) as refused:
            _search(q="paid", token=token)
        assert refused.value.field == "continue"


def test_text_beyond_ascii_is_a_go_string_the_store_reads():
    query = _search(q="paid 😀 é").logsql(NS, "web")
    assert '"paid 😀 é"' in query or "paid 😀 é" in query
    assert "\\ud83d" not in query


def test_searches_at_once_are_bounded_per_user_and_per_tenant():
    slots = SearchSlots(per_user=2, per_tenant=3)
    with slots.held("dave", "shop"), slots.held("dave", "shop"):
        with pytest.raises(ThrottledError), slots.held("dave", "shop"):
            pass
        with slots.held("erin", "shop"):
            with pytest.raises(ThrottledError) as refused, slots.held("finn", "shop"):
                pass
            assert "tenant shop" in refused.value.message
        with slots.held("gus", "bank"):
            pass
    assert slots.users == {}
    assert slots.tenants == {}


def test_a_time_at_the_edge_of_the_calendar_is_a_422():
    for since in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        with pytest.raises(InvalidError) as refused:
            LogSearch.of(since, None, None, False, None, None, None, None, None, now=NOW)
        assert refused.value.field == "since"
