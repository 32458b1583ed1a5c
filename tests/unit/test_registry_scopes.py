"""Registry token scopes: the spec's grammar (names with a host:port), and what each requester
is granted — never anything outside its tenant, however the name is spelled."""

from __future__ import annotations

import pytest

from wharf.core.errors import InvalidError
from wharf.identity.model import Grant, Principal, TokenScope
from wharf.registry.model import (
    RobotAccount,
    Scope,
    grant,
    locate,
    parse_scope,
    parse_scopes,
    split_account,
)


def _user(*grants: Grant, scope: TokenScope | None = None) -> Principal:
    return Principal("u", frozenset(grants), token_scope=scope or TokenScope())


DEV = _user(Grant("developer", "ta", "web"))
VIEWER = _user(Grant("viewer", "ta", "web"))
ADMIN = _user(Grant("platform-admin"))


def _actions(who: object, text: str, shared: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    [entry] = grant(who, [parse_scope(text)], list(shared))  # type: ignore[arg-type]
    actions = entry["actions"]
    assert isinstance(actions, list)
    return actions


def test_scope_names_may_hold_a_host_and_port() -> None:
    scope = parse_scope("repository:127.0.0.1:5000/ta/web/app:pull,push")
    assert scope == Scope("repository", "127.0.0.1:5000/ta/web/app", ("pull", "push"))
    assert locate(scope.name).tenant == "ta"
    assert locate(scope.name).image == "app"
    assert parse_scope("registry:catalog:*") == Scope("registry", "catalog", ("*",))


def test_several_scopes_in_one_parameter() -> None:
    scopes = parse_scopes(
        ["repository:ta/web/a:pull repository:ta/web/b:push", "registry:catalog:*"]
    )
    assert [s.name for s in scopes] == ["ta/web/a", "ta/web/b", "catalog"]


@pytest.mark.parametrize(
    "text",
    [
        "repository",
        "repository:ta/web/app",
        "repository:../tb/web/app:pull",
        "repository:ta/../tb/app:pull",
        "repository:TA/web/app:pull",
        "repository:ta/web/App:pull",
        "repository:ta/web/app:pull:push",
        "repository:ta/web/app:PULL",
        "repository:/ta/web/app:pull",
        "repository:ta//web/app:pull",
        "repository:ta/web/app:",
        "Repository:ta/web/app:pull",
        "repository:" + "a/" * 130 + "b:pull",
    ],
)
def test_malformed_scopes_are_refused_naming_the_scope(text: str) -> None:
    with pytest.raises(InvalidError) as caught:
        parse_scope(text)
    assert caught.value.field == "scope"


def test_project_roles_decide_pull_and_push() -> None:
    assert _actions(DEV, "repository:ta/web/app:pull,push") == ["pull", "push"]
    assert _actions(VIEWER, "repository:ta/web/app:pull,push") == ["pull"]
    assert _actions(DEV, "repository:ta/web/app:delete") == []
    assert _actions(_user(Grant("project-admin", "ta", "web")), "repository:ta/web/a:delete") == [
        "delete"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "tb/web/app",  # another tenant
        "ta/api/app",  # another project of the same tenant
        "ta--x/web/app",  # a tenant name that starts like ours
        "tax/web/app",
        "ta/web",  # not <tenant>/<project>/<image>
        "ta",
        "library/ta/web/app",
        "127.0.0.1:5000/tb/web/app",
    ],
)
def test_nothing_outside_the_callers_projects(name: str) -> None:
    assert _actions(DEV, f"repository:{name}:pull,push") == []


def test_a_host_prefix_names_no_project_repository() -> None:
    """Clients never send the registry's host in a scope: `x.y/ta/web/app` would be a shadow of
    `ta/web/app` outside its listing, retention and immutable tags, so nobody gets it."""
    assert _actions(DEV, "repository:localhost/ta/web/app:pull,push") == []
    assert _actions(DEV, "repository:x.y/ta/web/app:pull,push") == []
    assert _actions(ADMIN, "repository:x.y/ta/web/app:pull,push,delete") == []
    assert _actions(DEV, "repository:ta.example/web/app/x:pull") == []


def test_a_read_only_token_never_pushes() -> None:
    stolen = _user(Grant("developer", "ta", "web"), scope=TokenScope(read_only=True))
    assert _actions(stolen, "repository:ta/web/app:pull,push") == ["pull"]


def test_a_project_scoped_token_stays_in_its_project() -> None:
    both = (Grant("developer", "ta", "web"), Grant("developer", "ta", "api"))
    scoped = _user(*both, scope=TokenScope(tenant="ta", project="web"))
    assert _actions(scoped, "repository:ta/api/app:pull,push") == []


def test_robots_reach_their_project_and_images_only() -> None:
    robot = RobotAccount("robot$ta+ci", "ta", "web", frozenset({"pull", "push"}))
    assert _actions(robot, "repository:ta/web/app:pull,push") == ["pull", "push"]
    assert _actions(robot, "repository:ta/api/app:pull,push") == []
    assert _actions(robot, "repository:tb/web/app:pull") == []
    limited = RobotAccount("robot$ta+ci", "ta", "web", frozenset({"pull"}), frozenset({"app"}))
    assert _actions(limited, "repository:ta/web/app:pull,push") == ["pull"]
    assert _actions(limited, "repository:ta/web/other:pull") == []


def test_shared_prefixes_are_pulled_by_all_and_pushed_by_platform_admins() -> None:
    shared = ["library/"]
    assert _actions(VIEWER, "repository:library/debian:pull,push", shared) == ["pull"]
    assert _actions(ADMIN, "repository:library/debian:pull,push", shared) == ["pull", "push"]
    assert _actions(VIEWER, "repository:libraryx/debian:pull", shared) == []


def test_the_catalog_is_for_platform_admins() -> None:
    assert _actions(ADMIN, "registry:catalog:*") == ["*"]
    assert _actions(DEV, "registry:catalog:*") == []


@pytest.mark.parametrize(
    ("username", "found"),
    [
        ("robot$ta+ci", ("ta", "ci")),
        ("robot$ta+", None),
        ("robot$TA+ci", None),
        ("robot$ta+ci+x", None),
        ("robot$../x+ci", None),
        ("user", None),
    ],
)
def test_robot_usernames(username: str, found: tuple[str, str] | None) -> None:
    assert split_account(username, "robot$") == found
