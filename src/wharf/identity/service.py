"""Users, passwords (argon2), API tokens (random, shown once, stored hashed) and memberships."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from wharf.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    ThrottledError,
    UnauthenticatedError,
)
from wharf.core.resources import check_name
from wharf.identity.model import ROLES, Grant, Principal, TokenScope
from wharf.identity.throttle import LoginThrottle
from wharf.store import Database
from wharf.store.audit import AuditEvent, record
from wharf.store.tables import api_tokens, memberships, users

_hasher = PasswordHasher()
TOKEN_PREFIX = "wharf"
MAX_TOKEN_TTL = dt.timedelta(days=365)
SESSION_TOKENS = ("login", "console")  # the names of the tokens logins make


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def create_user(session: Session, name: str, password: str | None) -> None:
    check_name(name, "name", max_length=64)
    if password is not None and len(password) < 8:
        raise InvalidError("password: use at least 8 characters", field="password")
    if session.execute(select(users.c.name).where(users.c.name == name)).first():
        raise ConflictError(f"user {name!r} already exists", field="name")
    session.execute(
        insert(users).values(
            name=name,
            password_hash=_hasher.hash(password) if password else None,
            created_at=_now(),
            disabled=False,
        )
    )


def user_exists(session: Session, name: str) -> bool:
    return session.execute(select(users.c.name).where(users.c.name == name)).first() is not None


def disabled_users(session: Session) -> frozenset[str]:
    """Users who may not act: nothing Wharf issues in the clusters stays theirs."""
    rows = session.execute(select(users.c.name).where(users.c.disabled.is_(True))).scalars()
    return frozenset(rows)


def generations(session: Session) -> dict[str, int]:
    """Users disabled at some time, with how often: their identities in the clusters carry
    it, so those of before a disable are never theirs again (even if no cluster heard of it)."""
    rows = session.execute(select(users.c.name, users.c.generation).where(users.c.generation > 0))
    return {r.name: int(r.generation) for r in rows}


def users_marker(session: Session) -> tuple[int, int, int]:
    """A figure that moves whenever a user is added, removed, disabled or enabled."""
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(users.c.generation), 0),
            func.count().filter(users.c.disabled.is_(True)),
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def generation(session: Session, name: str) -> int:
    found = session.execute(select(users.c.generation).where(users.c.name == name)).scalar()
    return int(found or 0)


def list_users(session: Session) -> list[str]:
    return list(session.execute(select(users.c.name).order_by(users.c.name)).scalars())


def verify_password(session: Session, name: str, password: str) -> bool:
    row = session.execute(
        select(users.c.password_hash, users.c.disabled).where(users.c.name == name)
    ).first()
    if row is None or row.disabled or not row.password_hash:
        _hasher.hash(password)  # same cost either way: timing does not reveal who exists
        return False
    try:
        return _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def log_in(
    db: Database,
    user: str,
    password: str,
    source: str,
    token_name: str,
    ttl: dt.timedelta,
    throttle: LoginThrottle,
) -> dict[str, Any] | None:
    """A session token for the right password, None for a wrong one, ThrottledError while the
    username or address is locked after failures (see wharf.identity.throttle); all audited."""
    wait = throttle.admit(user, source)
    if wait:
        reason = f"throttled after failed logins; retry after {wait} s"
        with db.session() as session:
            record(session, AuditEvent(user, source, "login", "User", "", user, "denied", reason))
        raise ThrottledError(f"too many failed logins: try again in {wait} s", retry_after=wait)
    ok = False
    try:
        with db.session() as session:
            ok = verify_password(session, user, password)
            reason = "" if ok else "wrong username or password"
            outcome = "allowed" if ok else "denied"
            record(session, AuditEvent(user, source, "login", "User", "", user, outcome, reason))
            token = issue_token(session, user, token_name, ttl) if ok else None
    finally:
        # Every admitted attempt is answered, even one that failed on the way (its place would
        # otherwise stay taken); an attempt that did not finish counts as a failure.
        if ok:
            throttle.succeeded(user, source)
        else:
            throttle.failed(user, source)
    return token


def csrf_token(session_token: str) -> str:
    """The CSRF token of a console session: derived from the session's secret, which other
    sites can neither read (HttpOnly cookie) nor guess, so no server-side state is needed."""
    return hmac.new(session_token.encode(), b"wharf-console-csrf", hashlib.sha256).hexdigest()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(
    session: Session,
    user: str,
    name: str,
    ttl: dt.timedelta,
    scope: TokenScope | None = None,
) -> dict[str, Any]:
    """A new token; its secret is in the answer and nowhere else (only its hash is kept)."""
    if name in SESSION_TOKENS:
        # Every login makes one: drop the user's expired ones, or they pile up for ever.
        session.execute(
            delete(api_tokens).where(
                api_tokens.c.user == user,
                api_tokens.c.name.in_(SESSION_TOKENS),
                api_tokens.c.expires_at <= _now(),
            )
        )
    if ttl <= dt.timedelta(0) or ttl > MAX_TOKEN_TTL:
        raise InvalidError("expiresIn: must be between 1 second and 365 days", field="expiresIn")
    scope = scope or TokenScope()
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    expires = _now() + ttl
    session.execute(
        insert(api_tokens).values(
            id=token_id,
            user=user,
            name=name,
            secret_hash=_digest(secret),
            scope={"tenant": scope.tenant, "project": scope.project, "readOnly": scope.read_only},
            created_at=_now(),
            expires_at=expires,
        )
    )
    return {
        "id": token_id,
        "name": name,
        "token": f"{TOKEN_PREFIX}_{token_id}_{secret}",
        "expiresAt": expires.isoformat(timespec="seconds"),
    }


def scope_for(p: Principal, tenant: str, project: str, read_only: bool) -> TokenScope:
    """The scope of a token the caller asks for: never further than the caller's own token."""
    held = p.token_scope
    if held.read_only:
        raise ForbiddenError("a read-only token cannot make tokens")
    if held.tenant and tenant not in ("", held.tenant):
        raise ForbiddenError(f"this token is limited to tenant {held.tenant}")
    if held.project and project not in ("", held.project):
        raise ForbiddenError(f"this token is limited to project {held.project}")
    if project and not (tenant or held.tenant):
        raise InvalidError("tenant: a project-scoped token names its tenant too", field="tenant")
    scope = TokenScope(
        tenant=tenant or held.tenant,
        project=project or held.project,
        read_only=read_only or held.read_only,
    )
    # A scope the caller cannot reach would be a token for nothing, or (once granted) for more
    # than was meant; the answer is the same whether the tenant exists or not.
    reaches = (
        p.can("read", scope.tenant, scope.project) if scope.project else p.sees_tenant(scope.tenant)
    )
    if scope.tenant and not reaches:
        where = "project" if scope.project else "tenant"
        raise InvalidError(
            f"{where}: {p.user} has no role in {where} "
            f"{scope.project if scope.project else scope.tenant!r}",
            field=where,
        )
    return scope


