"""The ``k8s/`` kustomize tree, written by ``render`` (pure).

``k8s/base`` is ``render`` of ``k8s/examples/job.yaml`` with the default options; each
overlay in ``OVERLAYS`` is ``render`` of the same job with its own options, stored as a
``namespace`` plus strategic-merge patches against the base (``patch_for``). ``compose``
applies a kustomization as ``kubectl kustomize`` does for these objects (mappings merged,
``null`` deletes a key, lists of items with a ``name`` merged by name, other lists
replaced), and ``tree_files`` checks that every overlay composes back to exactly what
``render`` prints before it returns the files. Regenerate with ``tljob k8s kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tljob.deploy.options import render_options
from tljob.deploy.render import render
from tljob.deploy.yaml_out import Note, dump_documents, plain

EXAMPLE = "examples/job.yaml"
REGENERATE = "tljob k8s kustomize --dir k8s"
# Each overlay: (what it is for, the render options it stands for).
OVERLAYS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpu": (
        "4 GPU workers on the GPU node pool, up to 4 Ray Data pods, namespace tljob",
        {
            "namespace": "tljob",
            "workers": 4,
            "cpu_workers": 4,
            "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
        },
    ),
    "cpu-dev": (
        "no GPUs: 2 small CPU workers at batch 16 and 1 Ray Data pod, namespace tljob-dev",
        {
            "namespace": "tljob-dev",
            "overrides": ("train.batch_size=16",),
            "gpus_per_worker": 0,
            "workers": 2,
            "worker_cpus": 2,
            "worker_memory": "8Gi",
            "cpu_workers": 1,
            "data_worker_cpus": 4,
            "data_worker_memory": "8Gi",
            "grace_seconds": 600,
        },
    ),
}
_SAME = object()


def _associative(items: Any) -> bool:
    return (
        isinstance(items, list)
        and bool(items)
        and all(isinstance(i, dict) and "name" in i for i in items)
    )


def merge_patch(base: Any, patch: Any) -> Any:
    """``patch`` applied to ``base`` (plain trees), as kustomize's strategic merge treats a
    resource it has no schema for: mappings merged key by key (``None`` deletes the key),
    lists whose items all have a ``name`` merged item by item (new names appended), any
    other value replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge_patch(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if _associative(base) and _associative(patch):
        merged_items = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(base)}
        for item in patch:
            if item["name"] in index:
                i = index[item["name"]]
                merged_items[i] = merge_patch(merged_items[i], item)
            else:
                merged_items.append(copy.deepcopy(item))
        return merged_items
    return copy.deepcopy(patch)


def _diff(base: Any, target: Any) -> Any:
    """The patch that turns plain ``base`` into ``target`` (which may carry ``Note``
    comments, kept in the patch), or ``_SAME``."""
    wanted = plain(target)
    if wanted == base:
        return _SAME
    value = target.value if isinstance(target, Note) else target
    if isinstance(value, dict) and isinstance(base, dict):
        patch: dict[str, Any] = {}
        for key, item in value.items():
            if key not in base:
                patch[key] = item
            elif (change := _diff(base[key], item)) is not _SAME:
                patch[key] = change
        patch.update({key: None for key in base if key not in value})
        return Note(patch, target.comment) if isinstance(target, Note) else patch
    if _associative(base) and _associative(wanted):
        names = [item["name"] for item in wanted]
        if names[: len(base)] == [item["name"] for item in base]:
            items = []
            for old, new in zip(base, value, strict=False):
                change = _diff(old, new)
                if change is not _SAME:
                    items.append({"name": old["name"], **plain_keys(change, "name")})
            items += value[len(base) :]
            return items
        raise ValueError(
            f"a list by name cannot be patched from {[i['name'] for i in base]} to {names}"
        )
    return target


def plain_keys(patch: Any, drop: str) -> dict[str, Any]:
    """``patch`` (a mapping, maybe in a ``Note``) without key ``drop``."""
    mapping = patch.value if isinstance(patch, Note) else patch
    return {key: value for key, value in mapping.items() if key != drop}


def patch_for(base: dict[str, Any], target: dict[str, Any]) -> dict[str, Any] | None:
    """A strategic-merge patch document that turns ``base`` into ``target`` (same kind
    and name), or None when they are equal."""
    change = _diff(base, target)
    if change is _SAME:
        return None
    body = {k: v for k, v in change.items() if k not in ("apiVersion", "kind", "metadata")}
    metadata = {"name": base["metadata"]["name"], **plain_keys(change.get("metadata", {}), "name")}
    return {"apiVersion": base["apiVersion"], "kind": base["kind"], "metadata": metadata, **body}


def _key(document: dict[str, Any]) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]


