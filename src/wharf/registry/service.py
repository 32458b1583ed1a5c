"""The registry's use cases: who may register registries and robots, Wharf as the registries'
token server (Docker registry token authentication), the clusters' pull secrets, the
registries' notifications in the audit trail, and browsing a project's images.

Nothing here is stored that can be derived: the token signing key, robots' secrets, the
projects' pull credentials and each registry's notification secret are all derived from the
sealing key (`SecretBox.derive`), so every replica agrees and a rotation renews them all
(what was handed out under a previous key still checks while that key is kept).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from wharf.core.crypto import SecretBox
from wharf.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    ThrottledError,
    UnauthenticatedError,
)
from wharf.core.resources import check_name, now
from wharf.identity import service as identity
from wharf.identity.model import Action, Grant, Principal
from wharf.identity.throttle import LoginThrottle
from wharf.registry.model import (
    IMMUTABLE_TAGS,
    PULL_PREFIX,
    REGISTRY,
    REPLICATION,
    RETENTION,
    ROBOT,
    ROBOT_PREFIX,
    SIGNATURE_ANNOTATION,
    SIGNATURE_POLICY,
    SIMPLE_SIGNING,
    Decision,
    ImageRef,
    ImmutableTagsSpec,
    ProjectOwned,
    RegistrySpec,
    ReplicationSpec,
    Repository,
    Requester,
    RetentionSpec,
    RobotAccount,
    RobotSpec,
    Scope,
    SignaturePolicySpec,
    SigningKey,
    TagState,
    allowed_actions,
    due,
    grant,
    image_references,
    immutable,
    load_public_key,
    locate,
    parse_image,
    parse_scopes,
    plan_retention,
    pull_username,
    robot_username,
    signature_problem,
    signature_tag,
    split_account,
    subject,
)
from wharf.resources.service import Change, KindRules, Verdict, project_scopes
from wharf.store import Database
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import ResourceStore, Scopes, StoredResource
from wharf.store.tables import audit_events, revisions
from wharf.tenancy.model import PROJECT_LABEL

P = TypeVar("P", bound=ProjectOwned)
PULL_SECRET_NAME = "wharf-registry"
EXTRA_LABEL = "wharf.io/extra"  # the placement controller prunes what it no longer gets
MIN_TOKEN_TTL = 60
WHARF_SUBJECT = "wharf"  # the subject of tokens Wharf signs for its own calls


# -- kinds' rules --------------------------------------------------------------------------
class RegistryRules(KindRules[RegistrySpec]):
    """Platform admins register registries; every signed-in user may read them (to know
    where to push)."""

    kind = REGISTRY

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if p.can(action):
            return "allow"
        return "forbid" if action == "write" else "allow"

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        return [("", None)]

    def validate(self, change: Change[RegistrySpec]) -> RegistrySpec:
        spec = change.spec
        for other in ResourceStore(change.session).query("Registry"):
            if other.name != change.name and REGISTRY.typed(other).service == spec.service:
                raise ConflictError(
                    f"spec.service: registry {other.name!r} already announces service "
                    f"{spec.service!r}; a token's audience must name one registry",
                    field="spec.service",
                )
        return spec


def _project(session: Session, p: Principal, tenant: str, name: str) -> StoredResource:
    stored = ResourceStore(session).get("Project", tenant, name)
    if stored is None or not p.can("read", tenant, name):
        raise InvalidError(f"spec.project: no project {name!r}", field="spec.project")
    return stored


class ProjectOwnedRules(KindRules[P]):
    """A project's robots, retention, immutable tags and replication: its admins (and tenant
    and platform admins) manage them, its members read them (never a robot's secret)."""

    what = "robots"  # what the kind is, in messages

    def project_of(self, name: str, spec: Any) -> str:
        project = spec.get("project", "") if isinstance(spec, dict) else ""
        return project if isinstance(project, str) else ""

    def derived_labels(self, spec: P) -> dict[str, str]:
        return {PROJECT_LABEL: spec.project}

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        return project_scopes(p, tenant, PROJECT_LABEL)

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if not p.sees_tenant(tenant):
            return "hide"
        if old is None:
            return "allow" if action == "write" else "hide"
        project = old.labels.get(PROJECT_LABEL, "")  # derived from the spec when written
        if not p.can("read", tenant, project):
            return "hide"
        return "allow" if action == "read" or self.may_write(p, tenant, project) else "forbid"

    def may_write(self, p: Principal, tenant: str, project: str) -> bool:
        """Who manages the kind in a project: its admins (a kind may let developers too)."""
        return p.can("write", tenant, project)

    def create_verdict(self, p: Principal, tenant: str, name: str, project: str) -> Verdict:
        if not p.sees_tenant(tenant):
            return "hide"
        if self.may_write(p, tenant, project):
            return "allow"
        return "forbid" if p.can("read", tenant, project) else "hide"

    def validate(self, change: Change[P]) -> P:
        check_name(change.name, max_length=40)
        spec = change.spec
        _project(change.session, change.principal, change.tenant, spec.project)
        if not self.may_write(change.principal, change.tenant, spec.project):
            raise ForbiddenError(
                f"{change.principal.user} may not manage {self.what} of project {spec.project}"
            )
        if change.old_spec is not None and change.old_spec.project != spec.project:
            raise InvalidError(
                "spec.project: it stays in its project; create a new one elsewhere",
                field="spec.project",
            )
        self.check(change)
        return spec

    def check(self, change: Change[P]) -> None:
        """What else the kind refuses (patterns that do not compile, unknown registries)."""


class RobotRules(ProjectOwnedRules[RobotSpec]):
    kind = ROBOT


class SignaturePolicyRules(ProjectOwnedRules[SignaturePolicySpec]):
    """Whether a project's images must be signed, and by which keys, is the tenant's call:
    tenant and platform admins set it; the project's admins and developers read it and may
    neither weaken nor remove it (nor add a key of their own)."""

    kind = SIGNATURE_POLICY
    what = "signature policies"

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        seen = super().verdict(p, action, tenant, name, old)
        if seen == "allow" and action == "write" and not p.can("write", tenant):
            return "forbid"
        return seen

    def create_verdict(self, p: Principal, tenant: str, name: str, project: str) -> Verdict:
        seen = super().create_verdict(p, tenant, name, project)
        if seen == "allow" and not p.can("write", tenant):
            return "forbid"
        return seen

    def check(self, change: Change[SignaturePolicySpec]) -> None:
        if not change.principal.can("write", change.tenant):
            raise ForbiddenError(
                f"{change.principal.user} may not set the signature policy of project "
                f"{change.spec.project}: tenant admins do"
            )
        for i, key in enumerate(change.spec.keys):
            try:
                load_public_key(key.publicKey)
            except ValueError as exc:
                where = f"spec.keys.{i}.publicKey"
                raise InvalidError(f"{where}: {exc}", field=where) from None


class RetentionRules(ProjectOwnedRules[RetentionSpec]):
    kind = RETENTION
    what = "retention"

    def check(self, change: Change[RetentionSpec]) -> None:
        compiled_patterns(change.spec)


class ImmutableTagsRules(ProjectOwnedRules[ImmutableTagsSpec]):
    kind = IMMUTABLE_TAGS
    what = "immutable tags"

    def check(self, change: Change[ImmutableTagsSpec]) -> None:
        _compiled(change.spec.tags, "spec.tags")


class ReplicationRules(ProjectOwnedRules[ReplicationSpec]):
    kind = REPLICATION
    what = "replication"

    def check(self, change: Change[ReplicationSpec]) -> None:
        spec, store = change.spec, ResourceStore(change.session)
        for where in ("source", "target"):
            if store.get("Registry", "", getattr(spec, where)) is None:
                raise InvalidError(
                    f"spec.{where}: no registry {getattr(spec, where)!r}", field=f"spec.{where}"
                )
        if spec.source == spec.target:
            raise InvalidError("spec.target: the same registry as spec.source", field="spec.target")


# -- derived secrets -------------------------------------------------------------------------
def _secret(box: SecretBox, purpose: str) -> str:
    return base64.urlsafe_b64encode(box.derive(purpose)).decode().rstrip("=")


def _matches(box: SecretBox, purpose: str, given: str) -> bool:
    return any(
        hmac.compare_digest(base64.urlsafe_b64encode(d).decode().rstrip("="), given)
        for d in box.derive_all(purpose)
    )


def robot_secret(box: SecretBox, robot: StoredResource) -> str:
    """A robot's secret: bound to its uid, so a robot deleted and made again gets a new one."""
    return _secret(box, f"robot\0{robot.tenant}\0{robot.name}\0{robot.uid}")


def pull_secret(box: SecretBox, project: StoredResource) -> str:
    """The password of a project's pull identity, which the clusters use."""
    return _secret(box, f"pull\0{project.tenant}\0{project.name}\0{project.uid}")


def notification_secret(box: SecretBox, registry: StoredResource) -> str:
    """What a registry sends (Authorization: Bearer …) with its notifications."""
    return _secret(box, f"notify\0{registry.name}\0{registry.uid}")


# -- signing ---------------------------------------------------------------------------------
def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """libtrust's key ID (what distribution matches a token's `kid` against): the first 240
    bits of the SHA-256 of the DER public key, base32, in groups of four."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


def _signing_key(seed: bytes) -> ec.EllipticCurvePrivateKey:
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's n
    return ec.derive_private_key(int.from_bytes(seed, "big") % (order - 1) + 1, ec.SECP256R1())


def _certificate(key: ec.EllipticCurvePrivateKey, issuer: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{issuer} registry tokens")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(
            int.from_bytes(hashlib.sha256(key_id(key.public_key()).encode()).digest()[:8])
        )
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class TokenSigner:
    """Signs registry tokens (ES256, `kid` = libtrust key ID) with a key derived from the
    sealing key; the registry trusts the certificates of `bundle()` (auth.token.rootcertbundle)."""

    PURPOSE = "registry token signing key"

    def __init__(self, box: SecretBox, issuer: str, ttl: int) -> None:
        self.issuer = issuer
        self.ttl = max(ttl, MIN_TOKEN_TTL)
        self.keys = [_signing_key(seed) for seed in box.derive_all(self.PURPOSE)]
        self.kid = key_id(self.keys[0].public_key())

    def bundle(self) -> str:
        """PEM certificates of the current key and the previous ones (for a rotation)."""
        certs = [_certificate(k, self.issuer) for k in self.keys]
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)

    def sign(self, sub: str, audience: str, access: list[dict[str, object]]) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience,  # one string: distribution 2.8 compares it as such
            "exp": int(now.timestamp()) + self.ttl,
            "nbf": int(now.timestamp()),
            "iat": int(now.timestamp()),
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = jwt.encode(claims, self.keys[0], algorithm="ES256", headers={"kid": self.kid})
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.ttl,
            "issued_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


# -- the token endpoint -----------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRequest:
    authorization: str
    service: str
    scopes: list[str]
    source: str


def basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise UnauthenticatedError(
            "send Basic credentials: a Wharf user and its password or API token, or a robot "
            "account and its secret"
        )
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise UnauthenticatedError("Authorization: not base64 of user:password") from None
    if not sep or not user:
        raise UnauthenticatedError("Authorization: not base64 of user:password")
    return user, password


def registry_for_service(session: Session, service: str) -> StoredResource:
    if not service:
        raise InvalidError(
            "service: name the registry's service (auth.token.service)", field="service"
        )
    for stored in ResourceStore(session).query("Registry"):
        if REGISTRY.typed(stored).service == service:
            return stored
    raise InvalidError(
        f"service: no registered registry announces service {service!r}", field="service"
    )


def _robot(session: Session, box: SecretBox, username: str, password: str) -> RobotAccount | None:
    found = split_account(username, ROBOT_PREFIX)
    if found is None:
        return None
    robot = ResourceStore(session).get("Robot", found[0], found[1])
    if robot is None or not _matches(
        box, f"robot\0{robot.tenant}\0{robot.name}\0{robot.uid}", password
    ):
        return None
    spec = ROBOT.typed(robot)
    if spec.expiresAt is not None and spec.expiresAt <= dt.datetime.now(dt.UTC):
        return None
    if ResourceStore(session).get("Project", robot.tenant, spec.project) is None:
        return None
    return RobotAccount(
        username, robot.tenant, spec.project, frozenset(spec.access), frozenset(spec.images)
    )


def _pull_identity(
    session: Session, box: SecretBox, username: str, password: str
) -> RobotAccount | None:
    found = split_account(username, PULL_PREFIX)
    if found is None:
        return None
    project = ResourceStore(session).get("Project", found[0], found[1])
    purpose = f"pull\0{found[0]}\0{found[1]}\0{project.uid if project else ''}"
    if project is None or not _matches(box, purpose, password):
        return None
    return RobotAccount(username, found[0], found[1], frozenset({"pull"}))


def _user(session: Session, username: str, password: str, source: str) -> Principal | None:
    if password.startswith(f"{identity.TOKEN_PREFIX}_"):
        try:
            p = identity.authenticate(session, password, source)
        except UnauthenticatedError:
            return None
        return p if p.user == username else None
    if not identity.verify_password(session, username, password):
        return None
    return Principal(username, identity.grants_of(session, username), source=source)


def authenticate(
    session: Session, box: SecretBox, user: str, password: str, source: str
) -> Requester | None:
    if user.startswith(ROBOT_PREFIX):
        return _robot(session, box, user, password)
    if user.startswith(PULL_PREFIX):
        return _pull_identity(session, box, user, password)
    return _user(session, user, password, source)


def issue_token(
    db: Database,
    box: SecretBox,
    signer: TokenSigner,
    throttle: LoginThrottle,
    request: TokenRequest,
) -> dict[str, Any]:
    """A token for the registry of `service`, granting of the asked scopes what the caller
    may do. Bad input is refused before the credentials are checked; failures are throttled
    and audited as logins are."""
    user, password = basic_credentials(request.authorization)
    scopes = parse_scopes(request.scopes)
    wait = throttle.admit(user, request.source)
    if wait:
        raise ThrottledError(f"too many failed attempts: try again in {wait} s", retry_after=wait)
    who = None
    try:
        # Reads only: token requests come in bursts (a pull asks for several), and a write
        # transaction each would queue them behind one another on SQLite.
        with db.reader() as session:
            registry = registry_for_service(session, request.service)
            who = authenticate(session, box, user, password, request.source)
    finally:
        # Every admitted attempt is answered (see LoginThrottle.admit); one that did not
        # finish counts as a failure.
        if who is None:
            throttle.failed(user, request.source)
        else:
            throttle.succeeded(user, request.source)
    if who is None:
        reason = "wrong credentials, or an expired or unknown robot"
        with db.session() as session:
            record(
                session,
                AuditEvent(
                    user,
                    request.source,
                    "registry-token",
                    "Registry",
                    "",
                    registry.name,
                    "denied",
                    reason,
                ),
            )
        raise UnauthenticatedError("wrong username or password (or token, or robot secret)")
    shared = REGISTRY.typed(registry).shared
    return signer.sign(subject(who), request.service, grant(who, scopes, shared))


# -- pull secrets --------------------------------------------------------------------------
def dockerconfig(auths: dict[str, tuple[str, str]]) -> str:
    """A .dockerconfigjson, byte for byte the same for the same input (so it compares)."""
    entries = {
        host: {
            "username": user,
            "password": password,
            "auth": base64.b64encode(f"{user}:{password}".encode()).decode(),
        }
        for host, (user, password) in sorted(auths.items())
    }
    return json.dumps({"auths": entries}, sort_keys=True, separators=(",", ":"))


def pull_secret_objects(
    box: SecretBox,
    registries: list[StoredResource],
    project: StoredResource,
    namespace: str,
    labels: dict[str, str],
) -> list[dict[str, Any]]:
    """The Secret a project namespace holds to pull from every registered registry with the
    project's pull identity (none when no registry is registered)."""
    if not registries:
        return []
    user, password = pull_username(project.tenant, project.name), pull_secret(box, project)
    hosts = {REGISTRY.typed(r).host: (user, password) for r in registries}
    data = base64.b64encode(dockerconfig(hosts).encode()).decode()
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": PULL_SECRET_NAME,
                "namespace": namespace,
                "labels": {**labels, EXTRA_LABEL: "pull-secret"},
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": data},
        }
    ]


