"""Assembling a ``JobConfig``: schema defaults -> YAML file -> ``--set dotted.path=value``
overrides (in the order given) -> validation, with errors that name field, value and rule."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tljob.config._base import merge_trees
from tljob.config.schema import ConfigError, JobConfig
from tljob.config.yaml_in import YamlInputError, load_yaml


def format_errors(err: ValidationError) -> str:
    """A ``ValidationError`` as one line per field at fault: field, value, rule."""
    return "invalid config:\n  " + "\n  ".join(error_lines(err.errors()))


def error_lines(errors: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per pydantic error (``ValidationError.errors()`` entries, whose ``loc`` is
    the dotted field path): the field, its value and the rule."""
    lines = []
    for e in errors:
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"`{path}` is not a known setting (check the spelling)")
        elif e["type"] == "finite_number":
            lines.append(f"`{path}` ({e['input']!r}): must be a finite number, not inf or nan")
        elif path and isinstance(e["input"], dict) and "`" in msg:
            # a section's own rule: its message names fields relative to the section (a
            # field's rule about a mapping given as its value names no field)
            lines.append(re.sub(r"`([^`]+)`", lambda m, p=path: f"`{p}.{m.group(1)}`", msg))
        elif path:
            lines.append(f"`{path}` ({e['input']!r}): {msg}")
        else:
            lines.append(msg)
    return lines


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a","b","c"], value parsed as a YAML scalar or list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like dotted.path=value")
    try:
        value = load_yaml(raw, f"override {text!r}: the value") if raw.strip() else ""
    except YamlInputError as e:
        raise ConfigError(str(e)) from None
    return key.split("."), value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` in a nested dict/list tree; numeric parts index lists."""
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"override `{'.'.join(path)}`: `{where}` indexes a list of {len(node)} "
                    "entries; use 0..{0}".format(len(node) - 1)
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:  # unreachable: plain values are rejected one level up
            raise ConfigError(f"override `{'.'.join(path)}`: `{where}` is not a section")
        if last:
            node[key] = value
            return
        child = node.get(key) if isinstance(node, dict) else node[key]
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict | list):
            raise ConfigError(
                f"override `{'.'.join(path)}`: `{'.'.join(path[: i + 2])}` is inside a plain "
                f"value (`{where}` is {child!r})"
            )
        node = child


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] = ()) -> JobConfig:
    """Build a validated ``JobConfig``: defaults, then the YAML file, then ``overrides``.

    The order is: field defaults, then (for ``augment``) the named preset's options, then
    the file, then ``overrides``. Overrides are applied on top of the defaults merged with
    the file, so
    ``--set train.stages.1.epochs=3`` edits the default second stage even when the file
    does not mention stages. Raises ``ConfigError`` for any unusable input.
    """
    file_tree = read_config_file(path) if path is not None else {}
    return validate_job(job_tree(file_tree, overrides))


def job_tree(file_tree: dict[str, Any], overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The unvalidated job tree ``load_config`` validates: the defaults merged with
    ``file_tree`` (a config file's mapping), then each ``dotted.path=value`` override applied
    with ``apply_override``. ``augment`` holds only what the file and the overrides wrote:
    its preset fills the rest, so it must not see the defaults as written values."""
    tree: dict[str, Any] = merge_trees(JobConfig().model_dump(mode="json"), file_tree)
    augment: Any = {}
    if isinstance(file_tree.get("augment"), dict):
        augment = merge_trees(augment, file_tree["augment"])
    elif "augment" in file_tree:
        augment = file_tree["augment"]  # not a mapping: the schema says so
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "augment":
            if len(keys) == 1:
                augment = value
            elif isinstance(augment, dict):
                apply_override(augment, keys[1:], value)
        else:
            apply_override(tree, keys, value)
    tree["augment"] = augment
    return tree


def validate_job(tree: dict[str, Any]) -> JobConfig:
    """``tree`` (as ``job_tree`` builds it) validated into a ``JobConfig``; ``ConfigError``
    naming every field at fault, its value and the rule."""
    try:
        return JobConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None
    except ValueError as e:  # cross-field rules and registry lookups outside a field
        raise ConfigError(f"invalid config:\n  {e}") from None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's top-level mapping (empty for an empty file); ``ConfigError`` when the
    file is missing, not YAML, or not a mapping."""
    return _read_yaml(Path(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = load_yaml(path.read_text(), f"config file {str(path)!r}")
    except YamlInputError as e:
        raise ConfigError(str(e)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections, "
            f"not a {type(loaded).__name__}"
        )
    return loaded


def dump_config(config: JobConfig) -> str:
    """The resolved config as YAML (what is saved with each run; it loads back equal to
    ``config.resolved()``)."""
    return yaml.safe_dump(config.record(), sort_keys=False)
