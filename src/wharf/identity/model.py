"""Roles and the rules of who may do what, as pure data (no I/O).

Roles are bound at platform, tenant or project scope. What a caller may do follows from its
grants, narrowed by the scope of the token it uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["platform-admin", "tenant-admin", "project-admin", "developer", "viewer"]
ROLES: tuple[Role, ...] = ("platform-admin", "tenant-admin", "project-admin", "developer", "viewer")
Action = Literal["read", "write"]

# The Kubernetes ClusterRole each project role becomes in the project's namespaces.
CLUSTER_ROLE_FOR: dict[str, str] = {
    "tenant-admin": "admin",
    "project-admin": "admin",
    "developer": "edit",
    "viewer": "view",
}


@dataclass(frozen=True)
class Grant:
    role: Role
    tenant: str = ""
    project: str = ""

    @property
    def scope(self) -> str:
        if self.project:
            return "project"
        return "tenant" if self.tenant else "platform"


@dataclass(frozen=True)
class TokenScope:
    """What a token is limited to: a tenant, a project in it, and/or read-only use."""

    tenant: str = ""
    project: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class Principal:
    user: str
    grants: frozenset[Grant] = field(default_factory=frozenset)
    token_scope: TokenScope = field(default_factory=TokenScope)
    source: str = ""
    token_expires: dt.datetime | None = None  # when the credential in use stops working
    token_id: str = ""  # the token in use (kept when its user changes the password)

    def _in_token_scope(self, action: Action, tenant: str, project: str) -> bool:
        scope = self.token_scope
        if action == "write" and scope.read_only:
            return False
        if scope.tenant and tenant != scope.tenant:
            return False
        if scope.project and action == "write" and project != scope.project:
            return False  # a project token changes nothing above or beside its project
        return not (scope.project and project and project != scope.project)

    def token_scope_allows_write(self, tenant: str, project: str) -> bool:
        """Whether the token in use may change things in this project at all (its grants
        decide the rest)."""
        return self._in_token_scope("write", tenant, project)

    def can(self, action: Action, tenant: str = "", project: str = "") -> bool:
        """May the caller read or write objects at this scope ("" = platform level)?"""
        if not self._in_token_scope(action, tenant, project):
            return False
        return any(self._grant_allows(g, action, tenant, project) for g in self.grants)

    @staticmethod
    def _grant_allows(grant: Grant, action: Action, tenant: str, project: str) -> bool:
        if grant.scope == "platform":
            return grant.role == "platform-admin" or action == "read"
        if grant.tenant != tenant or (grant.scope == "project" and grant.project != project):
            return False
        if action == "read":
            return True
        # Writes: tenant admins in their tenant; project admins in their project only.
        return grant.role == "tenant-admin" or (grant.role == "project-admin" and bool(project))

    def can_deliver(self, tenant: str, project: str) -> bool:
        """May the caller deliver applications into this project (developers may)?"""
        if not self._in_token_scope("write", tenant, project):
            return False
        return any(
            (g.scope == "platform" and g.role == "platform-admin")
            or (g.scope == "tenant" and g.tenant == tenant and g.role == "tenant-admin")
            or (
                g.tenant == tenant
                and g.project == project
                and g.role in ("project-admin", "developer")
            )
            for g in self.grants
        )

    def is_tenant_admin(self, tenant: str) -> bool:
        if self.token_scope.read_only or self.token_scope.project:
            return False
        if self.token_scope.tenant and tenant != self.token_scope.tenant:
            return False
        return any(
            (g.scope == "platform" and g.role == "platform-admin")
            or (g.scope == "tenant" and g.tenant == tenant and g.role == "tenant-admin")
            for g in self.grants
        )

    def sees_tenant(self, tenant: str) -> bool:
        """Whether the caller may know the tenant exists (any grant in it, or platform-wide)."""
        if self.token_scope.tenant and tenant != self.token_scope.tenant:
            return False
        return any(g.scope == "platform" or g.tenant == tenant for g in self.grants)

    def visible_tenants(self) -> set[str] | None:
        """Tenants whose objects the caller may list; None means every tenant."""
        if self.token_scope.tenant:
            return {self.token_scope.tenant} if self.sees_tenant(self.token_scope.tenant) else set()
        if any(g.scope == "platform" for g in self.grants):
            return None
        return {g.tenant for g in self.grants}

    def visible_projects(self, tenant: str) -> set[str] | None:
        """Projects of a tenant the caller may see; None means all of them."""
        if not self.sees_tenant(tenant):
            return set()
        if any(
            g.scope == "platform" or (g.tenant == tenant and g.scope == "tenant")
            for g in self.grants
        ):
            return None if not self.token_scope.project else {self.token_scope.project}
        projects = {g.project for g in self.grants if g.tenant == tenant and g.project}
        if self.token_scope.project:
            projects &= {self.token_scope.project}
        return projects
