"""The generic use cases every kind shares: authorize, validate, write with optimistic
concurrency, audit in the same transaction, list with filters and pagination.

A kind plugs in through `KindRules`: who may see and change it, how its spec is validated
against the rest of the platform (quota, references), and what else changes with it.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError
from sqlalchemy.orm import Session

from wharf.core import documents
from wharf.core.audit import diff, mask, unmasked
from wharf.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    OutdatedSpecError,
    StaleError,
    WharfError,
)
from wharf.core.resources import API_VERSION, Kind, Manifest, Spec, check_name
from wharf.identity.model import Action, Principal
from wharf.store import Database
from wharf.store.audit import AuditEvent, record
from wharf.store.resources import LabelIn, ResourceStore, Scopes, StoredResource

Verdict = Literal["allow", "forbid", "hide"]
MAX_PAGE = 500
S = TypeVar("S", bound=Spec)


@dataclass(frozen=True)
class Change(Generic[S]):
    """A write about to happen, handed to a kind's rules for validation: the sent spec parsed
    into the kind's model, and the stored one's (None for a new object, and for a row that
    today's rules refuse: the write that replaces it must not fail on it)."""

    session: Session
    principal: Principal
    tenant: str
    name: str
    old: StoredResource | None
    spec: S
    old_spec: S | None = None


@dataclass
class _Audit:
    """The audit event of one write, filled in as the write learns what it did."""

    p: Principal
    action: str
    kind: str
    tenant: str
    name: str
    project: str
    changes: list[dict[str, Any]] | None = None

    def event(self, outcome: str, **extra: Any) -> AuditEvent:
        p = self.p
        return AuditEvent(
            p.user,
            p.source,
            self.action,
            self.kind,
            self.tenant,
            self.name,
            outcome,
            project=self.project,
            **extra,
        )


def _listed_tenants(p: Principal, tenant: str | None) -> set[str] | None:
    """The tenants a listing covers: those the caller sees (None: all), narrowed to `tenant`."""
    tenants = p.visible_tenants()
    if tenant is None:
        return tenants
    return {tenant} if tenants is None or tenant in tenants else set()


def project_scopes(p: Principal, tenant: str | None, label: str) -> Scopes:
    """What a caller may list of a kind owned by projects (its rows carry the project in
    `label`): all of a tenant it reads tenant-wide, else the rows of its projects."""
    tenants = _listed_tenants(p, tenant)
    if tenants is None:
        return [("*", None)]
    scopes: list[tuple[str, LabelIn | None]] = []
    for t in sorted(tenants):
        projects = p.visible_projects(t)
        if projects is None:
            scopes.append((t, None))
        elif projects:
            scopes.append((t, LabelIn(label, frozenset(projects))))
    return scopes


def named_project_scopes(p: Principal, tenant: str | None) -> Scopes:
    """What a caller may list of a kind named after its project (the Project itself, its
    TrafficPolicy): all of a tenant it reads tenant-wide, else the rows of its projects."""
    tenants = _listed_tenants(p, tenant)
    if tenants is None:
        return [("*", None)]
    scopes = [(t, p.visible_projects(t)) for t in sorted(tenants)]
    return [(t, names) for t, names in scopes if names is None or names]


class KindRules(Generic[S]):
    """Defaults for a kind; capabilities subclass and override what differs."""

    kind: Kind[S]
    # Whether the kind owns objects in the clusters: then a delete is recorded (the row is
    # marked, hidden from reads) and the kind's controller finishes it with `finish_delete`
    # after removing those objects; otherwise the row goes at once.
    owns_cluster_objects = False
    # Whether its cluster objects include volumes, which a delete keeps unless asked
    # (deleteVolumes): data outlives a mistaken delete.
    owns_volumes = False

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if self.kind.scope == "platform":
            if p.can(action):
                return "allow"
            return "forbid" if p.can("read") else "hide"
        if not p.sees_tenant(tenant):
            return "hide"
        return "allow" if p.can(action, tenant) else ("forbid" if p.can("read", tenant) else "hide")

    def create_verdict(self, p: Principal, tenant: str, name: str, project: str) -> Verdict:
        """Who may create a new object; there is nothing stored to judge by, only the project
        the manifest names. Asked before the spec is validated, so a refusal tells nothing."""
        return self.verdict(p, "write", tenant, name, None)

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        """(tenant, names or None for all) pairs the caller may list; [] for nothing."""
        if self.kind.scope == "platform":
            return [("", None)] if p.can("read") else []
        tenants = p.visible_tenants()
        if tenant is not None:
            if tenants is not None and tenant not in tenants:
                return []
            return [(tenant, None)]
        return [("*", None)] if tenants is None else [(t, None) for t in sorted(tenants)]

    def validate(self, change: Change[S]) -> S:
        """Check the spec against the rest of the platform; return the spec to store."""
        return change.spec

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        """Refuse a delete that would leave something broken (raise a WharfError)."""

    def after_write(
        self,
        session: Session,
        stored: StoredResource | None,
        old: StoredResource | None,
        p: Principal,
    ) -> None:
        """Keep derived rows (memberships, say) in step; stored is None after a delete."""

    def present_status(self, stored: StoredResource, p: Principal) -> dict[str, Any]:
        return stored.status

    def project_of(self, name: str, spec: Any) -> str:
        """The project an object belongs to ("" for none), recorded with its audit events.
        Asked of the spec as sent, before it is validated (authorization comes first)."""
        return ""

    def audit_tenant(self, tenant: str, name: str) -> str:
        """The tenant an object's audit events belong to (whose admins read them)."""
        return tenant

    def derived_labels(self, spec: S) -> dict[str, str]:
        """Labels the platform sets from the spec, so lists can select on them (-l)."""
        return {}


def encode_continue(tenant: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([tenant, name]).encode()).decode()


def decode_continue(token: str) -> tuple[str, str]:
    try:
        tenant, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(tenant), str(name)
    except (ValueError, TypeError) as exc:
        raise InvalidError("continue: not a token from a previous page", field="continue") from exc


def parse_selector(text: str | None) -> dict[str, str]:
    """`a=b,c=d` (equality only, as `kubectl -l` takes it)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidError(f"labelSelector: {part!r} is not key=value", field="labelSelector")
        out[key.strip()] = value.strip().lstrip("=")
    return out


Listener = Callable[[str, str, str], None]


class ResourceService:
    def __init__(self, db: Database, rules: dict[str, KindRules[Any]]) -> None:
        self.db = db
        self.rules = rules
        self.listeners: list[Listener] = []

    def _changed(self, kind: str, tenant: str, name: str) -> None:
        """Tell controllers (after the commit) which object to look at."""
        for listener in self.listeners:
            listener(kind, tenant, name)

    def notify(self, kind: str, tenant: str, name: str) -> None:
        """Tell controllers about a change made outside the generic writes (a release step)."""
        self._changed(kind, tenant, name)

    def kind_rules(self, kind: str) -> KindRules[Any]:
        for rules in self.rules.values():
            k = rules.kind
            if kind in (k.name, k.plural, *k.short_names) or kind.lower() == k.name.lower():
                return rules
        raise NotFoundError(f"no kind {kind!r}: known kinds are {', '.join(sorted(self.rules))}")

    # -- presentation -----------------------------------------------------------------------
    def present(
        self, rules: KindRules[Any], stored: StoredResource, p: Principal
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": stored.name}
        if rules.kind.scope == "tenant":
            metadata["tenant"] = stored.tenant
        metadata.update(
            labels=stored.labels,
            annotations=stored.annotations,
            uid=stored.uid,
            generation=stored.generation,
            resourceVersion=str(stored.resource_version),
            creationTimestamp=_ts(stored.created_at),
            updateTimestamp=_ts(stored.updated_at),
        )
        # A kind without secrets shows its spec as stored (mask copies it: a cost for each
        # item of a list page).
        secrets = rules.kind.secret_fields
        return {
            "apiVersion": API_VERSION,
            "kind": rules.kind.name,
            "metadata": metadata,
            "spec": mask(stored.spec, secrets) if secrets else stored.spec,
            "status": rules.present_status(stored, p),
        }

    # -- reads ------------------------------------------------------------------------------
    def _visible(
        self,
        rules: KindRules[Any],
        p: Principal,
        action: Action,
        tenant: str,
        name: str,
        old: StoredResource | None,
        project: str | None = None,
    ) -> None:
        """Authorize, before anything about the spec is checked: NotFound for what the caller
        may not know of, Forbidden for what it may only read. `project` is the one a new
        object's manifest names (None where there is no manifest: reads and deletes)."""
        verdict = (
            rules.create_verdict(p, tenant, name, project)
            if old is None and action == "write" and project is not None
            else rules.verdict(p, action, tenant, name, old)
        )
        if verdict == "hide" or (old is None and action == "read"):
            raise NotFoundError(_not_found(rules.kind, tenant, name))
        if verdict == "forbid":
            raise ForbiddenError(
                f"{p.user} may not {'change' if action == 'write' else 'read'} "
                f"{rules.kind.name} {name!r}"
            )

    def get(self, p: Principal, kind: str, tenant: str, name: str) -> dict[str, Any]:
        rules = self.kind_rules(kind)
        tenant = self._tenant(rules, tenant)
        with self.db.reader() as session:
            stored = ResourceStore(session).get(rules.kind.name, tenant, name)
            self._visible(rules, p, "read", tenant, name, stored)
            assert stored is not None  # _visible answers 404 for a missing one
            return self.present(rules, stored, p)

    def read(self, p: Principal, kind: Kind[S], tenant: str, name: str) -> tuple[dict[str, Any], S]:
        """An object as `get` answers it, and its spec as the kind's model, from one read
        authorized as `get`. The typed spec holds secrets as stored (sealed): it is for the
        caller's decisions, the answer is what to show."""
        rules = self.kind_rules(kind.name)
        tenant = self._tenant(rules, tenant)
        with self.db.reader() as session:
            stored = ResourceStore(session).get(kind.name, tenant, name)
            self._visible(rules, p, "read", tenant, name, stored)
            assert stored is not None  # _visible answers 404 for a missing one
            return self.present(rules, stored, p), kind.typed(stored)

    def list_(
        self,
        p: Principal,
        kind: str,
        tenant: str | None = None,
        selector: str | None = None,
        limit: int = 100,
        continue_: str | None = None,
    ) -> dict[str, Any]:
        rules = self.kind_rules(kind)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidError(f"limit: must be between 1 and {MAX_PAGE}", field="limit")
        labels = parse_selector(selector)
        after = decode_continue(continue_) if continue_ else None
        scopes = rules.visible_scopes(p, tenant if rules.kind.scope == "tenant" else None)
        items: list[dict[str, Any]] = []
        next_token = None
        if scopes:
            with self.db.reader() as session:
                rows = ResourceStore(session).query(
                    rules.kind.name, scopes=scopes, selector=labels, limit=limit + 1, after=after
                )
                for stored in rows[:limit]:
                    items.append(self.present(rules, stored, p))
                if len(rows) > limit:
                    last = rows[limit - 1]
                    next_token = encode_continue(last.tenant, last.name)
        return {
            "apiVersion": API_VERSION,
            "kind": f"{rules.kind.name}List",
            "metadata": {"continue": next_token},
            "items": items,
        }

    # -- writes -----------------------------------------------------------------------------
    @contextmanager
    def _audited(
        self, p: Principal, action: str, rules: KindRules[Any], tenant: str, name: str, project: str
    ) -> Iterator[tuple[Session, _Audit]]:
        """A transaction whose audit event commits with it; a refusal is audited on its own.

        The body sets `audit.changes` when it changed something (and may learn the project)."""
        kind = rules.kind.name
        audit = _Audit(p, action, kind, rules.audit_tenant(tenant, name), name, project)
        try:
            with self.db.session() as session:
                yield session, audit
                if audit.changes is not None:
                    record(session, audit.event("allowed", diff=audit.changes))
        except WharfError as exc:
            outcome = "denied" if exc.status in (401, 403, 404) else "failed"
            with self.db.session() as session:
                record(session, audit.event(outcome, reason=exc.message))
            raise

    def apply(
        self,
        p: Principal,
        body: dict[str, Any],
        tenant: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        create_only: bool = False,
        seen: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create or update from a whole manifest; return (object, created).

        The row is locked from read to write, so a manifest without metadata.resourceVersion
        always lands on what is there (as kubectl apply does); one that pins a stale
        resourceVersion fails with 409. `seen` (the console's editor: `edit_mark` of what it
        showed) refuses a spec, labels or annotations changed since; status writes do not count.
        """
        if documents.nesting(body) > documents.MAX_DEPTH:
            raise InvalidError(
                f"the manifest nests deeper than {documents.MAX_DEPTH} levels", field="spec"
            )
        try:
            manifest = Manifest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise InvalidError(f"{where}: {first['msg']}", field=where) from None
        if manifest.apiVersion != API_VERSION:
            raise InvalidError(
                f"apiVersion: {manifest.apiVersion!r} is not served here; use {API_VERSION}",
                field="apiVersion",
            )
        rules = self.kind_rules(manifest.kind)
        if kind is not None and self.kind_rules(kind) is not rules:
            raise InvalidError(
                f"kind: the body is a {manifest.kind}, the URL is for {kind}", field="kind"
            )
        if name is not None and manifest.metadata.name != name:
            raise InvalidError(
                f"metadata.name: {manifest.metadata.name!r} does not match the URL's {name!r}",
                field="metadata.name",
            )
        tenant = self._tenant(rules, tenant if tenant is not None else manifest.metadata.tenant)
        name = check_name(manifest.metadata.name)
        expected = manifest.metadata.resourceVersion
        project = rules.project_of(name, manifest.spec)
        with self._audited(p, "apply", rules, tenant, name, project) as (session, audit):
            store = ResourceStore(session)
            old = store.get(rules.kind.name, tenant, name, lock=True, with_deleting=True)
            self._visible(rules, p, "write", tenant, name, old, project)
            if old is not None and old.deleting_since is not None:
                raise ConflictError(
                    f"{rules.kind.name} {name!r} is being deleted (what it owned in the "
                    "clusters is being removed): apply it again once that is done",
                    field="metadata.name",
                )
            if old is not None and create_only:
                raise ConflictError(
                    f"{rules.kind.name} {name!r} already exists", field="metadata.name"
                )
            if seen is not None:
                _check_seen(rules.kind.name, name, old, seen)
            # A secret sent back masked means "unchanged": put the kept value back before
            # parsing, so that `get` then `apply` round-trips.
            sent = self._keep_secrets(rules, copy.deepcopy(manifest.spec), old)
            change = Change(
                session, p, tenant, name, old, rules.kind.parse_spec(sent), _old_spec(rules, old)
            )
            typed = rules.validate(change)
            spec = rules.kind.dump(typed)
            labels = {**manifest.metadata.labels, **rules.derived_labels(typed)}
            annotations = manifest.metadata.annotations
            if old is None:
                stored = store.create(
                    rules.kind.name, tenant, name, labels=labels, annotations=annotations, spec=spec
                )
                action_diff = diff({}, mask(spec, rules.kind.secret_fields))
            else:
                stored = store.update(
                    old,
                    labels=labels,
                    annotations=annotations,
                    spec=spec,
                    expected_version=int(expected) if expected else None,
                )
                action_diff = diff(
                    {"spec": mask(old.spec, rules.kind.secret_fields), "labels": old.labels},
                    {"spec": mask(spec, rules.kind.secret_fields), "labels": labels},
                )
            changed = stored is not old
            if changed:
                rules.after_write(session, stored, old, p)
                audit.changes = action_diff
            result = self.present(rules, stored, p), old is None
        if changed:
            self._changed(rules.kind.name, tenant, name)
        return result

    def delete(
        self,
        p: Principal,
        kind: str,
        tenant: str,
        name: str,
        confirm: str | None = None,
        delete_volumes: bool = False,
    ) -> dict[str, Any]:
        rules = self.kind_rules(kind)
        tenant = self._tenant(rules, tenant)
        with self._audited(p, "delete", rules, tenant, name, "") as (session, audit):
            store = ResourceStore(session)
            old = store.get(rules.kind.name, tenant, name, lock=True)
            if old is not None:
                audit.project = rules.project_of(name, old.spec)
            self._visible(rules, p, "write", tenant, name, old)
            if old is None:
                raise NotFoundError(_not_found(rules.kind, tenant, name))
            if confirm != name:
                raise InvalidError(
                    f"deleting {rules.kind.name} {name!r} needs confirm={name} (it removes "
                    "what it owns in the clusters too)",
                    field="confirm",
                )
            if delete_volumes and not rules.owns_volumes:
                raise InvalidError(
                    f"deleteVolumes: a {rules.kind.name} has no volumes", field="deleteVolumes"
                )
            rules.before_delete(session, p, old)
            if rules.owns_cluster_objects:
                # Committed before the answer: a crash cannot lose it, nor the choice made.
                how = {DELETE_VOLUMES: "true"} if delete_volumes else None
                store.mark_deleting(old, how)
            else:
                store.delete(old)
            rules.after_write(session, None, old, p)
            audit.changes = diff({"spec": mask(old.spec, rules.kind.secret_fields)}, {})
            result = self.present(rules, old, p)
            if rules.owns_volumes:
                result["status"] = {
                    **result.get("status", {}),
                    "deletion": _volumes(delete_volumes),
                }
        self._changed(rules.kind.name, tenant, name)
        return result

    # -- controllers ------------------------------------------------------------------------
    def write_status(
        self, kind: str, tenant: str, name: str, build: Callable[[StoredResource], dict[str, Any]]
    ) -> StoredResource | None:
        """Compute and store a new status from the current row; no write when unchanged."""
        with self.db.session() as session:
            store = ResourceStore(session)
            stored = store.get(kind, tenant, name, lock=True)
            if stored is None:
                return None
            return store.write_status(stored, build(stored))

    def finish_delete(self, kind: str, tenant: str, name: str, uid: str) -> bool:
        """Drop the row of a delete whose cluster objects are gone (the same object only:
        `uid`); False when it is not (or no longer) being deleted."""
        with self.db.session() as session:
            store = ResourceStore(session)
            stored = store.get(kind, tenant, name, lock=True, with_deleting=True)
            if stored is None or stored.uid != uid or stored.deleting_since is None:
                return False
            store.delete(stored)
            return True

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _tenant(rules: KindRules[Any], tenant: str | None) -> str:
        if rules.kind.scope == "platform":
            return ""
        if not tenant:
            raise InvalidError(
                f"metadata.tenant: a {rules.kind.name} belongs to a tenant; name it",
                field="metadata.tenant",
            )
        return check_name(tenant, "metadata.tenant")

    @staticmethod
    def _keep_secrets(
        rules: KindRules[Any], spec: dict[str, Any], old: StoredResource | None
    ) -> dict[str, Any]:
        """A secret sent back masked (as `get` shows it) means "unchanged", not a new value."""
        if old is None:
            return spec
        masked_old = mask(old.spec, rules.kind.secret_fields) or {}
        for dotted in rules.kind.secret_fields:
            *parents, leaf = dotted.split(".")
            node, old_node, masked_node = spec, old.spec, masked_old
            for part in parents:
                node = node.get(part, {}) if isinstance(node, dict) else {}
                old_node = old_node.get(part, {}) if isinstance(old_node, dict) else {}
                masked_node = masked_node.get(part, {}) if isinstance(masked_node, dict) else {}
            if isinstance(node, dict) and leaf in node and isinstance(masked_node, dict):
                node[leaf] = unmasked(node[leaf], masked_node.get(leaf), old_node.get(leaf))
        return spec


def edit_mark(generation: int, labels: dict[str, str], annotations: dict[str, str]) -> str:
    """What an editor showed of an object: its spec's generation, and a digest of its labels
    and annotations, which move no generation (cluster labels place workloads)."""
    metadata = json.dumps([labels, annotations], sort_keys=True).encode()
    return f"{generation}-{hashlib.sha256(metadata).hexdigest()[:16]}"


def _check_seen(kind: str, name: str, old: StoredResource | None, seen: str) -> None:
    """An edit lands only on the object as its editor showed it (`edit_mark`)."""
    if old is None:
        raise StaleError(
            f"{kind} {name!r} was deleted since you opened it: nothing was changed",
            field="metadata.name",
        )
    if edit_mark(old.generation, old.labels, old.annotations) != seen:
        what = "its spec" if not seen.startswith(f"{old.generation}-") else "its labels"
        raise StaleError(
            f"{kind} {name!r} was changed by someone else since you opened it ({what} or "
            "annotations, say): nothing was changed; open it again and redo your change",
            field="metadata" if what == "its labels" else "spec",
        )


def _old_spec(rules: KindRules[S], old: StoredResource | None) -> S | None:
    """The stored spec as the kind's model; None for a row today's rules refuse, so that
    applying a valid spec over it repairs it instead of failing on it."""
    if old is None:
        return None
    try:
        return rules.kind.typed(old)
    except OutdatedSpecError:
        return None


def _ts(value: dt.datetime) -> str:
    # Naive values are UTC (SQLite keeps no zone). Two of these per item of a list page: the
    # common case is formatted without making a zoned copy first.
    if value.tzinfo is None or not value.utcoffset():
        return value.isoformat(timespec="seconds")[:19] + "Z"
    return value.isoformat(timespec="seconds")


# On an object being deleted: its volumes go too (the caller asked, deleteVolumes).
DELETE_VOLUMES = "wharf.io/delete-volumes"


def _volumes(deleted: bool) -> dict[str, str]:
    """What a delete answers about the object's volumes."""
    if deleted:
        return {"volumes": "deleted", "message": "its volumes are deleted with it"}
    return {
        "volumes": "kept",
        "message": "its volumes (PersistentVolumeClaims) are kept in every cluster; delete "
        "with deleteVolumes=true (wharf delete ... --delete-volumes) to remove them too",
    }


def _not_found(kind: Kind[Any], tenant: str, name: str) -> str:
    where = f" in tenant {tenant!r}" if kind.scope == "tenant" else ""
    return f"{kind.name} {name!r} not found{where}"
