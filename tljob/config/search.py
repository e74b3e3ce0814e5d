"""A sweep's ``search`` section (pure): its spaces and the config paths they may vary.

A space is a mapping with exactly one key, as Ray Tune names them:

- ``{choice: [v, ...]}``: one of the values, drawn at random (the ``grid`` searcher
  enumerates them instead);
- ``{grid: [v, ...]}``: every value, each in its own trials (a grid search);
- ``{uniform: [lo, hi]}``: a float drawn uniformly from [lo, hi);
- ``{loguniform: [lo, hi]}``: a float whose logarithm is uniform in [log lo, log hi); lo > 0;
- ``{randint: [lo, hi]}``: an integer from lo to hi - 1 (hi excluded, as Tune's ``randint``).

A search path is a dotted config path, the same that ``--set`` accepts: a field of the
``JobConfig`` schema, through list indices that exist in the sweep's base config (e.g.
``train.stages.0.learning_rate``). Paths that change the prepared data's fingerprint are
fixed per sweep (``FIXED_PER_SWEEP``): a sweep prepares its data once, before any trial.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from tljob.config.schema import ConfigError, JobConfig

SpaceKind = Literal["choice", "grid", "uniform", "loguniform", "randint"]
SPACE_KINDS: tuple[str, ...] = get_args(SpaceKind)
DISCRETE_KINDS = ("choice", "grid")  # a list of values
RANGE_KINDS = ("uniform", "loguniform", "randint")  # [lo, hi] bounds
# What a trial gets from each kind of space (the docs' reference table is written from it).
SPACE_MEANINGS: dict[str, str] = {
    "choice": "one of the values, drawn at random (searcher `grid` enumerates them instead)",
    "grid": "every value, each in its own trials (a grid search)",
    "uniform": "a float drawn uniformly from [lo, hi)",
    "loguniform": "a float whose logarithm is uniform in [log lo, log hi); lo > 0",
    "randint": "an integer from lo to hi - 1 (hi excluded, as Ray Tune's `randint`)",
}

_DATA_FIXED = "it changes the prepared data's fingerprint, and a sweep prepares its data once"
# Config paths (and everything under them) a sweep cannot vary, with the reason. The data
# settings are those `tljob.data.prepared.fingerprint` covers (listing, split, store).
FIXED_PER_SWEEP: dict[str, str] = {
    "data.source": _DATA_FIXED,
    "data.classes": _DATA_FIXED,
    "data.max_images_per_class": _DATA_FIXED,
    "data.val_fraction": _DATA_FIXED,
    "data.test_fraction": _DATA_FIXED,
    "data.test_source": _DATA_FIXED,
    "data.seed": _DATA_FIXED,
    "data.image_size": _DATA_FIXED + " (the validation images are stored at this size)",
    "data.stored_size": _DATA_FIXED,
    "data.shard_pixels": _DATA_FIXED,
    "data.shard_quality": _DATA_FIXED,
    "data.shard_target_mb": _DATA_FIXED,
    "data.max_image_pixels": _DATA_FIXED,
    "data.prepared_path": "every trial reads the one prepared copy of the sweep's data",
    "run.storage_path": "it holds the sweep's prepared data and the trials' runs",
    "run.name": "each trial's run name comes from its trial id (so a restarted trial resumes)",
    "s3": "it says how the sweep's storage is reached, once for the whole sweep",
}


@dataclass(frozen=True)
class SpaceSpec:
    """One search space: ``kind``, and its ``values`` (choice, grid) or ``bounds`` (uniform,
    loguniform, randint; randint's ``hi`` is excluded)."""

    kind: SpaceKind
    values: tuple[Any, ...] = ()
    bounds: tuple[float, float] | None = None

    @property
    def discrete(self) -> bool:
        """A list of values (choice, grid), as opposed to a numeric range."""
        return self.kind in DISCRETE_KINDS

    def as_yaml(self) -> dict[str, list[Any]]:
        """The space as written in a sweep file."""
        return {self.kind: list(self.values) if self.discrete else list(self.bounds or ())}

    @classmethod
    def parse(cls, raw: Any, where: str) -> SpaceSpec:
        """The space written as ``raw`` at ``where`` (e.g. ``search.model.backbone``);
        ``ConfigError`` naming ``where``, the value and the rule when it is not one."""
        kinds = ", ".join(SPACE_KINDS)
        if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in SPACE_KINDS:
            hint = ""
            if isinstance(raw, dict) and raw and all(isinstance(v, dict) for v in raw.values()):
                hint = f" (write a nested path as one dotted key, e.g. `{where}.{next(iter(raw))}`)"
            raise ConfigError(
                f"`{where}` ({raw!r}): a space is a mapping with exactly one of {kinds}{hint}"
            )
        kind, arg = next(iter(raw.items()))
        if kind in DISCRETE_KINDS:
            if not isinstance(arg, list) or not arg:
                raise ConfigError(f"`{where}` ({raw!r}): `{kind}` needs a non-empty list of values")
            return cls(kind=kind, values=tuple(arg))
        if not isinstance(arg, list) or len(arg) != 2:
            raise ConfigError(f"`{where}` ({raw!r}): `{kind}` needs a list [lo, hi]")
        if kind == "randint":
            if not all(isinstance(b, int) and not isinstance(b, bool) for b in arg):
                raise ConfigError(f"`{where}` ({raw!r}): `randint` bounds must be integers")
        elif not all(_is_number(b) for b in arg):
            raise ConfigError(f"`{where}` ({raw!r}): `{kind}` bounds must be finite numbers")
        lo, hi = arg
        if lo >= hi:
            rule = "lo must be < hi (hi is excluded)" if kind == "randint" else "lo must be < hi"
            raise ConfigError(f"`{where}` ({raw!r}): `{kind}` bounds [lo, hi]: {rule}")
        if kind == "loguniform" and lo <= 0:
            raise ConfigError(f"`{where}` ({raw!r}): `loguniform` bounds must be > 0")
        return cls(kind=kind, bounds=(lo, hi))

    def extremes(self) -> list[tuple[str, Any]]:
        """The draws checked against the base config, each with how to name it: every value
        of a list; a range's lowest and highest draw (randint's hi - 1, the largest float
        below a uniform's hi)."""
        if self.discrete:
            return [(f"value {v!r}", v) for v in self.values]
        lo, hi = self.bounds or (0, 0)
        if self.kind == "randint":
            return [(f"lower bound {lo!r}", lo), (f"value {hi - 1!r} (hi - 1)", hi - 1)]
        top = math.nextafter(float(hi), float(lo))
        return [(f"lower bound {lo!r}", float(lo)), (f"draws just below {hi!r}", top)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``None``; a union of several types stays."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _item_type(annotation: Any) -> Any:
    """The type of a list's items, of a tuple's (when all alike), else ``None``."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is list and args:
        return _unwrap(args[0])
    if origin is tuple and args and all(a == args[0] for a in args):
        return _unwrap(args[0])
    return None


def _leaf_kinds(annotation: Any) -> set[str]:
    """Which numbers a field takes: {'int'}, {'int', 'float'} (a float field takes both),
    or empty for strings, booleans, lists and sections."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return set().union(*(_leaf_kinds(a) for a in get_args(annotation)))
    if annotation is float:
        return {"int", "float"}
    if annotation is int:
        return {"int"}
    return set()


def resolve_path(base: dict[str, Any], path: str) -> Any:
    """The schema annotation of the field at dotted ``path``, walking ``JobConfig`` and, for
    list indices, ``base`` (the sweep's job tree). ``ConfigError`` naming the path and the
    rule when ``--set`` could not set it; an unknown name gets its close matches."""
    where = f"search.{path}"
    parts = path.split(".")
    annotation: Any = JobConfig
    node: Any = base
    for i, part in enumerate(parts):
        prefix = ".".join(parts[: i + 1])
        item = _item_type(annotation)
        if _is_model(annotation):
            fields = annotation.model_fields
            if part not in fields:
                raise ConfigError(f"`{where}`: {_unknown(base, path, prefix)}")
            annotation = _unwrap(fields[part].annotation)
            node = node.get(part) if isinstance(node, dict) else None
        elif item is not None or get_origin(annotation) in (list, tuple):
            size = len(node) if isinstance(node, list) else 0
            if not part.isdigit() or int(part) >= size:
                held = f"{size} entries (indices 0..{size - 1})" if size else "no entries"
                raise ConfigError(
                    f"`{where}`: `{'.'.join(parts[:i])}` holds {held} in the sweep's base "
                    f"config, so `{prefix}` does not exist (a search path indexes only "
                    "entries the base config holds)"
                )
            annotation = item if item is not None else Any
            node = node[int(part)]
        else:
            raise ConfigError(
                f"`{where}`: `{'.'.join(parts[:i])}` is a plain value, not a section, so "
                f"`{prefix}` is not a setting"
            )
    return annotation


def _unknown(base: dict[str, Any], path: str, prefix: str) -> str:
    close = difflib.get_close_matches(path, list(known_paths(base)), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"`{prefix}` is not a known setting{hint} (a search path is a dotted config path, "
        "as `--set` takes; `tljob config --reference` lists them)"
    )


def known_paths(base: dict[str, Any]) -> Iterator[str]:
    """Every dotted path ``resolve_path`` accepts for ``base`` (sections, fields, the list
    entries ``base`` holds): the candidates of the close-match suggestions."""
    yield from _paths_under(JobConfig, base, "")


def _paths_under(annotation: Any, node: Any, prefix: str) -> Iterator[str]:
    if _is_model(annotation):
        for name, field in annotation.model_fields.items():
            path = f"{prefix}{name}"
            yield path
            child = node.get(name) if isinstance(node, dict) else None
            yield from _paths_under(_unwrap(field.annotation), child, path + ".")
    elif _item_type(annotation) is not None and isinstance(node, list):
        for i, child in enumerate(node):
            yield f"{prefix}{i}"
            yield from _paths_under(_item_type(annotation), child, f"{prefix}{i}.")


def fixed_reason(path: str) -> str | None:
    """Why a sweep cannot vary ``path`` (it is, holds or lies under a ``FIXED_PER_SWEEP``
    path), or ``None`` when it can."""
    for fixed, reason in FIXED_PER_SWEEP.items():
        if path == fixed or path.startswith(fixed + "."):
            return f"`{fixed}` is fixed for a whole sweep: {reason}"
        if fixed.startswith(path + "."):
            return f"it holds `{fixed}`, which is fixed for a whole sweep: {reason}"
    return None


def check_space_fits(path: str, space: SpaceSpec, annotation: Any) -> None:
    """``ConfigError`` when a range space cannot give values the field takes: a float
    range for a whole-number field, any range for a non-number (use ``choice``)."""
    if space.discrete:
        return
    kinds = _leaf_kinds(annotation)
    needed = "int" if space.kind == "randint" else "float"
    if needed in kinds:
        return
    if kinds:
        rule = "takes whole numbers; use `randint` (or `choice`/`grid`)"
    else:
        rule = "is not a number; use `choice` or `grid` with its values"
    raise ConfigError(f"`search.{path}` ({space.as_yaml()!r}): `{path}` {rule}")
