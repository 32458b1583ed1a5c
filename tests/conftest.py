"""Fixtures shared by every test: the lab (real clusters) and the databases.

The lab is brought up once per test run in a temporary directory and torn down at the end.
PostgreSQL comes from WHARF_TEST_POSTGRES_URL (`.ci/run` starts Debian's server); when
WHARF_REQUIRE_POSTGRES=1 a missing server fails the run instead of skipping its tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from wharf.lab import Lab, LabCluster, build, find_binaries
from wharf.lab.build import BuildError

LAB_CLUSTERS = int(os.environ.get("WHARF_TEST_CLUSTERS", "2"))
LAB_NODES = int(os.environ.get("WHARF_TEST_NODES", "3"))


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running lab of 2 clusters with 3 simulated nodes each."""
    binaries = find_binaries()
    if binaries is None:
        # A fresh clone on a machine whose cache predates a binary the lab now runs (say,
        # metrics-server): build what is missing; what is there is skipped.
        try:
            binaries = build(progress=lambda line: print(line, file=sys.stderr)).binaries
        except BuildError as exc:
            pytest.fail(f"the lab binaries could not be built (`wharf lab build`): {exc}")
    lab = Lab(tmp_path_factory.mktemp("lab"), binaries)
    lab.up(clusters=LAB_CLUSTERS, nodes=LAB_NODES, progress=lambda _: None)
    yield lab
    lab.down(progress=lambda _: None)


@pytest.fixture(scope="session")
def lab_clusters(lab: Lab) -> list[LabCluster]:
    return lab.clusters()


@pytest.fixture
def kubectl(lab: Lab):
    """Run the lab's own kubectl against one cluster; returns CompletedProcess."""
    binary = str(lab.binaries.path("kubectl"))

    def run(
        cluster: LabCluster,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [binary, f"--kubeconfig={kubeconfig or cluster.kubeconfig}", *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr}")
        return result

    return run


def _postgres_url() -> str | None:
    url = os.environ.get("WHARF_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("WHARF_REQUIRE_POSTGRES") == "1":
            pytest.fail("WHARF_REQUIRE_POSTGRES=1 but WHARF_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set WHARF_TEST_POSTGRES_URL (./dev test does)")
    return url


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    base = _postgres_url()
    assert base is not None
    name = f"wharf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        # An autovacuum worker may be in the database (FORCE may not end it: it belongs to
        # no role): it finishes in a moment, so try again briefly.
        deadline = time.monotonic() + 20
        while True:
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                break
            except ProgrammingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, for what concerns PostgreSQL alone."""
    with fresh_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind: a SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wharf.db'}"
        return
    with fresh_postgres() as url:
        yield url