# -- robots' secrets ------------------------------------------------------------------------
def robot_credentials(
    db: Database, box: SecretBox, p: Principal, tenant: str, name: str
) -> dict[str, str]:
    """A robot's username and secret, for its project's admins only."""
    with db.reader() as session:
        robot = ResourceStore(session).get("Robot", tenant, name)
        project = ROBOT.typed(robot).project if robot else ""
        if robot is None or not p.can("read", tenant, project):
            raise NotFoundError(f"robot {name!r} not found")
        if not p.can("write", tenant, project):
            raise ForbiddenError(f"only admins of project {project} read its robots' secrets")
    return {"username": robot_username(tenant, name), "secret": robot_secret(box, robot)}


# -- notifications -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Overwrite:
    """A push that moved an immutable tag: what it was, and who moved it where."""

    registry: str
    repository: str
    tag: str
    previous: str
    pushed: str
    actor: str
    pattern: str


def record_notifications(
    db: Database,
    box: SecretBox,
    signer: TokenSigner,
    registry_name: str,
    authorization: str,
    body: Any,
    source: str,
) -> int:
    """Push, pull and delete events of a registry into the audit trail, each with the actor
    the registry names (the `sub` of the token it accepted); how many were recorded. A push
    that moved an immutable tag is taken back afterwards (see `restore`)."""
    overwrites: list[Overwrite] = []
    with db.session() as session:
        registry = ResourceStore(session).get("Registry", "", registry_name)
        scheme, _, token = authorization.partition(" ")
        if (
            registry is None
            or scheme.lower() != "bearer"
            or not _matches(box, f"notify\0{registry.name}\0{registry.uid}", token)
        ):
            raise UnauthenticatedError(
                "a registry's notifications carry Authorization: Bearer <its notification secret> "
                "(see `wharf registry config`)"
            )
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise InvalidError(
                "events: send a registry notification envelope {events: […]}", field="events"
            )
        recorded = 0
        for i, event in enumerate(events):
            count, moved = _record_event(session, registry_name, event, f"events[{i}]")
            recorded += count
            overwrites += [moved] if moved else []
    for moved in overwrites:
        restore(db, RegistryClient(signer, registry), moved)
    return recorded


