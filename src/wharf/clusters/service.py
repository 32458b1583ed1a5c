"""Who may see and change clusters and node pools, and how a kubeconfig is kept (sealed)."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from sqlalchemy.orm import Session

from wharf.clusters.model import (
    CLUSTER,
    NODE_POOL,
    ClusterSpec,
    NodePoolSpec,
    TenantGrants,
    pool_place,
)
from wharf.core import documents
from wharf.core.crypto import SealError, SecretBox, place
from wharf.core.errors import ConflictError, InvalidError
from wharf.core.resources import spec_of
from wharf.identity.model import Action, Principal
from wharf.kube.kubeconfig import AddressPolicy, KubeconfigRefused, cluster_config
from wharf.resources.service import Change, KindRules, Verdict
from wharf.store.resources import ResourceStore, StoredResource


def _platform_verdict(p: Principal, action: Action) -> Verdict:
    # Clusters are platform infrastructure: tenants learn of theirs through their Tenant.
    if p.can(action):
        return "allow"
    return "forbid" if p.can("read") else "hide"


def parse_kubeconfig(text: str, policy: AddressPolicy) -> dict[str, Any]:
    """A kubeconfig Wharf will use (see wharf.kube.kubeconfig); 422 naming the path otherwise."""
    try:
        config = documents.load(text)
    except yaml.YAMLError as exc:
        raise InvalidError(
            f"spec.kubeconfig: not valid YAML: {exc}", field="spec.kubeconfig"
        ) from None
    try:
        cluster_config(config, policy)
    except KubeconfigRefused as exc:
        raise InvalidError(
            f"spec.kubeconfig: {exc}", field="spec.kubeconfig", path=exc.path
        ) from None
    assert isinstance(config, dict)  # cluster_config accepts maps only
    return config


def _place(name: str) -> str:
    return place(CLUSTER.name, "", name, "spec.kubeconfig")


KUBECONFIG_CACHE = 256  # opened kubeconfigs kept (by cluster and sealed value)


class ClusterRules(KindRules[ClusterSpec]):
    kind = CLUSTER
    owns_cluster_objects = True  # what Wharf put there (node pool taints, labelled objects)

    def __init__(self, box: SecretBox, policy: AddressPolicy) -> None:
        self.box = box
        self.policy = policy
        self._kubeconfigs: dict[tuple[str, str], dict[str, Any]] = {}

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        return _platform_verdict(p, action)

    def validate(self, change: Change[ClusterSpec]) -> ClusterSpec:
        spec = change.spec
        text = spec.kubeconfig
        old = change.old_spec.kubeconfig if change.old_spec is not None else None
        if text == old:
            return spec  # unchanged: the caller sent back what it read (masked)
        where = _place(change.name)
        if self.box.is_sealed(text):
            try:  # this cluster's own sealed kubeconfig (from a backup, say); nothing else's
                text = self.box.open(text, where)
            except SealError as exc:
                raise InvalidError(
                    f"spec.kubeconfig: a sealed value that is not this cluster's ({exc}); "
                    "send the kubeconfig itself",
                    field="spec.kubeconfig",
                ) from None
        parse_kubeconfig(text, self.policy)
        if old is not None and self._opened(old, where) == text:
            sealed = old  # the same kubeconfig again: keep its ciphertext
        else:
            sealed = self.box.seal(text, where)
        return spec.model_copy(update={"kubeconfig": sealed})

    def _opened(self, sealed: str, where: str) -> str | None:
        try:
            return self.box.open_stored(sealed, where)
        except SealError:
            return None

    def kubeconfig(self, stored: StoredResource) -> dict[str, Any]:
        """The cluster's kubeconfig, opened and parsed once per sealed value (controllers ask
        for it at every call to a cluster; a copy, so no caller changes another's)."""
        sealed = CLUSTER.typed(stored).kubeconfig
        key = (stored.name, sealed)
        config = self._kubeconfigs.get(key)
        if config is None:
            config = documents.load(self.box.open_stored(sealed, _place(stored.name)))
            if len(self._kubeconfigs) >= KUBECONFIG_CACHE:
                self._kubeconfigs.clear()
            self._kubeconfigs[key] = config
        return copy.deepcopy(config)

    def reseal(self, stored: StoredResource) -> dict[str, Any] | None:
        """The spec with its kubeconfig sealed under the current key; None when it is."""
        spec = CLUSTER.typed(stored)
        if not self.box.needs_reseal(spec.kubeconfig):
            return None
        where = _place(stored.name)
        resealed = self.box.seal(self.box.open_stored(spec.kubeconfig, where), where)
        return {**stored.spec, "kubeconfig": resealed}  # only the sealed value changes

    def before_delete(self, session: Session, p: Principal, old: StoredResource) -> None:
        users = [
            t.name
            for t in ResourceStore(session).query("Tenant")
            if old.name in spec_of(t, TenantGrants).clusters
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
                if pool_place(pool).cluster == old.name:  # also an outdated pool
                    store.mark_deleting(pool)


class NodePoolRules(KindRules[NodePoolSpec]):
    kind = NODE_POOL
    owns_cluster_objects = True  # the taints it put on its nodes

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        return _platform_verdict(p, action)

    def validate(self, change: Change[NodePoolSpec]) -> NodePoolSpec:
        cluster = change.spec.cluster
        if ResourceStore(change.session).get("Cluster", "", cluster) is None:
            raise InvalidError(f"spec.cluster: no cluster {cluster!r}", field="spec.cluster")
        for i, tenant in enumerate(change.spec.tenants):
            if ResourceStore(change.session).get("Tenant", "", tenant) is None:
                raise InvalidError(
                    f"spec.tenants[{i}]: no tenant {tenant!r}", field=f"spec.tenants[{i}]"
                )
        return change.spec
