"""Error logs on a terminal: a plain traceback, never the frames' local values."""

from __future__ import annotations

import logging

import pytest

from wharf.core.logging import configure_logging, get_logger


def test_a_logged_exception_shows_its_traceback_but_not_the_locals_of_its_frames(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("console", "info")
    try:
        password = "hunter2-" + "x" * 10  # a local a rich traceback would print
        raise RuntimeError(f"failed after {len(password)} characters")
    except RuntimeError:
        get_logger("test").exception("request failed")
    err = capsys.readouterr().err
    logging.getLogger().handlers.clear()
    assert "Traceback" in err
    assert "RuntimeError: failed after 18 characters" in err
    assert "hunter2" not in err
