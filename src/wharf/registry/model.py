"""Registries, robot accounts, and who may pull and push which repository, as pure rules.

Repository names follow tenants and projects: `<tenant>/<project>/<image>`. A token request
names scopes (`repository:<name>:<actions>`, Docker registry token spec); Wharf grants the
intersection of what was asked and what the requester may do here, and nothing for a name
that is not of that shape — except the platform's shared prefixes, which every signed-in
caller may pull.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, StringConstraints, field_validator

from wharf.core.errors import InvalidError
from wharf.core.resources import NAME_RE, Kind, Spec
from wharf.identity.model import Principal

# The distribution reference grammar (docker/distribution reference/regexp.go), lowercase.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
REPOSITORY_RE = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
IMAGE_PATTERN = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"  # a name inside a project
PREFIX_PATTERN = rf"^{_COMPONENT}(?:/{_COMPONENT})*/?$"
URL_PATTERN = r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?/?$"
ImageName = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=200)]
Prefix = Annotated[str, StringConstraints(pattern=PREFIX_PATTERN, max_length=200)]
_ACTION_RE = re.compile(r"^[a-z*]+$")
# Docker's reference grammar: a tag, and a digest (algorithm:hex)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
MAX_NAME = 255  # distribution refuses longer repository names
ACTIONS = ("pull", "push", "delete")
Access = Literal["pull", "push"]
ROBOT_PREFIX = "robot$"  # usernames of robot accounts: robot$<tenant>+<robot>
PULL_PREFIX = "pull$"  # the clusters' pull identity of a project: pull$<tenant>+<project>


class RegistrySpec(Spec):
    """An OCI registry that trusts Wharf as its token server."""

    url: str = Field(
        pattern=URL_PATTERN,
        description="Where clients reach the registry: http(s)://host[:port], no path; "
        "its host[:port] starts image references (127.0.0.1:5000/<tenant>/<project>/<image>)",
    )
    service: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="The service name the registry announces (auth.token.service): the "
        "audience of the tokens Wharf signs for it",
    )
    kind: Literal["distribution"] = Field(
        default="distribution",
        description="What serves the registry: distribution (CNCF, Debian's docker-registry)",
    )
    shared: list[Prefix] = Field(
        default_factory=list,
        description="Repository prefixes outside every tenant (base images, e.g. library/) "
        "that every signed-in user may pull; only platform admins push there",
    )
    description: str = Field(default="", description="What the registry is for, for people")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return url.rstrip("/")

    @property
    def host(self) -> str:
        """host[:port], as image references and docker config `auths` name the registry."""
        return urlsplit(self.url).netloc


class ProjectOwned(Spec):
    """A spec that belongs to one project of its tenant."""

    project: str = Field(description="The project it belongs to")


class RobotSpec(ProjectOwned):
    """A project's robot account: for CI systems to push or clusters to pull, until it expires."""

    project: str = Field(description="The project whose repositories the robot reaches")
    access: list[Access] = Field(
        default_factory=lambda: list[Access](["pull"]),
        min_length=1,
        description="What it may do there: pull, push (push includes nothing else)",
    )
    images: list[ImageName] = Field(
        default_factory=list,
        description="Image names inside the project it is limited to (empty: all of them)",
    )
    expiresAt: dt.datetime | None = Field(
        default=None, description="When it stops working (RFC 3339); never, when omitted"
    )
    description: str = Field(default="", description="What it is for, for people")

    @field_validator("expiresAt")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


REGISTRY = Kind(
    name="Registry",
    plural="registries",
    scope="platform",
    spec=RegistrySpec,
    short_names=("registry", "reg"),
    columns=(("URL", "spec.url"), ("SERVICE", "spec.service")),
)
ROBOT = Kind(
    name="Robot",
    plural="robots",
    scope="tenant",
    spec=RobotSpec,
    short_names=("robot",),
    columns=(("PROJECT", "spec.project"), ("ACCESS", "spec.access"), ("EXPIRES", "spec.expiresAt")),
)


# -- scopes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """One `type:name:actions` a client asked for."""

    type: str
    name: str
    actions: tuple[str, ...]

    def granted(self, actions: set[str]) -> dict[str, object]:
        """The token's `access` entry for what of this scope is granted."""
        return {
            "type": self.type,
            "name": self.name,
            "actions": [a for a in self.actions if a in actions],
        }