def confirm_password(
    session: Session, p: Principal, password: str, throttle: LoginThrottle
) -> bool:
    """Whether this is the caller's password, checked as a login is (ThrottledError while the
    user or address is locked): a token in hand, even a read-only one, is no licence to
    guess its user's password faster than the login allows."""
    wait = throttle.admit(p.user, p.source)
    if wait:
        raise ThrottledError(
            f"too many failed password checks: try again in {wait} s", retry_after=wait
        )
    ok = False
    try:
        ok = verify_password(session, p.user, password)
    finally:
        if ok:
            throttle.succeeded(p.user, p.source)
        else:
            throttle.failed(p.user, p.source)
    return ok


def lifetime_within_caller(
    session: Session,
    p: Principal,
    ttl: dt.timedelta,
    password: str | None,
    field: str,
    throttle: LoginThrottle,
) -> None:
    """A credential made with a token may not outlive that token: the caller's password
    (checked here) is what vouches for a longer life."""
    if password is not None:
        if not confirm_password(session, p, password, throttle):
            raise ForbiddenError("password: not the caller's password")
        return
    if p.token_expires is None:
        return
    left = p.token_expires - _now()
    if ttl > left:
        raise InvalidError(
            f"{field}: the token in use expires at {p.token_expires.isoformat(timespec='seconds')}"
            f" (in {max(int(left.total_seconds()), 0)} s), and what it makes cannot outlive it; "
            "confirm your password to make a longer-lived token",
            field=field,
        )


