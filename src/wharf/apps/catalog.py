"""The built-in catalog: a web service, a worker, a stateful service with a volume, a cron job.

Each is an AppTemplate with one published version, made on first start like the first user.
Every container sets requests, limits and probes, and no image defaults to `:latest`.
"""

from __future__ import annotations

from typing import Any

LABELS = {"app.kubernetes.io/name": "${name}"}


def _resources() -> dict[str, Any]:
    return {
        "requests": {"cpu": "${cpu}", "memory": "${memory}"},
        "limits": {"cpu": "${cpu_limit}", "memory": "${memory_limit}"},
    }


def _sizing() -> dict[str, Any]:
    return {
        "cpu": {"type": "string", "default": "100m", "description": "CPU request"},
        "memory": {"type": "string", "default": "128Mi", "description": "memory request"},
        "cpu_limit": {"type": "string", "default": "500m"},
        "memory_limit": {"type": "string", "default": "256Mi"},
    }


def _schema(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                "maxLength": 40,
                "description": "name of the workload",
            },
            "image": {"type": "string", "description": "image, with a tag that is not latest"},
            **_sizing(),
            **extra,
        },
        "required": ["name", "image"],
        "additionalProperties": False,
    }


# The Pod Security Standard "restricted", which every catalog template meets.
POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _container(port: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "${name}",
        "image": "${image}",
        "resources": _resources(),
        "securityContext": CONTAINER_SECURITY,
    }
    if port:
        probe = {"httpGet": {"path": "${health_path}", "port": "${port}"}, "periodSeconds": 10}
        container["ports"] = [{"containerPort": "${port}", "name": "http"}]
        container["readinessProbe"] = probe
        container["livenessProbe"] = probe
    else:
        probe = {"exec": {"command": ["/bin/sh", "-c", "${health_command}"]}, "periodSeconds": 30}
        container["readinessProbe"] = probe
        container["livenessProbe"] = probe
    return container


def _object(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "${name}", "labels": LABELS},
        "spec": spec,
    }


def _workload(kind: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A Deployment or StatefulSet of one container, selected by the name label."""
    return _object(
        "apps/v1",
        kind,
        {
            "replicas": "${replicas}",
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {"securityContext": POD_SECURITY, "containers": [container]},
            },
            **spec,
        },
    )


def _template(
    description: str, parameters: dict[str, Any], *objects: dict[str, Any]
) -> dict[str, Any]:
    """An AppTemplate spec with one published version, 1.0.0."""
    return {
        "description": description,
        "versions": [
            {
                "version": "1.0.0",
                "published": True,
                "parameters": _schema(parameters),
                "objects": list(objects),
            }
        ],
    }


WEB_SERVICE = _template(
    "A stateless HTTP service: Deployment, Service, autoscaler, disruption budget",
    {
        "replicas": {"type": "integer", "minimum": 0, "maximum": 500, "default": 2},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8080},
        "health_path": {"type": "string", "default": "/healthz"},
        "max_replicas": {"type": "integer", "minimum": 1, "default": 10},
    },
    _workload("Deployment", _container(port=True)),
    _object(
        "v1",
        "Service",
        {
            "selector": LABELS,
            "ports": [{"name": "http", "port": 80, "targetPort": "${port}"}],
        },
    ),
    _object(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "${name}"},
            "minReplicas": 1,
            "maxReplicas": "${max_replicas}",
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    ),
    _object(
        "policy/v1",
        "PodDisruptionBudget",
        {"maxUnavailable": 1, "selector": {"matchLabels": LABELS}},
    ),
)

WORKER = _template(
    "A background worker: a Deployment with no Service",
    {
        "replicas": {"type": "integer", "minimum": 0, "maximum": 500, "default": 1},
        "health_command": {"type": "string", "default": "test -e /tmp/healthy"},
    },
    _workload("Deployment", _container(port=False)),
)

STATEFUL_SERVICE = _template(
    "A stateful service with a volume per replica: StatefulSet and headless Service",
    {
        "replicas": {"type": "integer", "minimum": 1, "maximum": 50, "default": 1},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432},
        "health_path": {"type": "string", "default": "/healthz"},
        "storage": {"type": "string", "default": "1Gi", "description": "volume size"},
        "mount_path": {"type": "string", "default": "/data"},
    },
    _object(
        "v1",
        "Service",
        {
            "clusterIP": "None",
            "selector": LABELS,
            "ports": [{"name": "main", "port": "${port}"}],
        },
    ),
    _workload(
        "StatefulSet",
        {**_container(port=True), "volumeMounts": [{"name": "data", "mountPath": "${mount_path}"}]},
        serviceName="${name}",
        volumeClaimTemplates=[
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "${storage}"}},
                },
            }
        ],
    ),
)

CRON_JOB = _template(
    "A job on a schedule: CronJob",
    {
        "schedule": {"type": "string", "default": "0 * * * *", "description": "cron syntax"},
        "command": {"type": "string", "default": "echo hello"},
    },
    _object(
        "batch/v1",
        "CronJob",
        {
            "schedule": "${schedule}",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "metadata": {"labels": LABELS},
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "securityContext": POD_SECURITY,
                            "containers": [
                                {
                                    "name": "${name}",
                                    "image": "${image}",
                                    "command": ["/bin/sh", "-c", "${command}"],
                                    "resources": _resources(),
                                    "securityContext": CONTAINER_SECURITY,
                                }
                            ],
                        },
                    },
                }
            },
        },
    ),
)

CATALOG: dict[str, dict[str, Any]] = {
    "web-service": WEB_SERVICE,
    "worker": WORKER,
    "stateful-service": STATEFUL_SERVICE,
    "cron-job": CRON_JOB,
}
