"""Who reads which part of the audit trail."""

from __future__ import annotations

from wharf.identity.model import Principal
from wharf.store.audit import Reach


def reach_of(p: Principal) -> Reach:
    """Platform readers read everything; tenant admins and viewers their tenants; project
    members their projects; everyone their own platform-level actions such as logins (a
    tenant-scoped token only its tenant)."""
    if p.can("read"):
        return Reach(everything=True)
    scope = p.token_scope
    candidates = {g.tenant for g in p.grants if g.tenant} | ({scope.tenant} - {""})
    tenants = frozenset(t for t in candidates if p.can("read", t) and not scope.project)
    projects = {(g.tenant, g.project) for g in p.grants if g.project}
    if scope.project:
        projects.add((scope.tenant, scope.project))
    return Reach(
        tenants=tenants,
        projects=frozenset(
            (t, pr) for t, pr in projects if t not in tenants and p.can("read", t, pr)
        ),
        actor="" if scope.tenant else p.user,
    )
