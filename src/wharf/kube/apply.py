"""Make one object in a cluster match what Wharf wants — and write nothing when it already does.

Server-side apply (field manager `wharf`, forced, so an out-of-band edit of a field Wharf owns is
taken back) is sent only when the observed object does not already contain every desired field.
Quantities compare by value, since the API server keeps its own canonical spelling
(`1024Mi` comes back as `1Gi`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from lightkube import AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.core.generic_client import ALL_NS
from lightkube.core.resource import NamespacedResource, api_info

from wharf.core.quantity import QuantityError, parse_quantity
from wharf.core.resources import LABEL_VALUE_RE
from wharf.kube.informer import Informer, matches

MANAGED_BY = "app.kubernetes.io/managed-by"


def contains(desired: Any, observed: Any) -> bool:
    """Whether `observed` already holds every field and value of `desired`."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            contains(v, observed.get(k)) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(contains(d, o) for d, o in zip(desired, observed, strict=True))
        )
    if desired == observed:
        return True
    if isinstance(desired, str) and isinstance(observed, str | int):
        try:
            return parse_quantity(desired) == parse_quantity(observed)
        except QuantityError:
            return False
    return False


def _type_of(obj: dict[str, Any]) -> Any:
    return type(from_dict(obj))


async def observe(client: AsyncClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    try:
        current = await client.get(_type_of(obj), meta["name"], namespace=meta.get("namespace"))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    result: dict[str, Any] = current.to_dict()
    return result


async def apply(client: AsyncClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply (forced, field manager `wharf`); return the object as stored."""
    applied = await client.apply(from_dict(obj), force=True)
    result: dict[str, Any] = applied.to_dict()  # type: ignore[no-untyped-call]
    return result


class OwnedElsewhereError(Exception):
    """The object exists but another owner's labels are on it (or none of Wharf's): Wharf
    never adopts it, and reports the conflict instead."""


def check_owner(current: dict[str, Any] | None, owner: Mapping[str, str]) -> None:
    if current is None:
        return
    labels = (current.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in owner.items()):
        meta = current.get("metadata") or {}
        where = f" in namespace {meta['namespace']}" if meta.get("namespace") else ""
        raise OwnedElsewhereError(
            f"{current.get('kind', 'object')} {meta.get('name')}{where} already exists and "
            "belongs to something else; Wharf does not take it over"
        )


async def ensure(
    client: AsyncClient, obj: dict[str, Any], owner: Mapping[str, str] | None = None
) -> tuple[bool, dict[str, Any]]:
    """Apply `obj` unless the cluster already matches it; return (wrote, object as it is).

    With `owner`, an existing object must carry those labels, or nothing is written."""
    current = await observe(client, obj)
    if owner is not None:
        check_owner(current, owner)
    if current is not None and contains(obj, current):
        return False, current
    return True, await apply(client, obj)


def _being_deleted(item: Any) -> bool:
    # Deleting it again would be one more write (a namespace even answers 409 until its
    # content is gone); the cluster finishes what it accepted.
    return item.metadata.deletionTimestamp is not None


async def _delete(client: AsyncClient, resource: Any, name: str, namespace: str | None) -> None:
    try:
        await client.delete(resource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            raise


async def prune(
    client: AsyncClient,
    resource: Any,
    namespace: str | None,
    labels: dict[str, Any],
    keep: set[str],
) -> list[str]:
    """Delete objects of a resource type that carry `labels` and are not in `keep`."""
    exact(labels)
    removed = []
    namespaced = issubclass(resource, NamespacedResource)
    listing = (
        client.list(resource, namespace=namespace, labels=labels)
        if namespaced
        else (client.list(resource, labels=labels))
    )
    async for item in listing:
        name = item.metadata.name
        if name not in keep and not _being_deleted(item):
            await _delete(client, resource, name, namespace)
            removed.append(name)
    return removed


async def delete_exactly(client: AsyncClient, obj: dict[str, Any]) -> bool:
    """Delete the object only if it is still the one read (same uid and resourceVersion):
    a cache that missed a change (a watch being restarted) deletes nothing it did not see.
    False when it is gone or has changed since."""
    resource = _type_of(obj)
    meta = obj["metadata"]
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
    }
    http = client._client._client  # the configured HTTP client: base URL, TLS, credentials
    response = await http.request(
        "DELETE",
        _path(resource, meta["name"], meta.get("namespace")),
        content=json.dumps(options),
        headers={"Content-Type": "application/json"},
    )
    if response.status_code in (404, 409):
        return False
    response.raise_for_status()
    return True


async def prune_cached(
    client: AsyncClient, cached: Iterable[dict[str, Any]], keep: set[str]
) -> list[str]:
    """`prune` from a watch cache's objects (already selected by their labels): each is
    deleted only as the cache saw it (`delete_exactly`), so a stale cache prunes nothing
    wrong; what it missed is pruned once the watch has caught up."""
    removed = []
    for obj in cached:
        meta = obj["metadata"]
        if meta["name"] in keep or meta.get("deletionTimestamp"):
            continue
        if await delete_exactly(client, obj):
            removed.append(meta["name"])
    return removed


async def ensure_cached(
    client: AsyncClient,
    cache: Informer | None,
    obj: dict[str, Any],
    owner: Mapping[str, str],
) -> tuple[bool, dict[str, Any]]:
    """`ensure`, answered by a synced watch cache of the object's kind when it holds the
    object as wanted and owned by `owner`: then nothing is asked of the cluster. Anything else
    — not in the cache (which holds only objects with Wharf's labels, so another owner's object
    of that name is never there) or different — is read from the cluster, its owner checked
    there, and applied only if it differs; the cache then remembers the write."""
    if cache is not None:
        meta = obj["metadata"]
        seen = cache.get(meta.get("namespace") or "", meta["name"])
        if seen is not None:
            check_owner(seen, owner)
            if contains(obj, seen):
                return False, seen
    if cache is None:
        return await ensure(client, obj, owner=owner)
    with cache.writing(obj):
        wrote, current = await ensure(client, obj, owner=owner)
        if wrote:
            cache.remember(current)
    return wrote, current


async def apply_watched(
    client: AsyncClient, cache: Informer | None, obj: dict[str, Any]
) -> dict[str, Any]:
    """`apply`, its answer remembered by the kind's watch cache, whose echo of the write then
    wakes nobody (`Informer.writing`)."""
    if cache is None:
        return await apply(client, obj)
    with cache.writing(obj):
        current = await apply(client, obj)
        cache.remember(current)
    return current


async def prune_selected(
    client: AsyncClient,
    cache: Informer | None,
    resource: Any,
    namespace: str | None,
    selector: dict[str, Any],
    keep: set[str],
) -> list[str]:
    """`prune` from a synced watch cache of the kind when there is one (`prune_cached`: each
    object deleted only as the cache saw it), else listed."""
    if cache is None:
        return await prune(client, resource, namespace, selector, keep)
    mine = [o for o in cache.in_namespace(namespace or "") if matches(o, selector)]
    removed = await prune_cached(client, mine, keep)
    left = [
        o
        for o in mine
        if o["metadata"]["name"] not in keep
        and o["metadata"]["name"] not in removed
        and not o["metadata"].get("deletionTimestamp")
    ]
    if left:
        # Changed (or gone) since the cache saw them: decide on what the cluster holds now,
        # rather than leave a revoked member's binding until something else looks again.
        removed += await prune(client, resource, namespace, selector, keep)
    return removed


def seen_otherwise(seen: dict[str, Any] | None, would: dict[str, Any]) -> bool:
    """The dry run (`would`) met an object the cache did not show as it is: one the cache
    lacks, another one under the same name (uid) or a later version of it. Then the
    cache's owner check says nothing, and the object must be read before it is written."""
    meta = would.get("metadata") or {}
    if not meta.get("resourceVersion"):
        return False  # nothing there: the apply creates it
    if seen is None:
        return True
    had = seen.get("metadata") or {}
    return (had.get("uid"), had.get("resourceVersion")) != (
        meta.get("uid"),
        meta.get("resourceVersion"),
    )


def exact(labels: dict[str, Any]) -> None:
    """Refuse a selector whose values are not label values: an API server reads "web " as
    "web" and "web,x" as two requirements, so a removal by such a value would take what
    carries another owner's labels."""
    for key, value in labels.items():
        if isinstance(value, str) and not LABEL_VALUE_RE.fullmatch(value):
            raise ValueError(f"label {key}={value!r} is not a label value: nothing removed")


async def remove_labelled(
    client: AsyncClient,
    resources: Iterable[Any],
    labels: dict[str, Any],
    namespace_prefix: str = "",
) -> list[str]:
    """Delete every object of these types, in any namespace (starting with `namespace_prefix`,
    when given), that carries `labels`; return them as kind/namespace/name. Errors other than
    404 propagate, so that a caller finishing a delete does not drop its record before the
    cluster has accepted every removal."""
    exact(labels)
    removed = []
    for resource in resources:
        where = {"namespace": ALL_NS} if issubclass(resource, NamespacedResource) else {}
        listing = client.list(resource, labels=labels, **where)  # type: ignore[call-overload]
        async for item in listing:
            if _being_deleted(item):
                continue
            if namespace_prefix and not (item.metadata.namespace or "").startswith(
                namespace_prefix
            ):
                continue  # labels anyone may write elsewhere say nothing about ownership
            meta = item.metadata
            await _delete(client, resource, meta.name, meta.namespace)
            removed.append(f"{resource.__name__}/{meta.namespace or ''}/{meta.name}")
    return removed


class RemovalPending(Exception):
    """Objects a finished delete must not leave behind are still in a cluster (another
    replica, holding that cluster, removes them): the delete is retried."""

    def __init__(self, objects: list[str]) -> None:
        super().__init__(f"still to remove: {', '.join(objects[:5])}")
        self.objects = objects


async def labelled(
    client: AsyncClient,
    resources: Iterable[Any],
    labels: dict[str, Any],
    namespace_prefix: str = "",
) -> list[str]:
    """What `remove_labelled` would delete (a read only), as kind/namespace/name."""
    exact(labels)
    found = []
    for resource in resources:
        where = {"namespace": ALL_NS} if issubclass(resource, NamespacedResource) else {}
        listing = client.list(resource, labels=labels, **where)  # type: ignore[call-overload]
        async for item in listing:
            meta = item.metadata
            if _being_deleted(item) or not (meta.namespace or "").startswith(namespace_prefix):
                continue
            found.append(f"{resource.__name__}/{meta.namespace or ''}/{meta.name}")
    return found


async def owner_labels(
    client: AsyncClient,
    resources: Iterable[Any],
    labels: dict[str, Any],
    owner: tuple[str, ...],
    in_owners_namespace: bool = False,
) -> set[tuple[str, ...]]:
    """The values of the `owner` labels on every object of these types that carries `labels`:
    who owns what is there, for a sweep that finds objects whose owner is gone. With
    `in_owners_namespace`, only objects in a namespace of the tenant their first owner label
    names count (`<tenant>--…`): a tenant may label its own objects as anyone's."""
    found = set()
    for resource in resources:
        where = {"namespace": ALL_NS} if issubclass(resource, NamespacedResource) else {}
        listing = client.list(resource, labels=labels, **where)  # type: ignore[call-overload]
        async for item in listing:
            item_labels = item.metadata.labels or {}
            values = tuple(item_labels.get(k, "") for k in owner)
            namespace = item.metadata.namespace or ""
            if in_owners_namespace and not namespace.startswith(f"{values[0]}--"):
                continue
            found.add(values)
    return found


class RejectedError(Exception):
    """The cluster's own schema or admission refused an object (found by a dry run)."""


class NamespaceMissingError(RejectedError):
    """The object's namespace is not in the cluster (yet): nothing wrong with the object."""


def _path(resource: Any, name: str, namespace: str | None) -> str:
    info = api_info(resource)
    group, version = info.resource.group, info.resource.version
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{where}/{info.plural}/{name}"


async def dry_run(client: AsyncClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply `obj` with dryRun=All and strict field validation: the target
    cluster checks it against its own OpenAPI schema and admission, and stores nothing.
    Returns the object as it would be: with a resourceVersion only when it exists already."""
    resource = _type_of(obj)
    meta = obj["metadata"]
    http = client._client._client  # the configured HTTP client: base URL, TLS, credentials
    response = await http.patch(
        _path(resource, meta["name"], meta.get("namespace")),
        content=json.dumps(obj),
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={
            "dryRun": "All",
            "fieldManager": "wharf",
            "fieldValidation": "Strict",
            "force": "true",
        },
    )
    if response.status_code >= 400:
        try:
            status = response.json()
        except ValueError:
            status = {}
        message = status.get("message", response.text) if isinstance(status, dict) else ""
        if response.status_code == 404 and _missing_namespace(status, meta.get("namespace")):
            raise NamespaceMissingError(f"{obj['kind']} {meta['name']}: {message}")
        raise RejectedError(f"{obj['kind']} {meta['name']}: {message}")
    result: dict[str, Any] = response.json()
    return result


def _missing_namespace(status: Any, namespace: str | None) -> bool:
    """Whether a 404 Status says the object's own namespace is what is not there."""
    details = status.get("details") if isinstance(status, dict) else None
    return (
        isinstance(details, dict)
        and details.get("kind") == "namespaces"
        and namespace is not None
        and details.get("name") == namespace
    )


def is_missing_namespace(exc: BaseException, namespace: str) -> bool:
    """Whether a write to `namespace` failed because that namespace is not in the cluster."""
    if isinstance(exc, NamespaceMissingError):
        return True
    if isinstance(exc, ApiError) and exc.status.code == 404:
        details = exc.status.details
        return details is not None and (details.kind, details.name) == ("namespaces", namespace)
    return False
