"""Login, API tokens, users and platform role bindings over REST; the caller dependency."""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from wharf.core.errors import ForbiddenError, UnauthenticatedError
from wharf.identity import service
from wharf.identity.model import ROLES, Principal
from wharf.identity.throttle import LoginThrottle
from wharf.store import Database

LOGIN_TTL = dt.timedelta(hours=12)
SESSION_COOKIE = "wharf_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def throttle(request: Request) -> LoginThrottle:
    """The login throttle: every check of a password counts against it."""
    found: LoginThrottle = request.app.state.login_throttle
    return found


def authenticate_request(request: Request, csrf: str | None = None) -> Principal:
    """The authenticated caller; 401 without a valid bearer token or console session.

    A change made with the console's session cookie also needs its CSRF token (the form field
    `csrf` or the header X-CSRF-Token), so a page elsewhere cannot make one in the user's name
    even where SameSite is not honoured."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not header and cookie:
        scheme, token = "bearer", cookie
        if request.method not in SAFE_METHODS:
            sent = csrf or request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent, service.csrf_token(cookie)):
                raise ForbiddenError(
                    f"a change made with the console's session needs its CSRF token "
                    f"(form field csrf or header {CSRF_HEADER}); reload the page"
                )
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("send Authorization: Bearer <token> (see `wharf login`)")
    source = request.client.host if request.client else ""
    with database(request).reader() as session:
        return service.authenticate(session, token.strip(), source)


# Declared so that the OpenAPI document says which routes need a token; the header itself is
# read by authenticate_request, which also takes the console's session cookie.
bearer = HTTPBearer(auto_error=False, description="`wharf login` or `wharf token create`")


def current_principal(
    request: Request, _token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    return authenticate_request(request)


Caller = Annotated[Principal, Depends(current_principal)]
router = APIRouter(prefix="/api/v1", tags=["identity"])


class Login(BaseModel):
    username: str
    password: str


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    expiresIn: int = Field(
        default=30 * 86400,
        description="seconds",
        ge=1,
        le=int(service.MAX_TOKEN_TTL.total_seconds()),  # beyond it a timedelta overflows (500)
    )
    tenant: str = ""
    project: str = ""
    readOnly: bool = False
    password: str | None = Field(
        default=None,
        description="The caller's password: needed for a token that outlives the one in use",
    )


class NewUser(BaseModel):
    name: str
    password: str | None = None


class NewPassword(BaseModel):
    password: str
    currentPassword: str | None = Field(
        default=None, description="Needed when users change their own password"
    )


class Binding(BaseModel):
    user: str
    role: str


# -- answers ---------------------------------------------------------------------------------
class IssuedToken(BaseModel):
    """A new token: its secret (`token`) is shown here once and kept nowhere."""

    id: str = Field(description="Names the token to revoke it")
    name: str
    token: str = Field(description="Send as Authorization: Bearer <token>")
    expiresAt: str = Field(description="RFC 3339")


class Grant(BaseModel):
    role: str
    tenant: str = Field(description="'' at platform scope")
    project: str = Field(description="'' unless project-scoped")


class Scope(BaseModel):
    tenant: str = Field(default="", description="The token reaches only this tenant ('' any)")
    project: str = Field(default="", description="… and only this project ('' any)")
    readOnly: bool = Field(default=False, description="The token may only read")


class Whoami(BaseModel):
    user: str
    grants: list[Grant]
    tokenScope: Scope


class TokenInfo(BaseModel):
    id: str
    name: str
    scope: Scope
    createdAt: str
    expiresAt: str
    expired: bool


class TokenList(BaseModel):
    items: list[TokenInfo]


class Revoked(BaseModel):
    deleted: str = Field(description="The revoked token's id")


class User(BaseModel):
    name: str
    disabled: bool = Field(default=False, description="A disabled user's tokens do not work")


class RevokedTokens(BaseModel):
    revoked: int = Field(description="How many tokens were revoked")


class Unbound(BaseModel):
    user: str
    unbound: str = Field(description="The platform role taken away")


class UserList(BaseModel):
    items: list[User]


@router.post("/login", summary="Exchange a username and password for a 12-hour token")
def login(body: Login, request: Request) -> IssuedToken:
    source = request.client.host if request.client else ""
    token = service.log_in(
        database(request),
        body.username,
        body.password,
        source,
        "login",
        LOGIN_TTL,
        throttle(request),
    )
    if token is None:
        raise UnauthenticatedError("wrong username or password")
    return IssuedToken(**token)


@router.get("/whoami", summary="The caller, its grants and its token's scope")
def whoami(p: Caller) -> Whoami:
    return Whoami(
        user=p.user,
        grants=sorted(
            (Grant(role=g.role, tenant=g.tenant, project=g.project) for g in p.grants),
            key=lambda g: (g.tenant, g.project, g.role),
        ),
        tokenScope=Scope(
            tenant=p.token_scope.tenant,
            project=p.token_scope.project,
            readOnly=p.token_scope.read_only,
        ),
    )


@router.get("/tokens", summary="The caller's API tokens (never their secrets)")
def list_tokens(p: Caller, request: Request) -> TokenList:
    with database(request).reader() as session:
        return TokenList.model_validate({"items": service.list_tokens(session, p.user)})


@router.post("/tokens", status_code=201, summary="A new API token, shown once")
def create_token(body: NewToken, p: Caller, request: Request) -> IssuedToken:
    with database(request).session() as session:
        token = service.create_token(
            session,
            p,
            body.name,
            dt.timedelta(seconds=body.expiresIn),
            body.tenant,
            body.project,
            body.readOnly,
            body.password,
            throttle=throttle(request),
        )
    return IssuedToken(**token)


@router.delete("/tokens/{token_id}", summary="Revoke one of the caller's tokens")
def delete_token(token_id: str, p: Caller, request: Request) -> Revoked:
    with database(request).session() as session:
        service.delete_token(session, p, token_id)
    return Revoked(deleted=token_id)


@router.get("/users", summary="Local users (platform admins and viewers)")
def list_users(p: Caller, request: Request) -> UserList:
    if not p.can("read"):
        raise ForbiddenError("only platform admins and viewers list users")
    with database(request).reader() as session:
        return UserList(items=[User(**row) for row in service.user_rows(session)])


@router.post("/users", status_code=201, summary="Create a local user")
def create_user(body: NewUser, p: Caller, request: Request) -> User:
    service.require_platform_admin(database(request), p, "create", body.name)
    with database(request).session() as session:
        service.add_user(session, p, body.name, body.password)
    return User(name=body.name)


@router.post(
    "/platform/rolebindings",
    status_code=201,
    summary=f"Bind a platform-scope role ({', '.join(ROLES)})",
)
def bind(body: Binding, p: Caller, request: Request) -> Binding:
    service.require_platform_admin(database(request), p, "bind", body.user)
    with database(request).session() as session:
        service.bind_platform_role(session, p, body.user, body.role)
    return Binding(user=body.user, role=body.role)


def _set_disabled(name: str, disabled: bool, p: Principal, request: Request) -> User:
    action = "disable" if disabled else "enable"
    service.require_platform_admin(database(request), p, action, name)
    with database(request).session() as session:
        service.set_disabled(session, p, name, disabled)
    # The clusters hear of it now, not at the next resync: a disabled user's kubeconfigs end.
    for listener in getattr(request.app.state, "user_listeners", []):
        listener(name)
    return User(name=name, disabled=disabled)


@router.post("/users/{name}/disable", summary="Disable a user: its tokens stop at once")
def disable_user(name: str, p: Caller, request: Request) -> User:
    return _set_disabled(name, True, p, request)


@router.post("/users/{name}/enable", summary="Enable a disabled user again")
def enable_user(name: str, p: Caller, request: Request) -> User:
    return _set_disabled(name, False, p, request)


@router.delete("/users/{name}", summary="Delete a user, its tokens and its platform roles")
def delete_user(name: str, p: Caller, request: Request) -> Revoked:
    service.require_platform_admin(database(request), p, "delete", name)
    with database(request).session() as session:
        service.delete_user(session, p, name)
    return Revoked(deleted=name)


@router.put(
    "/users/{name}/password",
    summary="Change a password (your own, with the current one; anyone's as platform admin)",
)
def change_password(name: str, body: NewPassword, p: Caller, request: Request) -> User:
    with database(request).session() as session:
        service.change_password(
            session, p, name, body.password, body.currentPassword, throttle=throttle(request)
        )
    return User(name=name)


@router.get("/users/{name}/tokens", summary="A user's tokens (platform admins)")
def user_tokens(name: str, p: Caller, request: Request) -> TokenList:
    service.require_platform_admin(database(request), p, "list-tokens", name)
    with database(request).reader() as session:
        return TokenList(items=[TokenInfo(**t) for t in service.list_tokens(session, name)])


@router.delete("/users/{name}/tokens", summary="Revoke all of a user's tokens (platform admins)")
def revoke_user_tokens(name: str, p: Caller, request: Request) -> RevokedTokens:
    service.require_platform_admin(database(request), p, "revoke-tokens", name)
    with database(request).session() as session:
        return RevokedTokens(revoked=service.revoke_tokens_of(session, p, name))


@router.delete(
    "/users/{name}/tokens/{token_id}", summary="Revoke one of a user's tokens (platform admins)"
)
def revoke_user_token(name: str, token_id: str, p: Caller, request: Request) -> RevokedTokens:
    service.require_platform_admin(database(request), p, "revoke-tokens", name)
    with database(request).session() as session:
        return RevokedTokens(revoked=service.revoke_tokens_of(session, p, name, token_id))


@router.delete(
    "/platform/rolebindings/{user}/{role}", summary="Unbind a platform-scope role from a user"
)
def unbind(user: str, role: str, p: Caller, request: Request) -> Unbound:
    service.require_platform_admin(database(request), p, "unbind", user)
    with database(request).session() as session:
        service.unbind_platform_role(session, p, user, role)
    return Unbound(user=user, unbound=role)