def compose(directory: Path) -> list[dict[str, Any]]:
    """The objects the kustomization in ``directory`` builds: its ``resources`` (files, or
    directories with their own kustomization), its strategic-merge ``patches`` applied by
    kind and name, then its ``namespace`` on every object."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            documents += compose(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_key = {_key(d): i for i, d in enumerate(documents)}
    for entry in kustomization.get("patches", []):
        for patch in yaml.safe_load_all((directory / entry["path"]).read_text()):
            if not patch:
                continue
            if _key(patch) not in by_key:
                raise ValueError(f"{directory / entry['path']}: no {_key(patch)} to patch")
            i = by_key[_key(patch)]
            documents[i] = merge_patch(documents[i], patch)
    if "namespace" in kustomization:
        for document in documents:
            document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


def overlay_options(name: str) -> dict[str, Any]:
    """The render options of overlay ``name`` (``OVERLAYS``)."""
    return dict(OVERLAYS[name][1])


def overlay_flags(name: str) -> str:
    """The ``tljob k8s render`` flags overlay ``name`` stands for."""
    words = []
    for key, value in overlay_options(name).items():
        flag = "--" + key.replace("_", "-")
        if key == "gpu_node_selector":
            words += [f"{flag} {k}={v}" for k, v in value.items()]
        elif key == "overrides":
            words += [f"--set {override}" for override in value]
        else:
            words.append(f"{flag} {value}")
    return " ".join(words)


def _kustomization(resources: list[str], patches: list[str], namespace: str | None) -> str:
    tree: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    if namespace is not None:
        tree["namespace"] = namespace
    tree["resources"] = resources
    if patches:
        tree["patches"] = [{"path": p} for p in patches]
    return yaml.safe_dump(tree, sort_keys=False)


def tree_files(k8s_dir: Path) -> dict[str, str]:
    """Every generated file of the tree (path relative to ``k8s_dir`` -> text), rendered
    from ``k8s_dir/examples/job.yaml``. ``RuntimeError`` if an overlay would not compose
    back to its render."""
    example = k8s_dir / EXAMPLE
    generated = f"Generated by `{REGENERATE}` from k8s/{EXAMPLE}: edit that, then regenerate."
    base = render(example, render_options())
    files = {}
    resources = []
    for document in base.documents:
        file_name = f"{document['kind'].lower()}.yaml"
        resources.append(file_name)
        files[f"base/{file_name}"] = dump_documents([document], generated)
    base_header = f"{generated}\nThe base: `tljob k8s render --config k8s/{EXAMPLE}`."
    files["base/kustomization.yaml"] = _header(base_header) + _kustomization(resources, [], None)
    base_plain = base.plain()
    for name, (purpose, options) in OVERLAYS.items():
        rendered = render(example, render_options(**options))
        header = (
            f"{generated}\nOverlay {name}: {purpose}.\nThe same as `tljob k8s render "
            f"--config k8s/{EXAMPLE} {overlay_flags(name)}`."
        )
        patches = []
        for old, new in zip(base_plain, rendered.documents, strict=True):
            target = copy.copy(new)
            target["metadata"] = {k: v for k, v in new["metadata"].items() if k != "namespace"}
            patch = patch_for(old, target)
            if patch is not None:
                file_name = f"{new['kind'].lower()}-patch.yaml"
                patches.append(file_name)
                files[f"overlays/{name}/{file_name}"] = dump_documents([patch], generated)
        files[f"overlays/{name}/kustomization.yaml"] = _header(header) + _kustomization(
            ["../../base"], patches, options.get("namespace")
        )
        _check_overlay(files, name, rendered.plain())
    return files


def _header(text: str) -> str:
    return "".join(f"# {line}\n" for line in text.splitlines())


def _check_overlay(files: dict[str, str], name: str, wanted: list[dict[str, Any]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        if compose(root / "overlays" / name) != wanted:
            raise RuntimeError(f"overlay {name} does not compose back to its render")


def write_tree(k8s_dir: Path) -> list[Path]:
    """Write ``tree_files(k8s_dir)`` under ``k8s_dir``, removing the YAML files of
    ``base/`` and ``overlays/`` it no longer generates; the paths written."""
    files = tree_files(k8s_dir)
    for folder in ("base", "overlays"):
        for stale in sorted((k8s_dir / folder).rglob("*.yaml")):
            if str(stale.relative_to(k8s_dir)) not in files:
                stale.unlink()
    written = []
    for path, text in files.items():
        target = k8s_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


__all__ = [
    "OVERLAYS",
    "compose",
    "merge_patch",
    "overlay_flags",
    "patch_for",
    "tree_files",
    "write_tree",
]
