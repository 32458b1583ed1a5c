"""Who may read and publish application templates, and what a change to one may do."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from wharf.apps.catalog import CATALOG
from wharf.apps.model import APP_TEMPLATE, AppTemplateSpec, TemplateVersion, check_version
from wharf.core.errors import InvalidError
from wharf.identity.model import Action, Principal
from wharf.resources.service import Change, KindRules, Verdict
from wharf.store.resources import ResourceStore, Scopes, StoredResource


class AppTemplateRules(KindRules):
    """The catalog is shared: every signed-in user reads it; platform admins publish to it."""

    kind = APP_TEMPLATE

    def verdict(
        self, p: Principal, action: Action, tenant: str, name: str, old: StoredResource | None
    ) -> Verdict:
        if p.can(action):
            return "allow"
        return "allow" if action == "read" and p.grants else "forbid"

    def visible_scopes(self, p: Principal, tenant: str | None) -> Scopes:
        return [("", None)] if p.grants else []

    def validate(self, change: Change) -> dict[str, Any]:
        spec = AppTemplateSpec.model_validate(change.spec)
        seen: set[str] = set()
        for i, version in enumerate(spec.versions):
            if version.version in seen:
                raise InvalidError(
                    f"spec.versions[{i}].version: {version.version} is listed twice",
                    field=f"spec.versions[{i}].version",
                )
            seen.add(version.version)
            check_version(version, f"spec.versions[{i}]")
        if change.old is not None:
            old = AppTemplateSpec.model_validate(change.old.spec)
            new_by_version = {v.version: v for v in spec.versions}
            for published in (v for v in old.versions if v.published):
                now = new_by_version.get(published.version)
                if now is None or now != published:
                    raise InvalidError(
                        f"spec.versions: {published.version} is published and cannot change or "
                        "go away; publish a new version instead",
                        field="spec.versions",
                    )
        return change.spec

    def present_status(self, stored: StoredResource, p: Principal) -> dict[str, Any]:
        versions = [v["version"] for v in stored.spec.get("versions", [])]
        published = [v["version"] for v in stored.spec.get("versions", []) if v.get("published")]
        return {**stored.status, "versions": versions, "published": published}


def template_version(session: Session, name: str, version: str) -> TemplateVersion:
    stored = ResourceStore(session).get("AppTemplate", "", name)
    if stored is None:
        raise InvalidError(f"spec.template.name: no template {name!r}", field="spec.template.name")
    for v in stored.spec.get("versions", []):
        if v["version"] == version:
            return TemplateVersion.model_validate(v)
    raise InvalidError(
        f"spec.template.version: template {name} has no version {version}",
        field="spec.template.version",
    )


def seed_catalog(session: Session) -> list[str]:
    """Create the built-in templates that are missing; return their names."""
    store = ResourceStore(session)
    made = []
    for name, spec in CATALOG.items():
        if store.get("AppTemplate", "", name) is None:
            validated = AppTemplateSpec.model_validate(spec)
            for i, version in enumerate(validated.versions):
                check_version(version, f"spec.versions[{i}]")
            store.create(
                "AppTemplate",
                "",
                name,
                labels={"wharf.io/catalog": "builtin"},
                annotations={},
                spec=validated.model_dump(mode="json"),
            )
            made.append(name)
    return made
