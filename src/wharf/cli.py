"""The `wharf` command: server, lab, and (as capabilities land) kubectl-like resource verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import wharf
from wharf.alerts import cli as alerts_cli
from wharf.apps import cli as apps_cli
from wharf.audit import cli as audit_cli
from wharf.clusters import cli as clusters_cli
from wharf.identity import cli as identity_cli
from wharf.lab.cli import app as lab_app
from wharf.logs import cli as logs_cli
from wharf.monitoring import cli as monitoring_cli
from wharf.network import cli as network_cli
from wharf.registry import cli as registry_cli
from wharf.releases import cli as releases_cli
from wharf.resources import cli as resources_cli
from wharf.scaling import cli as scaling_cli
from wharf.tenancy import cli as tenancy_cli

app = typer.Typer(
    name="wharf",
    help="Wharf: an enterprise container-cloud PaaS on Kubernetes.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")
resources_cli.register(app)
identity_cli.register(app)
audit_cli.register(app)
clusters_cli.register(app)
tenancy_cli.register(app)
apps_cli.register(app)
registry_cli.register(app)
releases_cli.register(app)
network_cli.register(app)
scaling_cli.register(app)
alerts_cli.register(app)
monitoring_cli.register(app)
logs_cli.register(app)


@app.command()
def version() -> None:
    """Print Wharf's version."""
    typer.echo(wharf.__version__)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Listen address [default: $WHARF_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [default: $WHARF_PORT]")] = None,
) -> None:
    """Run the Wharf server: migrations, REST API, health and metrics."""
    import uvicorn

    from wharf.core.config import get_settings
    from wharf.core.logging import configure_logging
    from wharf.server import create_app

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        # Open console streams (live status) never finish on their own: give in-flight requests
        # this long, then stop; browsers reconnect to the next server.
        timeout_graceful_shutdown=10,
    )


secrets_app = typer.Typer(help="The key that seals credentials at rest, and its rotation.")
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("new-key")
def secrets_new_key(path: Path) -> None:
    """Make a new key file of 32 random bytes, readable only by its owner."""
    from wharf.core.crypto import SealingKey

    try:
        SealingKey.create_file(path)
    except FileExistsError:
        raise typer.BadParameter(f"{path} exists; a key file is never overwritten") from None
    typer.echo(f"new key in {path} (id {SealingKey.from_file(path).id})")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-seal every credential under the current key (WHARF_SECRET_KEY_FILE or
    WHARF_SECRET_KEY), reading old values with WHARF_PREVIOUS_SECRET_KEYS; safe to run while
    servers run (each object is locked while it is re-sealed) and to run again."""
    from wharf.core.config import get_settings
    from wharf.server.platform import Platform
    from wharf.store import Database, migrate

    settings = get_settings()
    db = Database(settings.database_url)
    try:
        migrate(db)
        counts = Platform(settings, db).rotate_secrets()
    finally:
        db.dispose()
    for kind, count in counts.items():
        typer.echo(f"{kind}: {count} re-sealed")
    typer.echo("done: the previous keys can be removed from WHARF_PREVIOUS_SECRET_KEYS")


@app.command()
def openapi() -> None:
    """Print the REST API's OpenAPI document (docs/openapi.json is this output)."""
    from wharf.server.document import openapi_document

    typer.echo(openapi_document())


def main() -> None:
    app()
