"""`wharf images`, `wharf registry config|certificate` and `wharf robot secret`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
import yaml

from wharf.core.apiclient import ApiClient, ApiError, fail
from wharf.resources.cli import aligned

registry_cli = typer.Typer(help="Registries that trust Wharf as their token server.")
robot_cli = typer.Typer(help="Robot accounts of projects.")
Tenant = Annotated[str, typer.Option("--tenant", "-t")]


def _get(path: str) -> Any:
    try:
        return ApiClient().json("GET", path)
    except ApiError as exc:
        raise fail(exc) from None


def image_rows(listing: dict[str, Any]) -> list[str]:
    """One line per tag: where it is, what it is, and who pushed it."""
    rows = [["REGISTRY", "IMAGE", "TAG", "DIGEST", "SIZE", "PUSHED BY", "PUSHED AT"]]
    for image in listing["items"]:
        for tag in image["tags"]:
            rows.append(
                [
                    image["registry"],
                    image["image"],
                    tag["tag"],
                    tag["digest"][:19],
                    str(tag["size"]),
                    tag.get("pushedBy") or "-",
                    tag.get("pushedAt") or "-",
                ]
            )
    lines = aligned(rows)
    lines += [f"{u['registry']}: not listed: {u['message']}" for u in listing["unreachable"]]
    return lines


def register(app: typer.Typer) -> None:
    app.add_typer(registry_cli, name="registry")
    app.add_typer(robot_cli, name="robot")

    @app.command()
    def images(project: Annotated[str, typer.Option("--project", "-p")], tenant: Tenant) -> None:
        """A project's images in every registry: tags, digests, sizes, who pushed them."""
        listing = _get(f"/api/v1/tenants/{tenant}/projects/{project}/images")
        for line in image_rows(listing):
            typer.echo(line)


@registry_cli.command("config")
def config(name: str) -> None:
    """The `auth` and `notifications` sections of the registry's config.yml."""
    typer.echo(yaml.safe_dump(_get(f"/api/v1/registries/{name}/config"), sort_keys=False))


@registry_cli.command("certificate")
def certificate() -> None:
    """The certificates the registry trusts for Wharf's tokens (auth.token.rootcertbundle)."""
    typer.echo(_get("/api/v1/registry/certificate")["certificates"].rstrip())


@robot_cli.command("secret")
def secret(name: str, tenant: Tenant) -> None:
    """A robot's registry login (project admins): `docker login -u <username> -p <secret>`."""
    login = _get(f"/api/v1/tenants/{tenant}/robots/{name}/secret")
    typer.echo(f"username: {login['username']}\nsecret: {login['secret']}")
