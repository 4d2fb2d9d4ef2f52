"""The offline kustomize stand-in: hash suffix, strategic merge, images, and refusing what it lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy_support.kustomize_lite import (
    UnsupportedKustomization,
    build,
    config_map_hash,
    split_image,
    strategic_merge,
)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labels: {gpu: "yes"}}
spec:
  template:
    spec:
      containers:
        - name: app
          image: app
          envFrom: [{configMapRef: {name: cfg}}]
          env: [{name: A, value: "1"}]
"""


def test_hash_matches_kustomize_output() -> None:
    # `kubectl kustomize` (kustomize v5.5.0) named this ConfigMap cfg-4c85dkf8t9; note the HTML escaping.
    assert config_map_hash({"A": "1", "B": "<x>&y"}) == "4c85dkf8t9"


def test_generated_config_map_is_hashed_and_referenced(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "kustomization.yaml": "namespace: ns\nresources: [d.yaml]\n"
            "configMapGenerator: [{name: cfg, envs: [c.env]}]\n",
            "d.yaml": DEPLOYMENT,
            "c.env": "# comment\nA=1\nB=<x>&y\n",
        },
    )
    dep, cm = build(root)
    assert cm["metadata"] == {"name": "cfg-4c85dkf8t9", "namespace": "ns"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"][0]["configMapRef"]["name"] == "cfg-4c85dkf8t9"


def test_overlay_patch_by_label_and_image_rename(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [d.yaml]\nimages: [{name: app, newTag: '1.0'}]\n",
            "base/d.yaml": DEPLOYMENT,
            "over/kustomization.yaml": "resources: [../base]\n"
            "patches: [{path: p.yaml, target: {kind: Deployment, labelSelector: gpu=yes}}]\n"
            "images: [{name: app-gpu, newName: reg/app, newTag: '1.0-gpu'}]\n",
            "over/p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ignored}\n"
            "spec: {template: {spec: {containers: [{name: app, image: app-gpu, "
            "env: [{name: B, value: '2'}]}]}}}\n",
        },
    )
    (base_dep,) = build(root / "base")
    assert base_dep["spec"]["template"]["spec"]["containers"][0]["image"] == "app:1.0"
    (dep,) = build(root / "over")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg/app:1.0-gpu"
    # As kubectl kustomize orders them: the patch's items, then the base's others.
    assert container["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]
    assert dep["metadata"]["name"] == "d"


def test_strategic_merge_rules() -> None:
    # Order checked against kubectl kustomize v5.5.0: patch items first, then the base's remaining ones.
    base = {
        "containers": [{"name": "a", "args": ["x"], "env": [{"name": "A"}, {"name": "B"}, {"name": "C"}]}],
        "keep": 1,
        "drop": 2,
    }
    patch = {
        "containers": [
            {"name": "side"},
            {"name": "a", "args": ["y"], "env": [{"name": "B", "value": "2"}, {"name": "D"}]},
        ],
        "drop": None,
    }
    merged = strategic_merge(base, patch)
    assert merged == {
        "containers": [
            {"name": "side"},
            {
                "name": "a",
                "args": ["y"],
                "env": [{"name": "B", "value": "2"}, {"name": "D"}, {"name": "A"}, {"name": "C"}],
            },
        ],
        "keep": 1,
    }
    assert base["drop"] == 2, "inputs are not modified"
    with pytest.raises(UnsupportedKustomization):
        strategic_merge({"a": 1}, {"$patch": "replace"})


def test_image_references() -> None:
    assert split_image("reg:5000/app:1.2@sha256:ab") == ("reg:5000/app", "1.2", "sha256:ab")
    assert split_image("reg:5000/app") == ("reg:5000/app", None, None)


@pytest.mark.parametrize(
    "kustomization, message",
    [
        ("resources: [d.yaml]\ncommonLabels: {a: b}\n", "commonLabels"),
        ("resources: [d.yaml]\npatches: [{path: p.yaml}]\n", "no resource matches"),
        ("resources: [d.yaml, d.yaml]\n", "defined twice"),
        ("resources: [d.yaml]\nconfigMapGenerator: [{name: c, files: [x]}]\n", "unsupported"),
    ],
)
def test_refuses_what_it_does_not_implement(tmp_path: Path, kustomization: str, message: str) -> None:
    root = write(
        tmp_path,
        {
            "kustomization.yaml": kustomization,
            "d.yaml": DEPLOYMENT,
            "p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\n",
        },
    )
    with pytest.raises(UnsupportedKustomization, match=message):
        build(root)


def test_env_file_refuses_quotes(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "kustomization.yaml": "configMapGenerator: [{name: c, envs: [c.env]}]\n",
            "c.env": 'A="quoted"\n',
        },
    )
    with pytest.raises(UnsupportedKustomization, match="quoted"):
        build(root)
