"""Who may do what: every role x action x scope, and how a token's scope narrows it.

The expectations come from the rules in wharf.identity.model:
- roles are bound at platform, tenant or project scope;
- a platform-wide grant lets its holder read everything; only a platform admin writes;
- writes: tenant admins in their tenant (and its projects); project admins in their project
  only; developers and viewers read their scope and write nothing through Wharf;
- a token narrows its user's grants: to a tenant, to a project in it, and/or to reading.
"""

from __future__ import annotations

import pytest

from wharf.identity.model import Action, Grant, Principal, TokenScope

T, U, P, Q = "acme", "umbrella", "web", "shop"

ROLES: dict[str, Grant] = {
    "platform-admin": Grant("platform-admin"),
    "platform viewer": Grant("viewer"),
    "tenant-admin of T": Grant("tenant-admin", T),
    "tenant viewer of T": Grant("viewer", T),
    "project-admin of T/P": Grant("project-admin", T, P),
    "developer of T/P": Grant("developer", T, P),
    "viewer of T/P": Grant("viewer", T, P),
}

SCOPES: dict[str, tuple[str, str]] = {
    "platform": ("", ""),
    "tenant T": (T, ""),
    "tenant U": (U, ""),
    "project T/P": (T, P),
    "project T/Q": (T, Q),
    "project U/P": (U, P),  # same project name, other tenant
}
ALL = set(SCOPES)
IN_T = {"tenant T", "project T/P", "project T/Q"}

# role -> (scopes it may read, scopes it may write)
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "platform-admin": (ALL, ALL),
    "platform viewer": (ALL, set()),
    "tenant-admin of T": (IN_T, IN_T),
    "tenant viewer of T": (IN_T, set()),
    "project-admin of T/P": ({"project T/P"}, {"project T/P"}),
    "developer of T/P": ({"project T/P"}, set()),
    "viewer of T/P": ({"project T/P"}, set()),
}

MATRIX = [
    pytest.param(
        role,
        action,
        scope,
        scope in EXPECTED[role][action == "write"],
        id=f"{role}-{action}-{scope}",
    )
    for role in ROLES
    for action in ("read", "write")
    for scope in SCOPES
]


def principal(
    *grants: Grant, tenant: str = "", project: str = "", read_only: bool = False
) -> Principal:
    scope = TokenScope(tenant=tenant, project=project, read_only=read_only)
    return Principal(user="alice", grants=frozenset(grants), token_scope=scope)


@pytest.mark.parametrize(("role", "action", "scope", "allowed"), MATRIX)
def test_role_action_scope_matrix(role: str, action: Action, scope: str, allowed: bool) -> None:
    tenant, project = SCOPES[scope]
    assert principal(ROLES[role]).can(action, tenant, project) is allowed


def test_no_grants_may_do_nothing() -> None:
    nobody = principal()
    for tenant, project in SCOPES.values():
        assert not nobody.can("read", tenant, project)
        assert not nobody.can("write", tenant, project)


def test_grants_add_up_without_leaking_between_scopes() -> None:
    p = principal(Grant("developer", T, P), Grant("tenant-admin", U))
    assert p.can("write", U)
    assert p.can("write", U, Q)
    assert p.can("read", T, P)
    assert not p.can("write", T, P)
    assert not p.can("read", T, Q)
    assert not p.can("read")


# --- token scopes ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(ROLES))
def test_read_only_token_blocks_every_write_but_keeps_reads(role: str) -> None:
    full = principal(ROLES[role])
    read_only = principal(ROLES[role], read_only=True)
    for tenant, project in SCOPES.values():
        assert not read_only.can("write", tenant, project)
        assert read_only.can("read", tenant, project) == full.can("read", tenant, project)
    assert not read_only.is_tenant_admin(T)


def test_tenant_token_of_platform_admin_reaches_only_that_tenant() -> None:
    p = principal(Grant("platform-admin"), tenant=T)
    assert p.can("read", T)
    assert p.can("write", T)
    assert p.can("write", T, P)
    assert p.can("write", T, Q)
    assert not p.can("read")
    assert not p.can("write")
    assert not p.can("read", U)
    assert not p.can("read", U, P)
    assert p.visible_tenants() == {T}
    assert p.sees_tenant(T)
    assert not p.sees_tenant(U)
    assert p.visible_projects(T) is None
    assert p.visible_projects(U) == set()
    assert p.is_tenant_admin(T)
    assert not p.is_tenant_admin(U)


def test_tenant_token_of_platform_viewer_reads_only_that_tenant() -> None:
    p = principal(Grant("viewer"), tenant=T)
    assert p.can("read", T, P)
    assert not p.can("read", U)
    assert not p.can("write", T)
    assert p.visible_tenants() == {T}


