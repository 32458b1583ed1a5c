"""Who may see and change clusters and node pools, and how a kubeconfig is kept (sealed)."""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy.orm import Session

from wharf.clusters.model import CLUSTER, NODE_POOL
from wharf.core.crypto import SecretBox
from wharf.core.errors import ConflictError, InvalidError
from wharf.identity.model import Action, Principal
from wharf.resources.service import Change, KindRules, Verdict
from wharf.store.resources import ResourceStore, StoredResource


def _platform_verdict(p: Principal, action: Action) -> Verdict:
    # Clusters are platform infrastructure: tenants learn of theirs through their Tenant.
    if p.can(action):
        return "allow"
    return "forbid" if p.can("read") else "hide"


def parse_kubeconfig(text: str) -> dict[str, Any]:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidError(
            f"spec.kubeconfig: not valid YAML: {exc}", field="spec.kubeconfig"
        ) from None
    if not isinstance(config, dict) or config.get("kind") != "Config":
        raise InvalidError(
            "spec.kubeconfig: not a kubeconfig (kind: Config)", field="spec.kubeconfig"
        )
    current = config.get("current-context")
    contexts = {c.get("name"): c.get("context", {}) for c in config.get("contexts") or []}
    clusters = {c.get("name"): c.get("cluster", {}) for c in config.get("clusters") or []}
    if current not in contexts:
        raise InvalidError(
            f"spec.kubeconfig: current-context {current!r} is not among its contexts",
            field="spec.kubeconfig",
        )
    server = clusters.get(contexts[current].get("cluster"), {}).get("server", "")
    if not str(server).startswith("https://"):
        raise InvalidError(
            "spec.kubeconfig: the current context's cluster needs an https:// server",
            field="spec.kubeconfig",
        )
    return config


class ClusterRules(KindRules):
    kind = CLUSTER
    owns_cluster_objects = True  # what Wharf put there (node pool taints, labelled objects)

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        return _platform_verdict(p, action)

    def validate(self, change: Change) -> dict[str, Any]:
        spec = dict(change.spec)
        text = spec["kubeconfig"]
        if text.startswith("fernet:") and change.old is not None:
            return spec  # unchanged: the caller sent back what it read
        parse_kubeconfig(text)
        if change.old is not None:
            try:
                if self.box.open(change.old.spec["kubeconfig"]) == text:
                    spec["kubeconfig"] = change.old.spec["kubeconfig"]
                    return spec
            except ValueError:
                pass
        spec["kubeconfig"] = self.box.seal(text)
        return spec

    def kubeconfig(self, stored: StoredResource) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.box.open(stored.spec["kubeconfig"]))
        return config

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        users = [
            t.name
            for t in ResourceStore(session).query("Tenant")
            if old.name in t.spec.get("clusters", [])
        ]
        if users:
            raise ConflictError(
                f"cluster {old.name!r} is still granted to tenant(s) {', '.join(users)}: "
                "remove it from their spec.clusters first"
            )

    def after_write(
        self,
        session: Session,
        stored: StoredResource | None,
        old: StoredResource | None,
        p: Principal,
    ) -> None:
        if stored is None and old is not None:
            # A cluster leaves with its node pools: their taints go with what Wharf put there.
            store = ResourceStore(session)
            for pool in store.query("NodePool"):
                if pool.spec.get("cluster") == old.name:
                    store.mark_deleting(pool)


class NodePoolRules(KindRules):
    kind = NODE_POOL
    owns_cluster_objects = True  # the taints it put on its nodes

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        return _platform_verdict(p, action)

    def validate(self, change: Change) -> dict[str, Any]:
        cluster = change.spec["cluster"]
        if ResourceStore(change.session).get("Cluster", "", cluster) is None:
            raise InvalidError(f"spec.cluster: no cluster {cluster!r}", field="spec.cluster")
        for i, tenant in enumerate(change.spec.get("tenants", [])):
            if ResourceStore(change.session).get("Tenant", "", tenant) is None:
                raise InvalidError(
                    f"spec.tenants[{i}]: no tenant {tenant!r}", field=f"spec.tenants[{i}]"
                )
        return change.spec
