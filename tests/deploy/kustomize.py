"""A small offline kustomize: the subset deploy/k8s uses, so the tests need no kustomize binary.

Supported kustomization keys: ``resources`` (files and folders), ``namespace``, ``images``,
``configMapGenerator`` (files and literals; behavior create/merge/replace; content-hash name suffix
computed as kustomize does, references in pod specs renamed), and ``patches`` (strategic merge with the
list merge keys Kubernetes uses for the fields we patch, or JSON 6902 with a target). Anything else is an
error, so the renderer can never silently drop a part of a manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "configMapGenerator", "patches"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def load_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(folder: Path) -> list[Manifest]:
    """Render the kustomization in ``folder``; generated names get their hash suffix."""
    resources, generated = _build(folder)
    return _apply_name_hashes(resources, generated)


def _build(folder: Path) -> tuple[list[Manifest], set[str]]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{folder}: kustomization keys this renderer does not support: {sorted(unknown)}")
    resources: list[Manifest] = []
    generated: set[str] = set()
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            more, more_generated = _build(path)
            resources += more
            generated |= more_generated
        else:
            resources += load_documents(path)
    for generator in spec.get("configMapGenerator", []):
        generated.add(generator["name"])
        _generate_config_map(folder, generator, resources)
    for patch in spec.get("patches", []):
        _apply_patch(folder, patch, resources)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in _containers(resources):
            _set_image(container, image)
    return resources, generated


def _generate_config_map(folder: Path, generator: dict[str, Any], resources: list[Manifest]) -> None:
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, file = entry.rpartition("=")
        data[key or Path(file).name] = (folder / file).read_text()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    behavior = generator.get("behavior", "create")
    existing = [
        r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == generator["name"]
    ]
    if behavior == "create":
        if existing:
            raise ValueError(f"ConfigMap {generator['name']} already exists; use behavior merge or replace")
        resources.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    elif behavior in ("merge", "replace") and len(existing) == 1:
        target = existing[0]
        target["data"] = {**target.get("data", {}), **data} if behavior == "merge" else data
    else:
        raise ValueError(f"configMapGenerator {generator['name']}: cannot {behavior}")


def _apply_patch(folder: Path, patch: dict[str, Any], resources: list[Manifest]) -> None:
    text = patch["patch"] if "patch" in patch else (folder / patch["path"]).read_text()
    body = yaml.safe_load(text)
    if isinstance(body, list):  # JSON 6902
        matches = [r for r in resources if _selected(r, patch["target"])]
        if not matches:
            raise ValueError(f"patch {patch} matches no resource")
        for resource in matches:
            for op in body:
                _json_patch(resource, op)
        return
    target = patch.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
    matches = [r for r in resources if _selected(r, target)]
    if not matches:
        raise ValueError(f"patch {patch} matches no resource")
    for resource in matches:
        _strategic_merge(resource, body)


def _selected(resource: Manifest, target: dict[str, str]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    actual = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
    }
    return all(actual[key] == value for key, value in target.items())


def _strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _strategic_merge(base[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(base.get(key), list):
            merge_key = MERGE_KEYS[key]
            by_key = {item[merge_key]: item for item in base[key]}
            for item in value:
                if item[merge_key] in by_key:
                    _strategic_merge(by_key[item[merge_key]], item)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def _json_patch(resource: Manifest, op: dict[str, Any]) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = resource
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if op["op"] == "remove":
        del node[int(last) if isinstance(node, list) else last]
    elif op["op"] == "add" and isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
    elif op["op"] in ("add", "replace"):
        node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
    else:
        raise ValueError(f"unsupported JSON patch op {op}")


def _containers(resources: list[Manifest]) -> list[dict[str, Any]]:
    found = []
    for resource in resources:
        spec = resource.get("spec", {}).get("template", {}).get("spec", {})
        found += spec.get("containers", []) + spec.get("initContainers", [])
    return found


def _set_image(container: dict[str, Any], image: dict[str, str]) -> None:
    reference = container.get("image", "")
    name, _, tag = reference.partition("@")[0].rpartition(":") if ":" in reference else (reference, "", "")
    if "/" in tag:  # the colon was a registry port, not a tag
        name, tag = reference, ""
    if name != image["name"]:
        return
    tag = image.get("newTag", tag)
    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")


def config_map_hash(config_map: Manifest) -> str:
    """kustomize's suffix: sha256 of the JSON of kind, data (and binaryData) and an empty name."""
    encoded: dict[str, Any] = {"kind": "ConfigMap", "name": "", "data": config_map.get("data", {})}
    if config_map.get("binaryData"):
        encoded["binaryData"] = config_map["binaryData"]
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _apply_name_hashes(resources: list[Manifest], generated: set[str]) -> list[Manifest]:
    renamed: dict[str, str] = {}
    for resource in resources:
        name = resource["metadata"]["name"]
        if resource["kind"] == "ConfigMap" and name in generated:
            renamed[name] = resource["metadata"]["name"] = f"{name}-{config_map_hash(resource)}"
    for resource in resources:
        _rename_config_map_references(resource, renamed)
    return resources


def _rename_config_map_references(node: Any, renamed: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key in ("configMap", "configMapRef", "configMapKeyRef"):
            ref = node.get(key)
            if isinstance(ref, dict) and ref.get("name") in renamed:
                ref["name"] = renamed[ref["name"]]
        for value in node.values():
            _rename_config_map_references(value, renamed)
    elif isinstance(node, list):
        for item in node:
            _rename_config_map_references(item, renamed)