def parse_scope(text: str) -> Scope:
    """`repository:<name>:pull,push`; the name may hold a `host:port`, so the type ends at the
    first colon and the actions start after the last (as distribution splits it)."""
    type_, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not re.fullmatch(r"[a-z0-9]+(\([a-z0-9]+\))?", type_):
        raise InvalidError(
            f"scope: {text!r} is not <type>:<name>:<actions> (e.g. repository:team/app:pull)",
            field="scope",
        )
    if type_.startswith("repository") and (
        len(name) > MAX_NAME or not REPOSITORY_RE.fullmatch(name) or name != name.lower()
    ):
        raise InvalidError(
            f"scope: {name!r} is not a repository name (lowercase components of letters and "
            "digits, separated by '/', '.', '_' or '-', at most 255 characters)",
            field="scope",
        )
    listed = tuple(a for a in actions.split(","))
    if not listed or not all(_ACTION_RE.fullmatch(a) for a in listed):
        raise InvalidError(
            f"scope: {actions!r} is not a comma-separated list of actions (pull, push, …)",
            field="scope",
        )
    return Scope(type_, name, listed)


def parse_scopes(values: list[str]) -> list[Scope]:
    """Every scope of a request: repeated `scope=` parameters, each maybe space-separated."""
    return [parse_scope(s) for value in values for s in value.split(" ") if s]


@dataclass(frozen=True)
class Repository:
    """Where a repository name falls: tenant, project and image (all "" when it is not
    `<tenant>/<project>/<image>`)."""

    name: str
    tenant: str = ""
    project: str = ""
    image: str = ""


def locate(name: str) -> Repository:
    """A name's tenant, project and image. A leading component that looks like a host
    (holds '.' or ':', or is localhost) is a registry's address, as Docker reads it."""
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) < 3 or not all(NAME_RE.fullmatch(p) for p in parts[:2]):
        return Repository(name)
    return Repository(name, parts[0], parts[1], "/".join(parts[2:]))


# -- who asks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RobotAccount:
    """A robot (or a project's pull identity) as the token server sees it."""

    username: str
    tenant: str
    project: str
    access: frozenset[str]
    images: frozenset[str] = field(default_factory=frozenset)


Requester = Principal | RobotAccount


def robot_username(tenant: str, robot: str) -> str:
    return f"{ROBOT_PREFIX}{tenant}+{robot}"


def pull_username(tenant: str, project: str) -> str:
    return f"{PULL_PREFIX}{tenant}+{project}"


def split_account(username: str, prefix: str) -> tuple[str, str] | None:
    """(tenant, name) of `<prefix><tenant>+<name>`, or None."""
    if not username.startswith(prefix):
        return None
    tenant, sep, name = username[len(prefix) :].partition("+")
    if not sep or not NAME_RE.fullmatch(tenant) or not NAME_RE.fullmatch(name):
        return None
    return tenant, name


def subject(who: Requester) -> str:
    return who.username if isinstance(who, RobotAccount) else who.user


def _user_actions(p: Principal, repo: Repository) -> set[str]:
    actions = set()
    if p.can("read", repo.tenant, repo.project):
        actions.add("pull")
    if p.can_deliver(repo.tenant, repo.project):
        actions.add("push")  # developers and above; never through a read-only token
    if p.can("write", repo.tenant, repo.project):
        actions.add("delete")  # project admins and above
    return actions


def _shared(name: str, shared: list[str]) -> bool:
    return any(name == p.rstrip("/") or name.startswith(p.rstrip("/") + "/") for p in shared)


def allowed_actions(who: Requester, scope: Scope, shared: list[str]) -> set[str]:
    """What of `scope` the requester may do (the registry refuses the rest itself)."""
    if scope.type != "repository":
        admin = isinstance(who, Principal) and who.can("write")
        return set(scope.actions) & {"*"} if admin and scope.name == "catalog" else set()
    repo = locate(scope.name)
    if _shared(scope.name, shared):
        admin = isinstance(who, Principal) and who.can("write")
        return {"pull", "push", "delete"} if admin else {"pull"}
    if not repo.tenant or repo.name.count("/") != repo.image.count("/") + 2:
        # `x.y/<tenant>/…`: clients never send the registry's host in a scope, and such a
        # repository would shadow the project's outside its listing, retention and immutable
        # tags.
        return set()
    if isinstance(who, RobotAccount):
        if (who.tenant, who.project) != (repo.tenant, repo.project):
            return set()
        if who.images and repo.image not in who.images:
            return set()
        return set(who.access)
    return _user_actions(who, repo)


def grant(who: Requester, scopes: list[Scope], shared: list[str]) -> list[dict[str, object]]:
    """The token's `access` claim: each asked scope cut down to what is allowed."""
    return [s.granted(allowed_actions(who, s, shared)) for s in scopes]


# -- schedules -----------------------------------------------------------------------------
class Schedule(Spec):
    """How often a controller does the work on its own (checked at every controller tick)."""

    everyMinutes: int = Field(ge=1, le=527040, description="Minutes between two runs")


class RetentionSchedule(Schedule):
    delete: bool = Field(
        default=False,
        description="Delete what the policy does not keep; false: a dry run, whose report "
        "is kept in status.lastRun",
    )