def _previous_digest(session: Session, registry: str, repo: Repository, name: str) -> str:
    """The tag's digest at its last push to this registry: a push to another registry (where
    it may not be restored) must not stand in as the tag's last digest here."""
    rows = session.execute(
        select(audit_events.c.diff)
        .where(
            audit_events.c.kind == "Image",
            audit_events.c.action == "push",
            audit_events.c.tenant == repo.tenant,
            audit_events.c.project == repo.project,
            audit_events.c.name == name,
        )
        .order_by(audit_events.c.time.desc(), audit_events.c.id.desc())
    )
    for (diff,) in rows:
        listed = diff if isinstance(diff, list) else []
        changes = {c.get("path"): c.get("new") for c in listed if isinstance(c, dict)}
        if changes.get("registry") == registry:
            return str(changes.get("digest") or "")
    return ""


def _overwrite(
    session: Session, registry: str, repo: Repository, tag: str, digest: str, actor: str
) -> Overwrite | None:
    if not tag or not repo.tenant or actor == WHARF_SUBJECT:
        return None  # Wharf's own restores are not overwrites
    previous = _previous_digest(session, registry, repo, f"{repo.image}:{tag}")
    if not previous or previous == digest:
        return None
    rules = ResourceStore(session).query("ImmutableTags", scopes=[(repo.tenant, None)])
    specs = [IMMUTABLE_TAGS.typed(r) for r in rules]
    pattern = immutable([s for s in specs if s.project == repo.project], repo.image, tag)
    if not pattern:
        return None
    return Overwrite(registry, repo.name, tag, previous, digest, actor, pattern)


