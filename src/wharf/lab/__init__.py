"""The lab: real Kubernetes control planes on loopback, with kwok simulating the nodes.

`build` compiles pinned binaries from the Go module proxy into a cache outside the repository;
`cluster` and `lab` start and supervise etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok and metrics-server for each cluster. The demo, the tests and the
benchmarks all run on it.
"""

from wharf.lab.build import BuildResult, LabBinaries, build, find_binaries
from wharf.lab.lab import Lab, LabCluster, LabError, default_lab_dir

__all__ = [
    "BuildResult",
    "Lab",
    "LabBinaries",
    "LabCluster",
    "LabError",
    "build",
    "default_lab_dir",
    "find_binaries",
]