def due(last: str | None, every_minutes: int, now: dt.datetime) -> bool:
    """Whether a scheduled run is due: never run, or `every_minutes` since the last."""
    if not last:
        return True
    try:
        then = dt.datetime.fromisoformat(last.replace("Z", "+00:00"))
    except ValueError:
        return True
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    return now - then >= dt.timedelta(minutes=every_minutes)


# -- retention -----------------------------------------------------------------------------
class RetentionSpec(ProjectOwned):
    """Which of a project's tags to keep; the rest are deleted from its registries."""

    project: str = Field(description="The project whose repositories the policy cleans")
    repositories: list[ImageName] = Field(
        default_factory=list,
        description="Image names inside the project it applies to (empty: all of them)",
    )
    keepLast: int = Field(
        default=10, ge=0, le=10000, description="Keep the N most recently pushed tags of each image"
    )
    keepTags: list[str] = Field(
        default_factory=list,
        description="Regular expressions (whole tag): matching tags are always kept",
    )
    schedule: RetentionSchedule | None = Field(
        default=None, description="Run on its own every so often (default: only when asked)"
    )


RETENTION = Kind(
    name="RetentionPolicy",
    plural="retentionpolicies",
    scope="tenant",
    spec=RetentionSpec,
    short_names=("retention",),
    columns=(("PROJECT", "spec.project"), ("KEEP", "spec.keepLast")),
)


@dataclass(frozen=True)
class TagState:
    """A tag as a registry holds it, and when it was pushed ("" when not known)."""

    repository: str
    tag: str
    digest: str
    pushed: str = ""


@dataclass(frozen=True)
class Decision:
    tag: TagState
    keep: bool
    reason: str


def _keep_reason(
    state: TagState, rank: int, keep_last: int, patterns: list[re.Pattern[str]], in_use: set[str]
) -> str:
    if f"{state.repository}:{state.tag}" in in_use or state.digest in in_use:
        return "used by a delivered application revision"
    if rank < keep_last:
        return f"one of the {keep_last} most recently pushed"
    for pattern in patterns:
        if pattern.fullmatch(state.tag):
            return f"matches {pattern.pattern}"
    return ""


def plan_retention(
    tags: list[TagState], keep_last: int, patterns: list[re.Pattern[str]], in_use: set[str]
) -> list[Decision]:
    """Keep or delete each tag, with why. A manifest's deletion removes every tag on its
    digest, so a tag whose digest another kept tag holds is kept too."""
    decisions: list[Decision] = []
    repositories = sorted({t.repository for t in tags})
    for repository in repositories:
        mine = [t for t in tags if t.repository == repository]
        newest = sorted(mine, key=lambda t: (t.pushed, t.tag), reverse=True)
        for rank, state in enumerate(newest):
            reason = _keep_reason(state, rank, keep_last, patterns, in_use)
            decisions.append(Decision(state, bool(reason), reason or "not kept by any rule"))
    kept = {(d.tag.repository, d.tag.digest) for d in decisions if d.keep}
    return [
        Decision(d.tag, True, "its digest is also a kept tag's")
        if not d.keep and (d.tag.repository, d.tag.digest) in kept
        else d
        for d in decisions
    ]


def image_references(value: object, host: str) -> set[str]:
    """`<repository>:<tag>` and digests of every `<host>/…` image named anywhere in a spec."""
    found: set[str] = set()
    if isinstance(value, dict):
        for item in value.values():
            found |= image_references(item, host)
    elif isinstance(value, list):
        for item in value:
            found |= image_references(item, host)
    elif isinstance(value, str) and value.startswith(f"{host}/"):
        ref = value[len(host) + 1 :]
        name, at, digest = ref.partition("@")
        if at:
            found.add(digest)
        repository, colon, tag = name.rpartition(":")
        if colon and "/" not in tag:
            found.add(f"{repository}:{tag}")
    return found


# -- immutable tags ----------------------------------------------------------------------------
class ImmutableTagsSpec(ProjectOwned):
    """Tags of a project's images that, once pushed, keep their content: a push that moves one
    is taken back (the tag is restored to its digest) and reported."""

    project: str = Field(description="The project whose tags are protected")
    repositories: list[ImageName] = Field(
        default_factory=list,
        description="Image names inside the project it applies to (empty: all of them)",
    )
    tags: list[str] = Field(
        min_length=1, description="Regular expressions (whole tag): matching tags are immutable"
    )


IMMUTABLE_TAGS = Kind(
    name="ImmutableTags",
    plural="immutabletags",
    scope="tenant",
    spec=ImmutableTagsSpec,
    short_names=("immutable",),
    columns=(("PROJECT", "spec.project"), ("TAGS", "spec.tags")),
)


