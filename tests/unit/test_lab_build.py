import importlib

import pytest

from wharf.lab.build import _kubernetes_ldflags, staging_replacements

GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/spf13/cobra v1.10.2
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
\tk8s.io/klog/v2 v2.140.0
\tk8s.io/kube-openapi v0.0.0-20260721132016-d427ff9ee9ad
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
)
"""


def test_staging_modules_required_at_v0_are_replaced_by_the_release():
    assert staging_replacements(GO_MOD, "v1.37.2") == {
        "k8s.io/api": "v0.37.2",
        "k8s.io/client-go": "v0.37.2",
    }


def test_a_staged_module_that_is_not_required_is_left_alone():
    # sample-controller is staged but not required: no published release is needed for it.
    assert "k8s.io/sample-controller" not in staging_replacements(GO_MOD, "v1.37.2")


def test_pseudo_versions_are_not_taken_for_v0_0_0():
    assert "k8s.io/kube-openapi" not in staging_replacements(GO_MOD, "v1.37.2")


def test_version_is_stamped_on_component_base_and_client_go():
    flags = _kubernetes_ldflags("v1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags
    assert "-X k8s.io/client-go/pkg/version.gitVersion=v1.36.3" in flags


def test_tools_are_pinned_and_cached_beside_the_lab(tmp_path):
    from wharf.lab.build import TOOLS, tool_path

    command, version = TOOLS["cosign"]
    assert command == "github.com/sigstore/cosign/v2/cmd/cosign"
    assert version.startswith("v2.")
    assert tool_path("cosign", tmp_path) == tmp_path / "tools" / f"cosign-{version}" / "cosign"


def test_the_log_store_and_its_collector_are_pinned_beside_the_lab(tmp_path):
    from wharf.lab.build import VICTORIALOGS_VERSION, victorialogs_module, victorialogs_path

    home = tmp_path / "tools" / f"victorialogs-{VICTORIALOGS_VERSION}"
    assert victorialogs_path("victoria-logs", tmp_path) == home / "victoria-logs"
    assert victorialogs_path("vlagent", tmp_path) == home / "vlagent"
    module = victorialogs_module("1.26.5")
    assert "\ngo 1.26.5\n" in module
    assert f"require github.com/VictoriaMetrics/VictoriaLogs {VICTORIALOGS_VERSION}\n" in module
    with pytest.raises(ValueError, match="vlselect"):
        victorialogs_path("vlselect", tmp_path)


def test_a_built_log_store_is_found_without_go(tmp_path, monkeypatch):
    build = importlib.import_module("wharf.lab.build")

    for command in build.VICTORIALOGS_COMMANDS:
        path = build.victorialogs_path(command, tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    monkeypatch.setattr(build.shutil, "which", lambda _: None)
    found = build.build_victorialogs(progress=lambda _: None, root=tmp_path)
    assert found == {c: build.victorialogs_path(c, tmp_path) for c in build.VICTORIALOGS_COMMANDS}


def test_an_unbuilt_log_store_without_go_names_go(tmp_path, monkeypatch):
    build = importlib.import_module("wharf.lab.build")

    monkeypatch.setattr(build.shutil, "which", lambda _: None)
    with pytest.raises(build.BuildError, match="`go` is not on PATH"):
        build.build_victorialogs(progress=lambda _: None, root=tmp_path)