def restore(db: Database, client: RegistryClient, moved: Overwrite) -> None:
    """Put the immutable tag back on its digest, and say who moved it and why it is back."""
    client.retag(moved.repository, moved.tag, moved.previous)
    repo = locate(moved.repository)
    reason = (
        f"tag {moved.tag} matches immutable pattern {moved.pattern}: {moved.actor} pushed "
        f"{moved.pushed}; restored to {moved.previous}"
    )
    change = [{"path": "digest", "old": moved.pushed, "new": moved.previous}]
    with db.session() as session:
        event = AuditEvent(
            moved.actor,
            "",
            "restore-immutable",
            "Image",
            repo.tenant,
            f"{repo.image}:{moved.tag}",
            "denied",
            reason,
            change,
            repo.project,
        )
        record(session, event)


def _queue_replication(
    session: Session, registry: str, repo: Repository, tag: str, digest: str
) -> None:
    """Add the pushed tag to the pending copies of every rule it falls under: kept in the
    rule's status, so that a restarted server resumes what was not done."""
    store = ResourceStore(session)
    for rule in store.query("ReplicationRule", scopes=[(repo.tenant, None)]):
        spec = REPLICATION.typed(rule)
        if spec.source != registry or spec.project != repo.project:
            continue
        if spec.repositories and repo.image not in spec.repositories:
            continue
        locked = store.get("ReplicationRule", rule.tenant, rule.name, lock=True)
        if locked is None:
            continue
        item = {"repository": repo.name, "tag": tag, "digest": digest}
        pending = [
            p
            for p in locked.status.get("pending", [])
            if p.get("tag") != tag or p.get("repository") != repo.name
        ]
        store.write_status(locked, {**locked.status, "pending": [*pending, item]})


def _record_event(
    session: Session, registry: str, event: Any, where: str
) -> tuple[int, Overwrite | None]:
    if not isinstance(event, dict) or not isinstance(event.get("target"), dict):
        raise InvalidError(f"{where}: not a registry event (action, target, actor)", field=where)
    action = str(event.get("action", ""))
    if action not in ("push", "pull", "delete", "mount"):
        raise InvalidError(
            f"{where}.action: {action!r} is not push, pull, delete or mount",
            field=f"{where}.action",
        )
    target = event["target"]
    repo = locate(str(target.get("repository", "")))
    tag = str(target.get("tag") or "")
    digest = str(target.get("digest") or "")
    actor = str((event.get("actor") or {}).get("name") or "anonymous")
    if (
        action in ("push", "pull")
        and not tag
        and "manifest" not in str(target.get("mediaType", ""))
    ):
        return 0, None  # blobs: the manifest's event says what was pushed or pulled
    moved = _overwrite(session, registry, repo, tag, digest, actor) if action == "push" else None
    name = f"{repo.image or repo.name}:{tag}" if tag else f"{repo.image or repo.name}@{digest}"
    source = str((event.get("request") or {}).get("addr") or "")
    detail = [
        {"path": "digest", "old": None, "new": digest},
        {"path": "registry", "old": None, "new": registry},
    ]
    if action == "push" and tag and repo.tenant:
        _queue_replication(session, registry, repo, tag, digest)
    record(
        session,
        AuditEvent(
            actor,
            source,
            action,
            "Image",
            repo.tenant,
            name,
            "allowed",
            project=repo.project,
            diff=detail,
        ),
    )
    return 1, moved


# -- browsing --------------------------------------------------------------------------------
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


class TooLarge(ValueError):
    """What a registry answered is bigger than Wharf reads for a check."""


