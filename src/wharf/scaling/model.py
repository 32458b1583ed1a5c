"""Which scheduled window is open at a moment, and when the next one opens or closes.

A window is open when its start cron fired more recently than its end cron, both read in the
window's time zone (so business hours follow daylight saving). Pure: the moment is given.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from wharf.apps.model import ReplicaBounds, ScalingWindow

# A cron fires on the minute: a fire at exactly `now` counts as already fired.
_INCLUSIVE = dt.timedelta(seconds=1)


def _last(expression: str, local: dt.datetime) -> dt.datetime:
    fired: dt.datetime = croniter(expression, local + _INCLUSIVE).get_prev(dt.datetime)
    return fired


def _next(expression: str, local: dt.datetime) -> dt.datetime:
    fires: dt.datetime = croniter(expression, local).get_next(dt.datetime)
    return fires


def is_open(window: ScalingWindow, now: dt.datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timeZone))
    return _last(window.start, local) > _last(window.end, local)


def open_window(windows: list[ScalingWindow], now: dt.datetime) -> ScalingWindow | None:
    """The first window open at `now`, in the order the application lists them."""
    return next((w for w in windows if is_open(w, now)), None)


def next_change(windows: list[ScalingWindow], now: dt.datetime) -> dt.datetime | None:
    """The next moment any window opens or closes (UTC)."""
    moments = [
        _next(expression, now.astimezone(ZoneInfo(w.timeZone))).astimezone(dt.UTC)
        for w in windows
        for expression in (w.start, w.end)
    ]
    return min(moments, default=None)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def schedule_status(windows: list[ScalingWindow], now: dt.datetime) -> dict[str, Any]:
    """What the application's status says of its windows at `now` (without `since`)."""
    window = open_window(windows, now)
    upcoming = next_change(windows, now)
    status: dict[str, Any] = {
        "window": window.name if window else None,
        "nextChange": _iso(upcoming) if upcoming else None,
    }
    if window is not None:
        status["minReplicas"] = window.minReplicas
        status["maxReplicas"] = window.maxReplicas
    return status


def applied_window(status: dict[str, Any]) -> ReplicaBounds | None:
    """The bounds of the window the controller applied, from the application's status."""
    schedule = status.get("schedule") or {}
    if not schedule.get("window"):
        return None
    return ReplicaBounds(
        minReplicas=schedule.get("minReplicas"), maxReplicas=schedule.get("maxReplicas")
    )


def stamped(
    wanted: dict[str, Any], before: dict[str, Any] | None, now: dt.datetime
) -> dict[str, Any]:
    """The status to store: `since` moves only when the window itself changes."""
    same_window = before is not None and before.get("window") == wanted["window"]
    since = before.get("since") if same_window and before else _iso(now)
    return {**wanted, "since": since}
