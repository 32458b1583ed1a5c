"""REST for the registries: the token endpoint, the trust bundle, a registry's configuration,
its notifications, robots' secrets and a project's images."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from wharf.core.crypto import SecretBox
from wharf.core.errors import ForbiddenError, InvalidError, NotFoundError
from wharf.identity.api import current_principal, database
from wharf.identity.model import Principal
from wharf.registry.model import RegistrySpec
from wharf.registry.service import (
    TokenRequest,
    TokenSigner,
    issue_token,
    notification_secret,
    project_images,
    record_notifications,
    robot_credentials,
    run_retention,
)
from wharf.store.resources import ResourceStore

router = APIRouter(prefix="/api/v1", tags=["Registry"])
Caller = Annotated[Principal, Depends(current_principal)]


class RegistryToken(BaseModel):
    """A registry token (Docker registry token authentication)."""

    token: str = Field(description="A JWT the registry accepts as Authorization: Bearer")
    access_token: str = Field(description="The same token (OAuth2 clients read this name)")
    expires_in: int = Field(description="Seconds it stays valid")
    issued_at: str = Field(description="RFC 3339")


class TrustBundle(BaseModel):
    certificates: str = Field(
        description="PEM certificates of Wharf's token keys: the registry's "
        "auth.token.rootcertbundle file"
    )


class TokenAuth(BaseModel):
    realm: str = Field(description="Wharf's token endpoint")
    service: str = Field(description="The registry's service name (the tokens' audience)")
    issuer: str = Field(description="The tokens' issuer")
    rootcertbundle: str = Field(
        description="Where the registry reads GET /api/v1/registry/certificate from (a path)"
    )


class Auth(BaseModel):
    token: TokenAuth


class Endpoint(BaseModel):
    name: str
    url: str = Field(description="Wharf's notification endpoint for this registry")
    headers: dict[str, list[str]] = Field(
        description="Authorization: Bearer <the registry's notification secret>"
    )
    timeout: str
    threshold: int
    backoff: str


class Notifications(BaseModel):
    endpoints: list[Endpoint]


class RegistryConfig(BaseModel):
    """The `auth` and `notifications` sections of the registry's config.yml."""

    auth: Auth
    notifications: Notifications


class NotificationsRecorded(BaseModel):
    recorded: int = Field(description="Events written to the audit trail")


class RobotCredentials(BaseModel):
    username: str = Field(description="robot$<tenant>+<robot>: the registry login's username")
    secret: str = Field(description="Its password")


class ImageTag(BaseModel):
    tag: str
    digest: str
    size: int = Field(description="Bytes: manifest, config and layers")
    mediaType: str
    pushedBy: str | None = Field(default=None, description="From the registry's notifications")
    pushedAt: str | None = None


class Image(BaseModel):
    registry: str
    repository: str = Field(description="<tenant>/<project>/<image>")
    image: str
    tags: list[ImageTag]


class RetentionDecision(BaseModel):
    registry: str
    repository: str
    tag: str
    digest: str
    pushedAt: str | None = Field(description="From the registry's notifications")
    action: Literal["keep", "delete"]
    reason: str = Field(description="Which rule keeps it, or why it goes")


class RetentionReport(BaseModel):
    dryRun: bool = Field(description="True: nothing was deleted")
    decisions: list[RetentionDecision]


class Unreachable(BaseModel):
    registry: str
    message: str = Field(description="Why its images are not listed")


class ImageList(BaseModel):
    items: list[Image]
    unreachable: list[Unreachable] = Field(description="Registries that did not answer")


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.platform.box
    return box


def _signer(request: Request) -> TokenSigner:
    signer: TokenSigner = request.app.state.platform.token_signer
    return signer


