"""Retention per tenant: the spec field's bounds (named by field), when a tenant's lines are
due to be cut, and the store's delete filter — a time and nothing a caller wrote."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wharf.core.errors import InvalidError
from wharf.logs.model import (
    deleting_accounts,
    retention_due,
    retention_filter,
    retention_record,
)
from wharf.logs.service import LogStoreClient
from wharf.tenancy.model import TENANT, TenantSpec, parse_retention
from wharf.tenancy.service import TenantRules

NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)


@pytest.mark.parametrize(
    ("text", "days"), [("1d", 1), ("7d", 7), ("30d", 30), ("2w", 14), ("00001d", 1)]
)
def test_retention_is_whole_days_or_weeks(text: str, days: int) -> None:
    assert parse_retention(text) == dt.timedelta(days=days)
    assert TENANT.parse_spec({"logs": {"retention": text}}).logs is not None


@pytest.mark.parametrize(
    "value",
    ["0d", "0w", "0", "-1d", "1d; rm", "1d\n", "100y", "1h", "", " 7d", "7 d", "123456d", 7, None],
)
def test_a_hostile_retention_is_refused_naming_the_field(value: object) -> None:
    if value is None:  # left out: the store's retention
        assert TENANT.parse_spec({"logs": {}}).log_retention(WEEK) == WEEK
        return
    with pytest.raises(InvalidError) as refused:
        TENANT.parse_spec({"logs": {"retention": value}})
    assert refused.value.field == "spec.logs.retention"


def test_a_retention_longer_than_the_stores_is_refused() -> None:
    rules = TenantRules(WEEK)
    rules._check_log_retention(TenantSpec.model_validate({"logs": {"retention": "7d"}}))
    for text in ("8d", "2w", "99999d"):
        with pytest.raises(InvalidError) as refused:
            rules._check_log_retention(TenantSpec.model_validate({"logs": {"retention": text}}))
        assert refused.value.field == "spec.logs.retention"


def test_a_tenants_retention_never_passes_the_stores() -> None:
    spec = TenantSpec.model_validate({"logs": {"retention": "30d"}})
    assert spec.log_retention(WEEK) == WEEK  # the store lowered since: its own wins
    assert TenantSpec().log_retention(WEEK) == WEEK


def test_a_cut_is_due_once_per_period_and_when_the_retention_changes() -> None:
    assert retention_due(None, None, NOW, DAY) is None  # the store's own retention: no cut
    assert retention_due(DAY, None, NOW, DAY) == NOW - DAY
    last = retention_record(DAY, NOW - DAY, NOW, "17")
    assert retention_due(DAY, last, NOW + dt.timedelta(hours=23), DAY) is None
    assert retention_due(DAY, last, NOW + DAY, DAY) == NOW
    assert retention_due(3 * DAY, last, NOW + dt.timedelta(hours=1), DAY) is not None
    clock_back = retention_due(DAY, last, NOW - dt.timedelta(hours=1), DAY)
    assert clock_back is not None  # a record from the future is not trusted
    assert retention_due(DAY, {"retention": "1d", "time": "garbage"}, NOW, DAY) is not None


@given(st.datetimes(timezones=st.just(dt.UTC)))
def test_the_delete_filter_is_a_time_and_nothing_else(when: dt.datetime) -> None:
    assert re.fullmatch(r"_time:<\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", retention_filter(when))


@pytest.mark.parametrize("account", [0, -1, 1 << 32])
def test_the_delete_is_refused_outside_a_wharf_tenants_store_tenant(account: int) -> None:
    """AccountID 0 is the store's default tenant (lines sent with no tenant), and the store
    reads the header as a uint32: neither is any Wharf tenant's."""
    store = LogStoreClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="store tenant"):
        asyncio.run(store.delete_before(account, NOW))


def test_a_tenant_with_a_delete_still_running_is_known_by_its_account() -> None:
    """The store's /delete/active_tasks: one task at a time per store tenant."""
    tasks = [
        {
            "task_id": "1",
            "tenant_ids": [{"account_id": 12, "project_id": 0}],
            "filter": "_time:<2026-11-29T03:00:00Z",
            "start_time": "2026-11-30T03:00:00Z",
        },
        {"task_id": "2", "tenant_ids": [{"account_id": "x"}, {"project_id": 0}]},
        "garbage",
    ]
    assert deleting_accounts(tasks) == {12}
    assert deleting_accounts(None) == set()
    assert deleting_accounts({"tenant_ids": []}) == set()
