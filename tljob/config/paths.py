"""Relative local paths of a job tree made absolute against the current directory (pure).

A sweep's trials run in Ray Tune's own trial folders (and on a cluster, in the folder its
nodes started in), not where ``tljob tune`` was started, so the sweep resolves its paths
once, when it is loaded, as ``tljob train`` does on its driver.
"""

from __future__ import annotations

import os
from typing import Any

# (section, key) of the settings that name a local path or a URI (data.source: or a list)
PATH_SETTINGS = (
    ("data", "source"),
    ("data", "test_source"),
    ("data", "prepared_path"),
    ("run", "storage_path"),
)
NAMED_WEIGHTS = ("imagenet", "none")


def absolute_path(path: str) -> str:
    """``path`` as written when it is a URI (``s3://``, ``file://``) or empty, else
    absolute against the current directory (``~`` expanded, as ``storage.resolve`` does)."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def absolute_weights(weights: str) -> str:
    """``model.weights``: a weights file's path made absolute, its ``#sha256=`` pin kept;
    'imagenet', 'none' and URIs as written."""
    if weights in NAMED_WEIGHTS:
        return weights
    path, pin, rest = weights.partition("#")
    return absolute_path(path) + pin + rest


def make_paths_absolute(tree: dict[str, Any]) -> None:
    """In the job tree ``tree`` (``job_tree``'s, unvalidated), every setting that names a
    local path, made absolute in place. Values that are not strings are left for the
    schema to refuse."""
    for section, key in PATH_SETTINGS:
        part = tree.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            part[key] = absolute_path(part[key])
        elif isinstance(part, dict) and isinstance(part.get(key), list):  # data.source's list
            part[key] = [absolute_path(p) if isinstance(p, str) else p for p in part[key]]
    model = tree.get("model")
    if isinstance(model, dict) and isinstance(model.get("weights"), str):
        model["weights"] = absolute_weights(model["weights"])