def authorize_kubeconfig(p: Principal, tenant: str, project: str, ttl: int) -> None:
    """Whether the caller's token may obtain a project kubeconfig: it hands out the member's
    role in the cluster (edit, admin), so it needs a token with write scope over the project,
    and it may not outlive that token."""
    if not p.token_scope_allows_write(tenant, project):
        raise ForbiddenError(
            "a kubeconfig carries the member's rights in the cluster: it needs a token that may "
            f"change project {project} (this one is read-only or limited elsewhere)"
        )
    left = (p.token_expires - _now()).total_seconds() if p.token_expires is not None else None
    if left is not None and ttl > left:  # compared as numbers: any int, however wild
        raise InvalidError(
            "ttl: the token in use expires sooner; a kubeconfig cannot outlive it", field="ttl"
        )


def create_token(
    session: Session,
    p: Principal,
    name: str,
    ttl: dt.timedelta,
    tenant: str = "",
    project: str = "",
    read_only: bool = False,
    password: str | None = None,
    *,
    throttle: LoginThrottle,
) -> dict[str, Any]:
    """A token for the caller, audited; its secret is shown once, in the answer."""
    scope = scope_for(p, tenant, project, read_only)
    lifetime_within_caller(session, p, ttl, password, "expiresIn", throttle)
    token = issue_token(session, p.user, name, ttl, scope)
    record(session, AuditEvent(p.user, p.source, "create", "Token", scope.tenant, name, "allowed"))
    return token


def delete_token(session: Session, p: Principal, token_id: str) -> None:
    revoke_token(session, p.user, token_id)
    record(session, AuditEvent(p.user, p.source, "delete", "Token", "", token_id, "allowed"))


def list_tokens(session: Session, user: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(api_tokens).where(api_tokens.c.user == user).order_by(api_tokens.c.created_at)
    )
    return [
        {
            "id": r.id,
            "name": r.name,
            "scope": r.scope,
            "createdAt": _aware(r.created_at).isoformat(timespec="seconds"),
            "expiresAt": _aware(r.expires_at).isoformat(timespec="seconds"),
            "expired": _aware(r.expires_at) <= _now(),
        }
        for r in rows
    ]