def test_token_for_a_tenant_the_user_has_no_grant_in_reaches_nothing() -> None:
    p = principal(Grant("tenant-admin", T), tenant=U)
    for tenant, project in SCOPES.values():
        assert not p.can("read", tenant, project)
    assert p.visible_tenants() == set()
    assert not p.sees_tenant(T)
    assert not p.sees_tenant(U)
    assert not p.is_tenant_admin(T)
    assert p.visible_projects(T) == set()


def test_project_token_of_tenant_admin_reaches_only_that_project() -> None:
    p = principal(Grant("tenant-admin", T), tenant=T, project=P)
    assert p.can("read", T, P)
    assert p.can("write", T, P)
    assert not p.can("read", T, Q)
    assert not p.can("write", T, Q)
    assert not p.can("read", U, P)
    assert p.visible_projects(T) == {P}
    assert p.visible_tenants() == {T}


def test_project_token_cannot_write_at_tenant_level() -> None:
    # A token limited to project P must not change what lies outside P, such as the tenant's
    # own tenant-level objects (which other projects share).
    p = principal(Grant("tenant-admin", T), tenant=T, project=P)
    assert not p.can("write", T)


def test_project_token_for_another_project_hides_the_members_project() -> None:
    p = principal(Grant("developer", T, P), tenant=T, project=Q)
    assert not p.can("read", T, P)
    assert p.visible_projects(T) == set()


# --- visibility -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        ((Grant("platform-admin"),), None),
        ((Grant("viewer"),), None),
        ((Grant("tenant-admin", T),), {T}),
        ((Grant("viewer", T),), {T}),
        ((Grant("developer", T, P),), {T}),
        ((Grant("developer", T, P), Grant("viewer", U)), {T, U}),
        ((), set()),
    ],
)
def test_visible_tenants(grants: tuple[Grant, ...], expected: set[str] | None) -> None:
    assert principal(*grants).visible_tenants() == expected


@pytest.mark.parametrize(
    ("grants", "tenant", "expected"),
    [
        ((Grant("platform-admin"),), T, None),
        ((Grant("viewer"),), U, None),
        ((Grant("tenant-admin", T),), T, None),
        ((Grant("viewer", T),), T, None),
        ((Grant("tenant-admin", T),), U, set()),
        ((Grant("developer", T, P),), T, {P}),
        ((Grant("developer", T, P), Grant("viewer", T, Q)), T, {P, Q}),
        ((Grant("developer", T, P), Grant("viewer", U, Q)), T, {P}),
        ((Grant("developer", T, P), Grant("viewer", U, Q)), U, {Q}),
        ((Grant("developer", T, P),), U, set()),
        ((), T, set()),
    ],
)
def test_visible_projects(
    grants: tuple[Grant, ...], tenant: str, expected: set[str] | None
) -> None:
    assert principal(*grants).visible_projects(tenant) == expected


@pytest.mark.parametrize(
    ("role", "sees_t", "sees_u"),
    [
        ("platform-admin", True, True),
        ("platform viewer", True, True),
        ("tenant-admin of T", True, False),
        ("tenant viewer of T", True, False),
        ("project-admin of T/P", True, False),
        ("developer of T/P", True, False),
        ("viewer of T/P", True, False),
    ],
)
def test_sees_tenant(role: str, sees_t: bool, sees_u: bool) -> None:
    p = principal(ROLES[role])
    assert p.sees_tenant(T) is sees_t
    assert p.sees_tenant(U) is sees_u


def test_nobody_sees_any_tenant_without_grants() -> None:
    assert not principal().sees_tenant(T)


@pytest.mark.parametrize(
    ("role", "admin_of_t", "admin_of_u"),
    [
        ("platform-admin", True, True),
        ("platform viewer", False, False),
        ("tenant-admin of T", True, False),
        ("tenant viewer of T", False, False),
        ("project-admin of T/P", False, False),
        ("developer of T/P", False, False),
        ("viewer of T/P", False, False),
    ],
)
def test_is_tenant_admin(role: str, admin_of_t: bool, admin_of_u: bool) -> None:
    p = principal(ROLES[role])
    assert p.is_tenant_admin(T) is admin_of_t
    assert p.is_tenant_admin(U) is admin_of_u


def test_visibility_agrees_with_can_read() -> None:
    # Whatever a caller may read in a tenant, it may know the tenant exists and list it.
    for grant in ROLES.values():
        p = principal(grant)
        for tenant, project in SCOPES.values():
            if tenant and p.can("read", tenant, project):
                assert p.sees_tenant(tenant)
                tenants = p.visible_tenants()
                assert tenants is None or tenant in tenants
                projects = p.visible_projects(tenant)
                if project:
                    assert projects is None or project in projects