def immutable(specs: list[ImmutableTagsSpec], image: str, tag: str) -> str:
    """The pattern that makes `image:tag` immutable ("" for none); patterns that do not
    compile were refused when the spec was written, and are passed over here."""
    for spec in specs:
        if spec.repositories and image not in spec.repositories:
            continue
        for text in spec.tags:
            try:
                if re.fullmatch(text, tag):
                    return text
            except re.error:
                continue
    return ""


# -- replication ---------------------------------------------------------------------------
class ReplicationSpec(ProjectOwned):
    """Copy a project's images from one registry to another as they are pushed."""

    project: str = Field(description="The project whose repositories are copied")
    source: str = Field(description="The registry pushes are copied from")
    target: str = Field(description="The registry they are copied to (a mirror near a cluster)")
    repositories: list[ImageName] = Field(
        default_factory=list,
        description="Image names inside the project it copies (empty: all of them)",
    )
    schedule: Schedule | None = Field(
        default=None,
        description="Also compare source and target every so often and copy what differs "
        "(what the push notifications missed); default: on push only",
    )


REPLICATION = Kind(
    name="ReplicationRule",
    plural="replicationrules",
    scope="tenant",
    spec=ReplicationSpec,
    short_names=("replication",),
    columns=(("PROJECT", "spec.project"), ("SOURCE", "spec.source"), ("TARGET", "spec.target")),
)


# -- signatures ------------------------------------------------------------------------------
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_TYPE = "cosign container image signature"


class SigningKey(Spec):
    """A key the project's images may be signed with (cosign's `cosign.pub`)."""

    name: str = Field(min_length=1, max_length=63, description="What the key is, for people")
    # That it is an ECDSA key is a rule of the kind (SignaturePolicyRules.check), not of the
    # schema: JSON Schema cannot state it, so the schema would allow what the model refused.
    publicKey: str = Field(
        max_length=4096, description="PEM of an ECDSA public key (cosign generate-key-pair)"
    )


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """An ECDSA public key from PEM; a ValueError that says what is wrong otherwise."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an ECDSA key: cosign keys (generate-key-pair) are ECDSA P-256")
    return key


class SignaturePolicySpec(ProjectOwned):
    """Images a project delivers must carry a cosign signature by one of these keys."""

    project: str = Field(description="The project whose deliveries need signed images")
    keys: list[SigningKey] = Field(
        min_length=1, max_length=20, description="Public keys a signature may be made with"
    )
    description: str = Field(default="", description="Why, for people")


SIGNATURE_POLICY = Kind(
    name="SignaturePolicy",
    plural="signaturepolicies",
    scope="tenant",
    spec=SignaturePolicySpec,
    short_names=("signatures",),
    columns=(("PROJECT", "spec.project"), ("KEYS", "spec.keys")),
)


@dataclass(frozen=True)
class ImageRef:
    """An image reference split as Docker reads it; `reference` is the digest when pinned,
    otherwise the tag."""

    host: str
    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return self.digest or self.tag


def parse_image(image: str) -> ImageRef | None:
    """`host[:port]/repo[:tag][@digest]` (tag `latest` when neither is given); None for a
    reference without a registry host (Docker Hub) or one that is not a reference at all."""
    name, _, digest = image.partition("@")
    host, sep, path = name.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        return None
    repository, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        repository, tag = path, ""
    if not REPOSITORY_RE.fullmatch(repository) or repository != repository.lower():
        return None
    if (tag and not _TAG_RE.fullmatch(tag)) or (digest and not _DIGEST_RE.fullmatch(digest)):
        return None  # what is checked must be what the cluster pulls: no path tricks
    return ImageRef(host, repository, tag or ("" if digest else "latest"), digest)


def signature_tag(digest: str) -> str:
    """Where cosign stores an image's signatures: the tag `sha256-<hex>.sig`."""
    return digest.replace(":", "-", 1) + ".sig"


def signature_problem(payload: bytes, signature: str, keys: list[SigningKey], digest: str) -> str:
    """Why one cosign simple-signing layer does not sign `digest` with one of `keys` ("" when
    it does): the ECDSA signature over the payload, then the digest the payload names."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return "its signature annotation is not base64"
    signer = next((k.name for k in keys if _verifies(k, raw, payload)), None)
    if signer is None:
        return "not signed by any of the project's keys"
    try:
        critical = json.loads(payload)["critical"]
        kind, signed = critical["type"], critical["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return f"signed by {signer}, but the payload is not a cosign simple-signing payload"
    if kind != COSIGN_TYPE:
        return f"signed by {signer}, but the payload's type is {kind!r}"
    if signed != digest:
        return f"signed by {signer} for another image ({signed})"
    return ""


def _verifies(key: SigningKey, signature: bytes, payload: bytes) -> bool:
    try:
        load_public_key(key.publicKey).verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):  # ValueError: a key stored before the check
        return False
    return True
