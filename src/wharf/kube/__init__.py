"""Kubernetes access through lightkube: clients built from kubeconfigs, field manager `wharf`."""

from wharf.kube.clients import FIELD_MANAGER, async_client, server_version, sync_client

__all__ = ["FIELD_MANAGER", "async_client", "server_version", "sync_client"]
