"""`wharf login`, `whoami`, `token create|list|revoke`, `user create|disable|enable|delete|
passwd|revoke-tokens`, `grant`, `unbind`."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from wharf.core.apiclient import ApiClient, ApiError, fail, load_config, save_config

token_app = typer.Typer(help="API tokens: random, shown once, stored hashed, scoped, expiring.")
user_app = typer.Typer(help="Local users.")

_DURATION = re.compile(r"^(\d+)([smhd])$")


def seconds(text: str) -> int:
    match = _DURATION.fullmatch(text)
    if not match:
        raise typer.BadParameter("use a number and a unit: 90m, 12h, 30d")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.add_typer(user_app, name="user")

    @app.command()
    def login(
        server: Annotated[str, typer.Option(help="Wharf server URL")] = "http://127.0.0.1:8700",
        username: Annotated[str, typer.Option("--username", "-u", prompt=True)] = "admin",
        password: Annotated[
            str, typer.Option("--password", "-p", prompt=True, hide_input=True)
        ] = "",
    ) -> None:
        """Log in and keep a 12-hour token in ~/.config/wharf/config.yaml."""
        try:
            answer = ApiClient(server=server, token="").json(
                "POST", "/api/v1/login", json={"username": username, "password": password}
            )
        except ApiError as exc:
            raise fail(exc) from None
        config = load_config()
        config.update(server=server, token=answer["token"], user=username)
        path = save_config(config)
        typer.echo(f"logged in to {server} as {username} (token kept in {path})")

    @app.command()
    def whoami() -> None:
        """Show the current user, its roles and its token's scope."""
        try:
            typer.echo(json.dumps(ApiClient().json("GET", "/api/v1/whoami"), indent=2))
        except ApiError as exc:
            raise fail(exc) from None

    @app.command()
    def grant(
        user: str,
        role: Annotated[str, typer.Option(help="platform-admin or viewer (platform scope)")],
    ) -> None:
        """Bind a platform-scope role to a user (tenant and project roles live in their specs)."""
        try:
            ApiClient().json(
                "POST", "/api/v1/platform/rolebindings", json={"user": user, "role": role}
            )
        except ApiError as exc:
            raise fail(exc) from None
        typer.echo(f"{user} is now {role} of the platform")

    @app.command()
    def unbind(
        user: str,
        role: Annotated[str, typer.Option(help="platform-admin or viewer (platform scope)")],
    ) -> None:
        """Unbind a platform-scope role from a user (the last platform admin stays)."""
        _call("DELETE", f"/api/v1/platform/rolebindings/{user}/{role}")
        typer.echo(f"{user} is no longer {role} of the platform")


@token_app.command("create")
def token_create(
    name: str,
    expires: Annotated[str, typer.Option(help="lifetime: 90m, 12h, 30d")] = "30d",
    tenant: Annotated[str, typer.Option(help="limit the token to one tenant")] = "",
    project: Annotated[str, typer.Option(help="limit the token to one project")] = "",
    read_only: Annotated[bool, typer.Option("--read-only")] = False,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            "-p",
            envvar="WHARF_PASSWORD",
            help="your password: needed for a token that outlives your login (12 h)",
        ),
    ] = None,
) -> None:
    """Create a token; its secret is printed once and never again."""
    body = {
        "name": name,
        "expiresIn": seconds(expires),
        "tenant": tenant,
        "project": project,
        "readOnly": read_only,
        "password": password,
    }
    try:
        answer = ApiClient().json("POST", "/api/v1/tokens", json=body)
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(answer["token"])
    typer.echo(
        f"token {answer['id']} expires {answer['expiresAt']}; it is not shown again", err=True
    )


@token_app.command("list")
def token_list() -> None:
    """List your tokens (never their secrets)."""
    try:
        items = ApiClient().json("GET", "/api/v1/tokens")["items"]
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(f"{'ID':<18}{'NAME':<20}{'EXPIRES':<28}SCOPE")
    for t in items:
        scope = ",".join(f"{k}={v}" for k, v in t["scope"].items() if v) or "-"
        state = " (expired)" if t["expired"] else ""
        typer.echo(f"{t['id']:<18}{t['name']:<20}{t['expiresAt'] + state:<28}{scope}")


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke one of your tokens."""
    try:
        ApiClient().json("DELETE", f"/api/v1/tokens/{token_id}")
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(f"token {token_id} revoked")


@user_app.command("create")
def user_create(
    name: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a local user (platform admins only)."""
    try:
        ApiClient().json("POST", "/api/v1/users", json={"name": name, "password": password})
    except ApiError as exc:
        raise fail(exc) from None
    typer.echo(f"user/{name} created")


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        return ApiClient().json(method, path, **kwargs)
    except ApiError as exc:
        raise fail(exc) from None


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user: its tokens and console sessions stop at once (platform admins only)."""
    _call("POST", f"/api/v1/users/{name}/disable")
    typer.echo(f"user/{name} disabled")


@user_app.command("enable")
def user_enable(name: str) -> None:
    """Enable a disabled user again (it logs in anew: its old tokens are gone)."""
    _call("POST", f"/api/v1/users/{name}/enable")
    typer.echo(f"user/{name} enabled")


@user_app.command("delete")
def user_delete(name: str) -> None:
    """Delete a user, its tokens and platform roles (platform admins only)."""
    _call("DELETE", f"/api/v1/users/{name}")
    typer.echo(f"user/{name} deleted")


@user_app.command("passwd")
def user_passwd(
    name: str,
    password: Annotated[
        str, typer.Option(prompt="New password", hide_input=True, confirmation_prompt=True)
    ],
    current: Annotated[
        str | None, typer.Option(help="your current password (for your own)", hide_input=True)
    ] = None,
) -> None:
    """Change a password: your own (with --current), or anyone's as a platform admin. The
    user's other tokens are revoked."""
    body = {"password": password, "currentPassword": current}
    _call("PUT", f"/api/v1/users/{name}/password", json=body)
    typer.echo(f"user/{name}: password changed")


@user_app.command("revoke-tokens")
def user_revoke_tokens(
    name: str, token_id: Annotated[str, typer.Option("--id", help="only this token")] = ""
) -> None:
    """Revoke another user's tokens, all or one (platform admins only)."""
    path = f"/api/v1/users/{name}/tokens" + (f"/{token_id}" if token_id else "")
    answer = _call("DELETE", path)
    typer.echo(f"user/{name}: {answer['revoked']} token(s) revoked")
