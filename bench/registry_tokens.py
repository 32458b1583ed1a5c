"""Registry token requests per second and their p50/p99 at a steady rate, next to the
registry's own `/v2/` endpoint (with a token) measured in the same run.

Starts a real `wharf server` (SQLite by default; WHARF_DATABASE_URL for PostgreSQL) and a real
registry (Debian's docker-registry) that trusts it, a tenant with a project and a developer,
then asks for push tokens on a fixed schedule (open loop) with an API token (what CI sends)
and with the password (argon2 by design), and calls the registry's `/v2/`. Prints figures;
asserts nothing about time.

    uv run python bench/registry_tokens.py [--rate 50] [--seconds 10] [--password-rate 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from benchkit import PASSWORD, free_port, pct, start_server

USER_PASSWORD = "developer-password-1"


def start_registry(workdir: Path, wharf: httpx.Client, name: str) -> subprocess.Popen[bytes]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = {"kind": "Registry", "metadata": {"name": name}, "spec": {"url": url, "service": name}}
    wharf.put(f"/api/v1/registries/{name}", json=body).raise_for_status()
    config = wharf.get(f"/api/v1/registries/{name}/config").json()
    bundle = workdir / "bundle.pem"
    bundle.write_text(wharf.get("/api/v1/registry/certificate").json()["certificates"])
    config["auth"]["token"]["rootcertbundle"] = str(bundle)
    settings = {
        "version": 0.1,
        "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "bench"},
        "auth": config["auth"],
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(settings))
    proc = subprocess.Popen(
        ["/usr/bin/docker-registry", "serve", str(workdir / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 401:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the registry did not start")


def seed(wharf: httpx.Client) -> str:
    """A tenant, a project with a developer; the developer's API token."""
    wharf.post("/api/v1/users", json={"name": "dev", "password": USER_PASSWORD}).raise_for_status()
    tenant = {"kind": "Tenant", "metadata": {"name": "bench"}, "spec": {"quota": {}}}
    wharf.put("/api/v1/tenants/bench", json=tenant).raise_for_status()
    project = {
        "kind": "Project",
        "metadata": {"name": "web"},
        "spec": {"members": [{"user": "dev", "role": "developer"}]},
    }
    wharf.put("/api/v1/tenants/bench/projects/web", json=project).raise_for_status()
    login = httpx.post(
        f"{wharf.base_url}/api/v1/login", json={"username": "dev", "password": USER_PASSWORD}
    ).json()["token"]
    token = httpx.post(
        f"{wharf.base_url}/api/v1/tokens",
        headers={"Authorization": f"Bearer {login}"},
        json={"name": "ci", "expiresIn": 3600},
    ).json()["token"]
    return str(token)


async def measure(client: httpx.AsyncClient, request: dict, rate: float, seconds: float) -> list:
    """Send `request` at `rate` per second for `seconds` (open loop); each latency in ms."""
    latencies: list[float] = []
    start = time.perf_counter()

    async def one() -> None:
        sent = time.perf_counter()
        answer = await client.request(**request)
        latencies.append((time.perf_counter() - sent) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{request['url']}: {answer.status_code} {answer.text}")

    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    achieved = len(latencies) / (time.perf_counter() - start)
    latencies.append(achieved)  # the last value is the rate achieved
    return latencies


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def run(
    wharf: str, registry: str, api_token: str, rate: float, seconds: float, password_rate: float
) -> None:
    params = {"service": "bench-registry", "scope": "repository:bench/web/app:pull,push"}
    token_url = f"{wharf}/api/v1/registry/token"
    cases = {
        "token, API token (CI)": {
            "method": "GET",
            "url": token_url,
            "params": params,
            "headers": {"Authorization": _basic("dev", api_token)},
        },
        "token, password (argon2)": {
            "method": "GET",
            "url": token_url,
            "params": params,
            "headers": {"Authorization": _basic("dev", USER_PASSWORD)},
        },
    }
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.request(**cases["token, API token (CI)"])
        bearer = answer.json()["token"]
        cases["registry GET /v2/ (baseline)"] = {
            "method": "GET",
            "url": f"{registry}/v2/",
            "headers": {"Authorization": f"Bearer {bearer}"},
        }
        print(f"{'endpoint':<34}{'req/s':>8}{'p50 ms':>10}{'p99 ms':>10}")
        for name, request in cases.items():
            # argon2 is slow by design: its case runs at its own (lower) rate.
            at = min(rate, password_rate) if "argon2" in name else rate
            values = await measure(client, request, at, seconds)
            achieved, values = values[-1], values[:-1]
            print(f"{name:<34}{achieved:>8.1f}{pct(values, 50):>10.2f}{pct(values, 99):>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument(
        "--password-rate", type=float, default=2.0, help="requests per second with a password"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = os.environ.get("WHARF_DATABASE_URL") or f"sqlite:///{Path(tmp) / 'bench.db'}"
        log = Path(tmp) / "server.log"
        server = start_server(port, {"WHARF_DATABASE_URL": db}, log=log, timeout=60)
        registry = None
        try:
            base = f"http://127.0.0.1:{port}"
            admin = httpx.post(
                f"{base}/api/v1/login", json={"username": "admin", "password": PASSWORD}
            ).json()["token"]
            wharf = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"})
            api_token = seed(wharf)
            registry = start_registry(Path(tmp), wharf, "bench-registry")
            url = wharf.get("/api/v1/registries/bench-registry").json()["spec"]["url"]
            database = wharf.get("/api/v1/version").json()["database"]
            print(f"{database}; {args.rate:.0f} req/s for {args.seconds:.0f}s per endpoint")
            asyncio.run(run(base, url, api_token, args.rate, args.seconds, args.password_rate))
        except SystemExit:
            print(log.read_text()[-3000:])
            raise
        finally:
            if registry is not None:
                registry.terminate()
                registry.wait(timeout=30)
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