@router.get(
    "/registry/token",
    summary="Docker registry token server: a JWT for the asked scopes, cut to what the "
    "caller may do (Basic: user and password or API token, or a robot and its secret)",
)
def registry_token(
    request: Request,
    service: Annotated[str, Query(description="The registry's service name")] = "",
    scope: Annotated[list[str] | None, Query(description="type:name:actions, repeatable")] = None,
) -> RegistryToken:
    asked = TokenRequest(
        authorization=request.headers.get("authorization", ""),
        service=service,
        scopes=scope or [],
        source=request.client.host if request.client else "",
    )
    platform = request.app.state.platform
    token = issue_token(
        database(request), _box(request), _signer(request), platform.login_throttle, asked
    )
    return RegistryToken(**token)


@router.get(
    "/registry/certificate",
    summary="The certificates registries trust for Wharf's tokens (auth.token.rootcertbundle)",
)
def registry_certificate(request: Request) -> TrustBundle:
    return TrustBundle(certificates=_signer(request).bundle())


@router.get(
    "/registries/{name}/config",
    summary="The registry's auth and notifications configuration (platform admins)",
)
def registry_config(name: str, p: Caller, request: Request) -> RegistryConfig:
    if not p.can("write"):
        raise ForbiddenError("only platform admins read a registry's configuration")
    with database(request).reader() as session:
        stored = ResourceStore(session).get("Registry", "", name)
    if stored is None:
        raise NotFoundError(f"registry {name!r} not found")
    spec = RegistrySpec.model_validate(stored.spec)
    base = str(request.base_url).rstrip("/")
    return RegistryConfig.model_validate(
        {
            "auth": {
                "token": {
                    "realm": f"{base}/api/v1/registry/token",
                    "service": spec.service,
                    "issuer": _signer(request).issuer,
                    "rootcertbundle": "/etc/docker/registry/wharf.pem",
                }
            },
            "notifications": {
                "endpoints": [
                    {
                        "name": "wharf",
                        "url": f"{base}/api/v1/registries/{name}/events",
                        "headers": {
                            "Authorization": [
                                f"Bearer {notification_secret(_box(request), stored)}"
                            ]
                        },
                        "timeout": "5s",
                        "threshold": 5,
                        "backoff": "1s",
                    }
                ]
            },
        }
    )


@router.post(
    "/registries/{name}/events",
    summary="The registry's notifications (push, pull, delete) into the audit trail",
)
async def registry_events(name: str, request: Request) -> NotificationsRecorded:
    raw = await request.body()
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError):  # not JSON, or deeper than the parser goes
        raise InvalidError("body: not JSON", field="body") from None
    recorded = await asyncio.to_thread(
        record_notifications,
        database(request),
        _box(request),
        _signer(request),
        name,
        request.headers.get("authorization", ""),
        body,
        request.client.host if request.client else "",
    )
    return NotificationsRecorded(recorded=recorded)


@router.get(
    "/tenants/{tenant}/robots/{name}/secret",
    summary="A robot's registry login (its project's admins only)",
    tags=["Robot"],
)
def robot_secret(tenant: str, name: str, p: Caller, request: Request) -> RobotCredentials:
    return RobotCredentials(**robot_credentials(database(request), _box(request), p, tenant, name))


@router.get(
    "/tenants/{tenant}/projects/{project}/images",
    summary="The project's repositories and tags in every registry",
    tags=["Project"],
)
def images(tenant: str, project: str, p: Caller, request: Request) -> ImageList:
    found = project_images(database(request), _signer(request), p, tenant, project)
    return ImageList.model_validate(found)


@router.post(
    "/tenants/{tenant}/retentionpolicies/{name}/run",
    summary="Evaluate a retention policy: the report, and (without dryRun) the deletions",
    tags=["RetentionPolicy"],
)
def retention_run(
    tenant: str,
    name: str,
    p: Caller,
    request: Request,
    dryRun: Annotated[bool, Query(description="Report only; delete nothing")] = True,
) -> RetentionReport:
    report = run_retention(database(request), _signer(request), p, tenant, name, dryRun)
    return RetentionReport.model_validate(report)