class RegistryClient:
    """Wharf's own calls to a registry's API, with tokens it signs for itself."""

    def __init__(self, signer: TokenSigner, registry: StoredResource, timeout: float = 30) -> None:
        self.signer = signer
        self.spec = REGISTRY.typed(registry)
        self.timeout = timeout

    def _get(self, path: str, access: list[dict[str, object]], **headers: str) -> httpx.Response:
        token = self.signer.sign(WHARF_SUBJECT, self.spec.service, access)["token"]
        return httpx.get(
            f"{self.spec.url}{path}",
            headers={"Authorization": f"Bearer {token}", **headers},
            timeout=10,
        )

    def repositories(self) -> list[str]:
        """The registry's catalog, page by page (distribution serves at most 1,000 a page)."""
        access: list[dict[str, object]] = [
            {"type": "registry", "name": "catalog", "actions": ["*"]}
        ]
        found: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            answer = self._get(path, access)
            answer.raise_for_status()
            found += answer.json().get("repositories") or []
            following = answer.links.get("next", {}).get("url")
            path = (
                urlsplit(following)._replace(scheme="", netloc="").geturl() if following else None
            )
        return found

    def tags(self, repository: str) -> list[str]:
        answer = self._get(f"/v2/{repository}/tags/list", _pull(repository))
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return sorted(answer.json().get("tags") or [])

    def _token(self, repository: str, actions: list[str]) -> dict[str, str]:
        access: list[dict[str, object]] = [
            {"type": "repository", "name": repository, "actions": actions}
        ]
        token = self.signer.sign(WHARF_SUBJECT, self.spec.service, access)["token"]
        return {"Authorization": f"Bearer {token}"}

    def read_manifest(self, repository: str, reference: str) -> httpx.Response:
        headers = {**self._token(repository, ["pull"]), "Accept": MANIFEST_TYPES}
        url = f"{self.spec.url}/v2/{repository}/manifests/{reference}"
        answer = httpx.get(url, headers=headers, timeout=self.timeout)
        answer.raise_for_status()
        return answer

    def read_small(self, repository: str, path: str, limit: int, **headers: str) -> bytes:
        """A manifest or blob read for a check, refused past `limit` bytes (the repository's
        pushers choose what is there; Wharf reads no more than a check needs)."""
        url = f"{self.spec.url}/v2/{repository}/{path}"
        headers = {**self._token(repository, ["pull"]), **headers}
        with httpx.stream(
            "GET", url, headers=headers, timeout=self.timeout, follow_redirects=True
        ) as answer:
            answer.raise_for_status()
            body = b""
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise TooLarge(f"larger than {limit // 1024} KiB")
        return body

    def read_blob(self, repository: str, digest: str) -> bytes:
        url = f"{self.spec.url}/v2/{repository}/blobs/{digest}"
        answer = httpx.get(
            url,
            headers=self._token(repository, ["pull"]),
            timeout=max(self.timeout, 120),
            follow_redirects=True,
        )
        answer.raise_for_status()
        return answer.content

    def write_blob(self, repository: str, digest: str, data: bytes) -> None:
        """Upload a blob (monolithic) unless the registry has it already."""
        headers = self._token(repository, ["pull", "push"])
        base = f"{self.spec.url}/v2/{repository}/blobs"
        if httpx.head(f"{base}/{digest}", headers=headers, timeout=30).status_code == 200:
            return
        started = httpx.post(f"{base}/uploads/", headers=headers, timeout=30)
        started.raise_for_status()
        location = started.headers["Location"]
        if location.startswith("/"):
            location = f"{self.spec.url}{location}"
        # The upload's own query (its state) stays: httpx's params would replace it.
        separator = "&" if "?" in location else "?"
        put = httpx.put(
            f"{location}{separator}{urlencode({'digest': digest})}",
            content=data,
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=120,
        )
        put.raise_for_status()

    def write_manifest(self, repository: str, tag: str, content: bytes, media_type: str) -> None:
        headers = {**self._token(repository, ["pull", "push"]), "Content-Type": media_type}
        url = f"{self.spec.url}/v2/{repository}/manifests/{tag}"
        httpx.put(url, content=content, headers=headers, timeout=30).raise_for_status()

    def retag(self, repository: str, tag: str, digest: str) -> None:
        """Point `tag` at `digest` again: the manifest's own bytes, put under the tag."""
        access: list[dict[str, object]] = [
            {"type": "repository", "name": repository, "actions": ["pull", "push"]}
        ]
        token = self.signer.sign(WHARF_SUBJECT, self.spec.service, access)["token"]
        headers = {"Authorization": f"Bearer {token}"}
        base = f"{self.spec.url}/v2/{repository}/manifests"
        manifest = httpx.get(f"{base}/{digest}", headers={**headers, "Accept": MANIFEST_TYPES})
        manifest.raise_for_status()
        content_type = manifest.headers.get("Content-Type", "")
        put = httpx.put(
            f"{base}/{tag}",
            content=manifest.content,
            headers={**headers, "Content-Type": content_type},
            timeout=30,
        )
        put.raise_for_status()

    def delete_manifest(self, repository: str, digest: str) -> None:
        access: list[dict[str, object]] = [
            {"type": "repository", "name": repository, "actions": ["pull", "delete", "*"]}
        ]
        token = self.signer.sign(WHARF_SUBJECT, self.spec.service, access)["token"]
        answer = httpx.delete(
            f"{self.spec.url}/v2/{repository}/manifests/{digest}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if answer.status_code != 404:  # already gone is what was wanted
            answer.raise_for_status()

    def digest(self, repository: str, reference: str) -> str:
        """The digest a tag points at ("" when the registry does not have it)."""
        answer = httpx.head(
            f"{self.spec.url}/v2/{repository}/manifests/{reference}",
            headers={**self._token(repository, ["pull"]), "Accept": MANIFEST_TYPES},
            timeout=self.timeout,
        )
        if answer.status_code == 404:
            return ""
        answer.raise_for_status()
        return str(answer.headers.get("Docker-Content-Digest", ""))

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        answer = self._get(
            f"/v2/{repository}/manifests/{reference}", _pull(repository), Accept=MANIFEST_TYPES
        )
        answer.raise_for_status()
        body = answer.json()
        size = len(answer.content) + sum(
            int(x.get("size", 0)) for x in [body.get("config") or {}, *(body.get("layers") or [])]
        )
        return {
            "digest": answer.headers.get("Docker-Content-Digest", ""),
            "size": size,
            "mediaType": body.get("mediaType", answer.headers.get("Content-Type", "")),
        }


def _local(url: str) -> str:
    """The path and query of a Link header's URL (the registry's own host is kept)."""
    return urlsplit(url)._replace(scheme="", netloc="").geturl()


def _pull(repository: str) -> list[dict[str, object]]:
    return [{"type": "repository", "name": repository, "actions": ["pull"]}]


def project_images(
    db: Database, signer: TokenSigner, p: Principal, tenant: str, project: str
) -> dict[str, list[dict[str, Any]]]:
    """Every repository of a project in every registry, with its tags: digest, size, and who
    pushed it when (from the registries' notifications in the audit trail); registries that
    did not answer are listed with why."""
    if not p.can("read", tenant, project):
        raise NotFoundError(f"project {project!r} not found")
    with db.reader() as session:
        if ResourceStore(session).get("Project", tenant, project) is None:
            raise NotFoundError(f"project {project!r} not found")
        registries = ResourceStore(session).query("Registry")
        pushes = _pushes(session, tenant, project)
    items: list[dict[str, Any]] = []
    unreachable: list[dict[str, Any]] = []
    for registry in registries:
        try:
            items += _registry_images(
                RegistryClient(signer, registry), registry.name, f"{tenant}/{project}/", pushes
            )
        except (httpx.HTTPError, ValueError) as exc:
            unreachable.append(
                {"registry": registry.name, "message": f"{type(exc).__name__}: {exc}"[:300]}
            )
    return {"items": items, "unreachable": unreachable}


def registered(db: Database) -> bool:
    """Whether any registry is registered (every signed-in user may know)."""
    with db.reader() as session:
        return bool(ResourceStore(session).query("Registry"))


def _registry_images(
    client: RegistryClient, registry: str, prefix: str, pushes: dict[str, dict[str, str]]
) -> list[dict[str, Any]]:
    out = []
    for repository in client.repositories():
        if not repository.startswith(prefix):
            continue
        image = repository[len(prefix) :]
        tags = []
        for tag in client.tags(repository):
            manifest = client.manifest(repository, tag)
            tags.append({"tag": tag, **manifest, **pushes.get(f"{image}:{tag}", {})})
        out.append({"registry": registry, "repository": repository, "image": image, "tags": tags})
    return out


def _pushes(session: Session, tenant: str, project: str) -> dict[str, dict[str, str]]:
    rows = session.execute(
        select(audit_events.c.name, audit_events.c.actor, audit_events.c.time)
        .where(
            audit_events.c.kind == "Image",
            audit_events.c.action == "push",
            audit_events.c.tenant == tenant,
            audit_events.c.project == project,
        )
        .order_by(audit_events.c.time)
    )
    return {
        r.name: {"pushedBy": r.actor, "pushedAt": r.time.isoformat(timespec="seconds")}
        for r in rows
    }


# -- retention -----------------------------------------------------------------------------
def compiled_patterns(spec: RetentionSpec) -> list[re.Pattern[str]]:
    return _compiled(spec.keepTags, "spec.keepTags")


def _compiled(texts: list[str], field: str) -> list[re.Pattern[str]]:
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(re.compile(text))
        except re.error as exc:
            where = f"{field}[{i}]"
            raise InvalidError(f"{where}: {text!r} does not compile: {exc}", field=where) from None
    return out


def _in_use(session: Session, tenant: str, project: str, host: str) -> set[str]:
    """Images the project's applications name in any revision (a rollback may need them)."""
    rows = session.execute(select(revisions.c.spec).where(revisions.c.tenant == tenant))
    found: set[str] = set()
    for (spec,) in rows:
        if isinstance(spec, dict) and spec.get("project") == project:
            found |= image_references(spec, host)
    return found


def _push_times(session: Session, tenant: str, project: str) -> dict[str, str]:
    rows = session.execute(
        select(audit_events.c.name, audit_events.c.time).where(
            audit_events.c.kind == "Image",
            audit_events.c.action == "push",
            audit_events.c.tenant == tenant,
            audit_events.c.project == project,
        )
    )
    return {r.name: r.time.isoformat() for r in rows}


REPORT_ROWS = 500  # decisions kept in a policy's status.lastRun (the counts cover them all)
SCHEDULER = Principal(WHARF_SUBJECT, frozenset({Grant("platform-admin")}))


def run_retention(
    db: Database, signer: TokenSigner, p: Principal, tenant: str, name: str, dry_run: bool
) -> dict[str, Any]:
    """Evaluate a retention policy in every registry: the report of what is kept and deleted,
    and why; without dry run, delete through the registry API (its garbage collection frees
    the space) and audit each deletion. The report is kept in the policy's status.lastRun."""
    with db.reader() as session:
        stored = ResourceStore(session).get("RetentionPolicy", tenant, name)
        spec = RETENTION.typed(stored) if stored else None
        if spec is None or not p.can("read", tenant, spec.project):
            raise NotFoundError(f"retention policy {name!r} not found")
        if not dry_run and not p.can("write", tenant, spec.project):
            raise ForbiddenError(f"only admins of project {spec.project} delete its images")
        registries = ResourceStore(session).query("Registry")
        pushed = _push_times(session, tenant, spec.project)
        in_use = {
            r.name: _in_use(session, tenant, spec.project, REGISTRY.typed(r).host)
            for r in registries
        }
    patterns = compiled_patterns(spec)
    report: list[dict[str, Any]] = []
    for registry in registries:
        client = RegistryClient(signer, registry)
        tags = _tag_states(client, f"{tenant}/{spec.project}/", spec.repositories, pushed)
        decisions = plan_retention(tags, spec.keepLast, patterns, in_use[registry.name])
        if not dry_run:
            _delete(db, client, p, tenant, spec.project, registry.name, decisions)
        report += [_row(registry.name, d) for d in decisions]
    _keep_report(db, tenant, name, p, dry_run, report)
    return {"dryRun": dry_run, "decisions": report}


def _keep_report(
    db: Database, tenant: str, name: str, p: Principal, dry_run: bool, report: list[dict[str, Any]]
) -> None:
    last = {
        "time": now(),
        "by": p.user,
        "dryRun": dry_run,
        "kept": sum(1 for r in report if r["action"] == "keep"),
        "deleted": sum(1 for r in report if r["action"] == "delete"),
        "decisions": report[:REPORT_ROWS],
    }
    with db.session() as session:
        store = ResourceStore(session)
        stored = store.get("RetentionPolicy", tenant, name, lock=True)
        if stored is not None:
            store.write_status(stored, {**stored.status, "lastRun": last})


def run_scheduled_retention(db: Database, signer: TokenSigner, tenant: str, name: str) -> bool:
    """Run a policy on its schedule, when due (as Wharf; a dry run unless the schedule says
    delete); whether it ran. The time is kept in status.scheduledAt, so a restarted server
    neither runs it early nor forgets it."""
    with db.reader() as session:
        stored = ResourceStore(session).get("RetentionPolicy", tenant, name)
        spec = RETENTION.typed(stored) if stored else None
        if stored is None or spec is None or spec.schedule is None:
            return False
        if not due(stored.status.get("scheduledAt"), spec.schedule.everyMinutes, _utcnow()):
            return False
    try:
        run_retention(db, signer, SCHEDULER, tenant, name, dry_run=not spec.schedule.delete)
        error = ""
    except (httpx.HTTPError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    with db.session() as session:
        store = ResourceStore(session)
        locked = store.get("RetentionPolicy", tenant, name, lock=True)
        if locked is not None:
            store.write_status(locked, {**locked.status, "scheduledAt": now(), "lastError": error})
    return True


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _tag_states(
    client: RegistryClient, prefix: str, only: list[str], pushed: dict[str, str]
) -> list[TagState]:
    states = []
    for repository in client.repositories():
        image = repository[len(prefix) :]
        if not repository.startswith(prefix) or (only and image not in only):
            continue
        for tag in client.tags(repository):
            digest = client.manifest(repository, tag)["digest"]
            states.append(TagState(repository, tag, digest, pushed.get(f"{image}:{tag}", "")))
    return states


def _delete(
    db: Database,
    client: RegistryClient,
    p: Principal,
    tenant: str,
    project: str,
    registry: str,
    decisions: list[Decision],
) -> None:
    doomed = sorted({(d.tag.repository, d.tag.digest) for d in decisions if not d.keep})
    for repository, digest in doomed:
        client.delete_manifest(repository, digest)
        tags = [
            d.tag.tag for d in decisions if (d.tag.repository, d.tag.digest) == (repository, digest)
        ]
        with db.session() as session:
            for tag in tags:
                image = f"{locate(repository).image}:{tag}"
                detail = [
                    {"path": "digest", "old": digest, "new": None},
                    {"path": "registry", "old": registry, "new": None},
                ]
                record(
                    session,
                    AuditEvent(
                        p.user,
                        p.source,
                        "retention-delete",
                        "Image",
                        tenant,
                        image,
                        "allowed",
                        project=project,
                        diff=detail,
                    ),
                )


def _row(registry: str, d: Decision) -> dict[str, Any]:
    return {
        "registry": registry,
        "repository": d.tag.repository,
        "tag": d.tag.tag,
        "digest": d.tag.digest,
        "pushedAt": d.tag.pushed or None,
        "action": "keep" if d.keep else "delete",
        "reason": d.reason,
    }


# -- replication -----------------------------------------------------------------------------
def copy_image(source: RegistryClient, target: RegistryClient, repository: str, tag: str) -> str:
    """Copy one tag, blobs first (each skipped when the target has it), so that a copy cut
    short is resumed by doing it again; the digest copied."""
    manifest = source.read_manifest(repository, tag)
    body = manifest.json()
    if "manifests" in body:
        raise ValueError(f"{repository}:{tag} is an image index; only single images are copied")
    for blob in [body.get("config") or {}, *(body.get("layers") or [])]:
        digest = str(blob.get("digest", ""))
        if digest:
            target.write_blob(repository, digest, source.read_blob(repository, digest))
    media_type = manifest.headers.get("Content-Type", str(body.get("mediaType", "")))
    target.write_manifest(repository, tag, manifest.content, media_type)
    return str(manifest.headers.get("Docker-Content-Digest", ""))


# -- delivery checks -------------------------------------------------------------------------
def check_images(
    session: Session, signer: TokenSigner, tenant: str, project: str, images: dict[str, str]
) -> None:
    """Refuse a delivery (422 naming the field) whose images on a registered registry do not
    exist or may not be pulled by the project, or, when the project requires signatures, are
    not signed by one of its keys. `images` maps each image to the field that names it.
    Images on registries Wharf does not know pass, unless signatures are required."""
    registries = {REGISTRY.typed(r).host: r for r in ResourceStore(session).query("Registry")}
    keys = [
        key
        for policy in ResourceStore(session).query("SignaturePolicy", scopes=[(tenant, None)])
        if (spec := SIGNATURE_POLICY.typed(policy)).project == project
        for key in spec.keys
    ]
    for image, where in images.items():
        ref = parse_image(image)
        registry = registries.get(ref.host) if ref is not None else None
        if ref is None or registry is None:
            if keys:
                raise InvalidError(
                    f"{where}: {image} is not on a registered registry, and project {project} "
                    "requires signed images: Wharf verifies signatures in its registries only",
                    field=where,
                )
            continue
        if keys and not ref.digest:
            raise InvalidError(
                f"{where}: {image} names a tag, and project {project} requires signed images: "
                f"name it by digest ({image}@sha256:…), as a tag can be moved to another image "
                "after the check",
                field=where,
            )
        client = RegistryClient(signer, registry, timeout=5)
        digest = _pullable(client, registry, tenant, project, ref, image, where)
        if keys:
            try:
                verify_signature(client, ref.repository, digest, keys, image, where)
            except httpx.HTTPError as exc:
                raise _unreachable(registry, where, exc) from None


def _pullable(
    client: RegistryClient,
    registry: StoredResource,
    tenant: str,
    project: str,
    ref: ImageRef,
    image: str,
    where: str,
) -> str:
    """The image's digest, when it exists and the project's pull identity may pull it. Not
    found and not allowed get the same answer: another tenant learns nothing of its images."""
    refused = InvalidError(
        f"{where}: {image} is not in registry {registry.name}, or project {project} may not "
        "pull it",
        field=where,
    )
    puller = RobotAccount(pull_username(tenant, project), tenant, project, frozenset({"pull"}))
    scope = Scope("repository", ref.repository, ("pull",))
    if "pull" not in allowed_actions(puller, scope, REGISTRY.typed(registry).shared):
        raise refused
    try:
        answer = client.read_manifest(ref.repository, ref.reference)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            raise refused from None
        raise _unreachable(registry, where, exc) from None
    except httpx.HTTPError as exc:
        raise _unreachable(registry, where, exc) from None
    digest = answer.headers.get("Docker-Content-Digest", "")
    return digest or "sha256:" + hashlib.sha256(answer.content).hexdigest()


def _unreachable(registry: StoredResource, where: str, exc: Exception) -> ConflictError:
    return ConflictError(
        f"{where}: registry {registry.name} could not be read ({type(exc).__name__}), so the "
        "image could not be checked; try again",
        field=where,
    )


def verify_signature(
    client: RegistryClient,
    repository: str,
    digest: str,
    keys: list[SigningKey],
    image: str,
    where: str,
) -> None:
    """Find a cosign signature of `digest` by one of `keys`: the `sha256-<hex>.sig` tag's
    manifest, each simple-signing layer's payload and its signature annotation."""
    tag = signature_tag(digest)
    try:
        layers = _signature_layers(client, repository, tag)
    except TooLarge as exc:
        layers, problems = [], [f"its signature manifest is {exc}"]
    else:
        problems = (
            []
            if len(layers) <= MAX_SIGNATURES
            else [f"its signature manifest has {len(layers)} layers, more than {MAX_SIGNATURES}"]
        )
    for layer in layers if not problems else []:
        annotation = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if layer.get("mediaType") != SIMPLE_SIGNING or not annotation:
            continue
        problem = _payload_problem(client, repository, layer, keys, digest)
        if not problem:
            return
        problems.append(problem)
    problems = list(dict.fromkeys(problems))
    why = "; ".join(problems) if problems else f"it is not signed (no cosign signature {tag})"
    raise InvalidError(
        f"{where}: {image} ({digest}) is refused: the project requires a cosign signature by "
        f"one of its keys ({', '.join(k.name for k in keys)}), and {why}",
        field=where,
    )


MAX_SIGNATURES = 20  # signature layers read for one image
MAX_SIGNATURE_MANIFEST = 256 * 1024
MAX_PAYLOAD = 64 * 1024  # a simple-signing payload is a few hundred bytes


def _signature_layers(client: RegistryClient, repository: str, tag: str) -> list[Any]:
    try:
        raw = client.read_small(
            repository, f"manifests/{tag}", MAX_SIGNATURE_MANIFEST, Accept=MANIFEST_TYPES
        )
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        return []
    try:
        layers = json.loads(raw).get("layers") or []
    except (ValueError, AttributeError):
        return []
    return (
        [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []
    )


def _payload_problem(
    client: RegistryClient,
    repository: str,
    layer: dict[str, Any],
    keys: list[SigningKey],
    digest: str,
) -> str:
    """Why one signature layer does not sign `digest` ("" when it does); its payload is read
    only when small, as a simple-signing payload is."""
    size = layer.get("size")
    if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD:
        return f"a payload larger than {MAX_PAYLOAD // 1024} KiB"
    try:
        payload = client.read_small(repository, f"blobs/{layer.get('digest')}", MAX_PAYLOAD)
    except TooLarge:
        return f"a payload larger than {MAX_PAYLOAD // 1024} KiB"
    if "sha256:" + hashlib.sha256(payload).hexdigest() != layer.get("digest"):
        return "a payload that does not match its digest"
    return signature_problem(
        payload, str(layer.get("annotations", {}).get(SIGNATURE_ANNOTATION)), keys, digest
    )


def sync_plan(
    source: RegistryClient, target: RegistryClient, prefix: str, only: list[str]
) -> list[dict[str, str]]:
    """What a full sync copies: every tag of the rule's repositories at the source whose
    digest the target does not hold under that tag."""
    missing = []
    for repository in source.repositories():
        image = repository[len(prefix) :]
        if not repository.startswith(prefix) or (only and image not in only):
            continue
        for tag in source.tags(repository):
            digest = source.digest(repository, tag)
            if digest and target.digest(repository, tag) != digest:
                missing.append({"repository": repository, "tag": tag, "digest": digest})
    return missing


def queue_sync(db: Database, tenant: str, name: str, missing: list[dict[str, str]]) -> None:
    """Add a sync's copies to the rule's pending ones (kept in its status, so a restarted
    server resumes them), and note when it synced."""
    with db.session() as session:
        store = ResourceStore(session)
        rule = store.get("ReplicationRule", tenant, name, lock=True)
        if rule is None:
            return
        pending = list(rule.status.get("pending", []))
        queued = {(p.get("repository"), p.get("tag")) for p in pending}
        pending += [m for m in missing if (m["repository"], m["tag"]) not in queued]
        status = {**rule.status, "pending": pending, "lastSync": now(), "lastError": ""}
        store.write_status(rule, status)


def sync_due(rule: StoredResource) -> bool:
    spec = REPLICATION.typed(rule)
    return spec.schedule is not None and due(
        rule.status.get("lastSync"), spec.schedule.everyMinutes, _utcnow()
    )