def revoke_token(session: Session, user: str, token_id: str) -> None:
    result = session.execute(
        delete(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.user == user)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFoundError(f"token {token_id!r} not found")


def roles_by_user(session: Session) -> dict[str, list[str]]:
    """Every user with the roles of its grants (at any scope), in two queries."""
    roles: dict[str, list[str]] = {name: [] for name in list_users(session)}
    for row in session.execute(select(memberships.c.user, memberships.c.role)):
        roles.setdefault(row.user, []).append(row.role)
    return {name: sorted(found) for name, found in roles.items()}


def grants_of(session: Session, user: str) -> frozenset[Grant]:
    rows = session.execute(select(memberships).where(memberships.c.user == user))
    return frozenset(Grant(r.role, r.tenant, r.project) for r in rows)


def _split(bearer: str) -> tuple[str, str] | None:
    """A token's id and secret, from `wharf_<id>_<secret>`."""
    parts = bearer.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    return parts[1], parts[2]


def log_out(session: Session, user: str, bearer: str) -> None:
    """End a login session on the server: revoke its token (one already gone is fine)."""
    parts = _split(bearer)
    if parts is not None:
        session.execute(
            delete(api_tokens).where(api_tokens.c.id == parts[0], api_tokens.c.user == user)
        )


def authenticate(session: Session, bearer: str, source: str = "") -> Principal:
    """The caller behind a bearer token; UnauthenticatedError for anything not valid now."""
    parts = _split(bearer)
    if parts is None:
        raise UnauthenticatedError("the bearer token is malformed")
    token_id, secret = parts
    row = session.execute(
        select(api_tokens, users.c.disabled)
        .join(users, users.c.name == api_tokens.c.user)
        .where(api_tokens.c.id == token_id)
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
        raise UnauthenticatedError("the token is not valid")
    if _aware(row.expires_at) <= _now():
        raise UnauthenticatedError("the token has expired")
    if row.disabled:
        raise UnauthenticatedError("the user is disabled")
    scope = TokenScope(
        tenant=row.scope.get("tenant", ""),
        project=row.scope.get("project", ""),
        read_only=bool(row.scope.get("readOnly")),
    )
    return Principal(
        user=row.user,
        grants=grants_of(session, row.user),
        token_scope=scope,
        source=source,
        token_expires=_aware(row.expires_at),
        token_id=row.id,
    )


def grant(session: Session, user: str, role: str, tenant: str = "", project: str = "") -> None:
    if role not in ROLES:
        raise InvalidError(f"role: {role!r} is not one of {', '.join(ROLES)}", field="role")
    existing = session.execute(
        select(memberships).where(
            memberships.c.user == user,
            memberships.c.role == role,
            memberships.c.tenant == tenant,
            memberships.c.project == project,
        )
    ).first()
    if existing is None:
        session.execute(
            insert(memberships).values(user=user, role=role, tenant=tenant, project=project)
        )


def revoke(session: Session, user: str, role: str, tenant: str = "", project: str = "") -> None:
    session.execute(
        delete(memberships).where(
            memberships.c.user == user,
            memberships.c.role == role,
            memberships.c.tenant == tenant,
            memberships.c.project == project,
        )
    )


def replace_members(
    session: Session, tenant: str, project: str, members: Iterable[tuple[str, str]]
) -> None:
    """Set exactly these (user, role) pairs at a tenant or project scope; nothing else there."""
    wanted = set(members)
    rows = session.execute(
        select(memberships.c.user, memberships.c.role).where(
            memberships.c.tenant == tenant, memberships.c.project == project
        )
    )
    current = {(r.user, r.role) for r in rows}
    for user, role in current - wanted:
        revoke(session, user, role, tenant, project)
    for user, role in wanted - current:
        grant(session, user, role, tenant, project)


def remove_scope(session: Session, tenant: str, project: str = "") -> None:
    query = delete(memberships).where(memberships.c.tenant == tenant)
    if project:
        query = query.where(memberships.c.project == project)
    session.execute(query)


def disable_user(session: Session, name: str) -> None:
    session.execute(update(users).where(users.c.name == name).values(disabled=True))


# -- users' lifecycle (platform admins; a user may change its own password) --------------------


def _known_user(session: Session, name: str) -> None:
    if not user_exists(session, name):
        raise NotFoundError(f"user {name!r} not found")


def _platform_admins(session: Session) -> set[str]:
    rows = session.execute(
        select(memberships.c.user)
        .join(users, users.c.name == memberships.c.user)
        .where(
            memberships.c.role == "platform-admin",
            memberships.c.tenant == "",
            users.c.disabled.is_(False),
        )
    )
    return set(rows.scalars())


def _keep_an_admin(session: Session, losing: str) -> None:
    """Refuse what would leave the platform without an enabled platform admin."""
    if _platform_admins(session) == {losing}:
        raise ConflictError(f"{losing} is the last platform admin: make another one first")


def _end_sessions(session: Session, user: str, keep: str = "") -> int:
    """Revoke every token of a user (but `keep`): its sessions stop at the next request."""
    query = delete(api_tokens).where(api_tokens.c.user == user)
    if keep:
        query = query.where(api_tokens.c.id != keep)
    return int(session.execute(query).rowcount)  # type: ignore[attr-defined]


def _audit_user(session: Session, p: Principal, action: str, name: str, **extra: Any) -> None:
    record(session, AuditEvent(p.user, p.source, action, "User", "", name, "allowed", **extra))


def set_disabled(session: Session, p: Principal, name: str, disabled: bool) -> None:
    """Disable a user (its tokens are revoked and it cannot log in) or enable it again."""
    _known_user(session, name)
    if disabled:
        if name == p.user:
            raise ConflictError("you cannot disable yourself")
        _keep_an_admin(session, name)
        _end_sessions(session, name)
    values: dict[str, Any] = {"disabled": disabled}
    if disabled:
        values["generation"] = users.c.generation + 1  # its cluster identities are renamed
    session.execute(update(users).where(users.c.name == name).values(**values))
    _audit_user(session, p, "disable" if disabled else "enable", name)


def delete_user(session: Session, p: Principal, name: str) -> None:
    """Delete a user with its tokens and platform roles; one still named in a tenant's or
    project's spec is refused (the spec would grant the name to whoever takes it next)."""
    _known_user(session, name)
    if name == p.user:
        raise ConflictError("you cannot delete yourself")
    _keep_an_admin(session, name)
    rows = session.execute(
        select(memberships).where(memberships.c.user == name, memberships.c.tenant != "")
    )
    named = sorted({f"{r.tenant}/{r.project}" if r.project else r.tenant for r in rows})
    if named:
        raise ConflictError(
            f"user {name!r} is still named in the spec of {', '.join(named)}: remove it there first"
        )
    _end_sessions(session, name)
    session.execute(delete(memberships).where(memberships.c.user == name))
    session.execute(delete(users).where(users.c.name == name))
    _audit_user(session, p, "delete", name)


def change_password(
    session: Session,
    p: Principal,
    name: str,
    new: str,
    current: str | None,
    *,
    throttle: LoginThrottle,
) -> None:
    """A user changes its own password (giving the current one), or a platform admin sets
    anyone's; every other token of that user is revoked."""
    _known_user(session, name)
    if name == p.user:
        if current is None or not confirm_password(session, p, current, throttle):
            raise ForbiddenError("currentPassword: give your current password to change it")
    elif not p.can("write"):
        raise ForbiddenError("only a platform admin sets another user's password")
    if len(new) < 8:
        raise InvalidError("password: use at least 8 characters", field="password")
    session.execute(
        update(users).where(users.c.name == name).values(password_hash=_hasher.hash(new))
    )
    _end_sessions(session, name, keep=p.token_id if name == p.user else "")
    _audit_user(session, p, "change-password", name)


def unbind_platform_role(session: Session, p: Principal, user: str, role: str) -> None:
    if (user, role) not in _platform_bindings(session):
        raise NotFoundError(f"{user} holds no platform role {role!r}")
    if role == "platform-admin":
        _keep_an_admin(session, user)
    revoke(session, user, role)
    change = [{"path": "role", "old": role, "new": None}]
    record(
        session, AuditEvent(p.user, p.source, "unbind", "User", "", user, "allowed", diff=change)
    )


def _platform_bindings(session: Session) -> list[tuple[str, str]]:
    rows = session.execute(
        select(memberships.c.user, memberships.c.role).where(memberships.c.tenant == "")
    )
    return [(r.user, r.role) for r in rows]


def revoke_tokens_of(session: Session, p: Principal, user: str, token_id: str = "") -> int:
    """A platform admin revokes another user's tokens: one, or all of them."""
    _known_user(session, user)
    if token_id:
        revoke_token(session, user, token_id)
        revoked = 1
    else:
        revoked = _end_sessions(session, user)
    _audit_user(session, p, "revoke-tokens", user, reason=token_id or "all")
    return revoked


def user_rows(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(select(users.c.name, users.c.disabled).order_by(users.c.name))
    return [{"name": r.name, "disabled": bool(r.disabled)} for r in rows]


def require_platform_admin(db: Database, p: Principal, action: str, name: str) -> None:
    """Only platform admins manage users and platform roles; a refusal is audited."""
    if p.can("write"):
        return
    with db.session() as session:
        reason = "only a platform admin manages users"
        record(session, AuditEvent(p.user, p.source, action, "User", "", name, "denied", reason))
    raise ForbiddenError("only a platform admin manages users and platform roles")


def add_user(session: Session, p: Principal, name: str, password: str | None) -> None:
    create_user(session, name, password)
    record(session, AuditEvent(p.user, p.source, "create", "User", "", name, "allowed"))


PLATFORM_ROLES = ("platform-admin", "viewer")


def bind_platform_role(session: Session, p: Principal, user: str, role: str) -> None:
    if role not in PLATFORM_ROLES:
        raise InvalidError(
            f"role: {role!r} is not a platform role (platform-admin or viewer); tenant "
            "and project roles are granted in the tenant's and project's spec",
            field="role",
        )
    if not user_exists(session, user):
        raise InvalidError(f"user: no user {user!r}", field="user")
    grant(session, user, role)
    change = [{"path": "role", "old": None, "new": role}]
    record(session, AuditEvent(p.user, p.source, "bind", "User", "", user, "allowed", diff=change))
