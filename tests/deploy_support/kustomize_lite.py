"""A small, strict kustomize: enough of `kubectl kustomize` to build deploy/k8s offline in tests.

Supported kustomization fields: resources (files and kustomization folders), namespace,
configMapGenerator (envs/literals, kustomize's content hash suffix, name references rewritten),
images, and patches (strategic merge, from `path` or inline `patch`, optionally with a `target`).
Anything else raises UnsupportedKustomization, so the manifests stay inside what this file checks.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = frozenset(
    {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images", "patches"}
)
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "PersistentVolume",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
    }
)
"""Kinds the namespace transformer leaves alone."""

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "volumeClaimTemplates": "metadata.name",
}
"""Lists merged item by item (Kubernetes' patchMergeKey); every other list is replaced whole."""


class UnsupportedKustomization(ValueError):
    """The kustomization uses something outside this subset, or something this subset refuses."""


def load_yaml_documents(path: Path) -> list[Resource]:
    """Non-empty YAML documents of one file."""
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def build(root: str | Path) -> list[Resource]:
    """Resources `kubectl kustomize root` would print (in file order, not kustomize's kind order)."""
    root = Path(root)
    kfile = root / "kustomization.yaml"
    if not kfile.is_file():
        raise UnsupportedKustomization(f"{root}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: fields outside the supported subset: {sorted(unknown)}")

    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        target = (root / entry).resolve()
        resources.extend(build(target) if target.is_dir() else load_yaml_documents(target))

    renamed: dict[str, str] = {}
    for gen in spec.get("configMapGenerator", []):
        cm = _config_map(root, gen)
        renamed[gen["name"]] = cm["metadata"]["name"]
        resources.append(cm)

    for patch_spec in spec.get("patches", []):
        _apply_patch(root, patch_spec, resources)
    if "namespace" in spec:
        for res in resources:
            if res["kind"] not in CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for res in resources:
            _set_images(res, image)
    for res in resources:
        _rewrite_config_map_refs(res, renamed)
    _check_unique(resources, root)
    return resources


def config_map_hash(data: dict[str, str]) -> str:
    """kustomize's 10-character suffix: sha256 of Go's JSON of {data, kind, name: ""}, vowels avoided."""
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's json.Marshal escapes these for HTML safety; the hash is over Go's bytes.
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a kustomize `envs` file; comments and blank lines skipped; no quoting allowed."""
    data: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key or key != key.strip():
            raise UnsupportedKustomization(f"{path}:{n}: expected KEY=VALUE, got {line!r}")
        if value != value.strip() or value[:1] in "'\"":
            raise UnsupportedKustomization(f"{path}:{n}: quoted or padded values are not supported")
        if key in data:
            raise UnsupportedKustomization(f"{path}:{n}: {key} set twice")
        data[key] = value
    return data


def _config_map(root: Path, gen: dict[str, Any]) -> Resource:
    unknown = set(gen) - {"name", "envs", "literals"}
    if unknown:
        raise UnsupportedKustomization(f"configMapGenerator {gen.get('name')}: unsupported {sorted(unknown)}")
    data: dict[str, str] = {}
    for env_file in gen.get("envs", []):
        data.update(parse_env_file(root / env_file))
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    name = f"{gen['name']}-{config_map_hash(data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _apply_patch(root: Path, patch_spec: dict[str, Any], resources: list[Resource]) -> None:
    unknown = set(patch_spec) - {"path", "patch", "target"}
    if unknown:
        raise UnsupportedKustomization(f"patch {patch_spec}: unsupported {sorted(unknown)}")
    if "path" in patch_spec:
        docs = load_yaml_documents(root / patch_spec["path"])
    else:
        docs = [doc for doc in yaml.safe_load_all(patch_spec["patch"]) if doc]
    if len(docs) != 1 or isinstance(docs[0], list):
        raise UnsupportedKustomization(f"patch {patch_spec}: one strategic-merge document expected")
    patch = docs[0]
    target = patch_spec.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    matched = [r for r in resources if _matches(r, target)]
    if not matched:
        raise UnsupportedKustomization(f"patch {patch_spec}: no resource matches {target}")
    for res in matched:
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
        meta = {k: v for k, v in patch.get("metadata", {}).items() if k not in ("name", "namespace")}
        merged = strategic_merge(res, {**body, "metadata": meta} if meta else body)
        res.clear()
        res.update(merged)


def _matches(res: Resource, target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name", "labelSelector"}
    if unknown:
        raise UnsupportedKustomization(f"patch target {target}: unsupported {sorted(unknown)}")
    if "kind" in target and res.get("kind") != target["kind"]:
        return False
    if "name" in target and res.get("metadata", {}).get("name") != target["name"]:
        return False
    if "labelSelector" in target:
        labels = res.get("metadata", {}).get("labels", {})
        for term in target["labelSelector"].split(","):
            key, sep, value = term.partition("=")
            if not sep or "!" in key:
                raise UnsupportedKustomization(f"labelSelector term {term!r}: only key=value is supported")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge for plain manifests: maps merge, keyed lists merge, null deletes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(str(k).startswith("$") for k in patch):
            raise UnsupportedKustomization(f"{field}: $patch/$setElementOrder directives are not supported")
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        # kustomize's order: the patch's items first (merged into their base twins), then the base's rest.
        key = MERGE_KEYS[field]
        by_key = {_dig(existing, key): existing for existing in base}
        merged = [
            strategic_merge(by_key[_dig(item, key)], item, field)
            if _dig(item, key) in by_key
            else copy.deepcopy(item)
            for item in patch
        ]
        patched = {_dig(item, key) for item in patch}
        return merged + [copy.deepcopy(existing) for existing in base if _dig(existing, key) not in patched]
    return copy.deepcopy(patch)


def _dig(item: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """`registry/name:tag@digest` -> (registry/name, tag, digest); a registry port is not a tag."""
    ref, _, digest = image.partition("@")
    name, tag = ref, None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1 :]
    return name, tag, digest or None


def _set_images(node: Any, image: dict[str, Any]) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise UnsupportedKustomization(f"images entry {image}: unsupported {sorted(unknown)}")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name, tag, digest = split_image(container.get("image", ""))
                    if name != image["name"]:
                        continue
                    new = image.get("newName", name)
                    if "digest" in image:
                        container["image"] = f"{new}@{image['digest']}"
                    elif "newTag" in image:
                        container["image"] = f"{new}:{image['newTag']}"
                    else:
                        suffix = f":{tag}" if tag else ""
                        container["image"] = f"{new}{suffix}" + (f"@{digest}" if digest else "")
            else:
                _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def _rewrite_config_map_refs(node: Any, renamed: dict[str, str]) -> None:
    """Point configMapRef / configMapKeyRef / configMap volumes at the generated (hashed) names."""
    if not renamed:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("configMapRef", "configMapKeyRef", "configMap") and isinstance(value, dict):
                if value.get("name") in renamed:
                    value["name"] = renamed[value["name"]]
            else:
                _rewrite_config_map_refs(value, renamed)
    elif isinstance(node, list):
        for item in node:
            _rewrite_config_map_refs(item, renamed)


def _check_unique(resources: list[Resource], root: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for res in resources:
        ident = (res["kind"], res["metadata"].get("namespace", ""), res["metadata"]["name"])
        if ident in seen:
            raise UnsupportedKustomization(f"{root}: {ident} defined twice")
        seen.add(ident)
