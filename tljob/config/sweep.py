"""A sweep file (pure): a job config plus ``search`` (dotted config path -> space, see
``tljob.config.search``) and ``tune`` (``TuneSection``). ``load_sweep`` refuses anything
unusable with ``ConfigError`` (exit 2) before anything touches Ray; ``trial_job`` turns one
trial's sampled values into its ``JobConfig`` through the same override-and-validate path
as ``--set``.

Every trial trains on the data the base job prepares (``Sweep.job``): the paths that would
change it are fixed per sweep, and when ``data.image_size`` is empty the searched backbones
must share one default size.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tljob.config._base import _Section
from tljob.config.load import (
    apply_override,
    error_lines,
    job_tree,
    parse_override,
    read_config_file,
    validate_job,
)
from tljob.config.paths import absolute_path, make_paths_absolute
from tljob.config.schema import ConfigError, JobConfig
from tljob.config.search import (
    SpaceSpec,
    check_space_fits,
    fixed_reason,
    resolve_path,
)
from tljob.config.train import REPORTED_METRICS, MetricName, higher_is_better
from tljob.zoo import get_backbone

__all__ = ["SpaceSpec", "Sweep", "TuneSection", "load_sweep", "trial_job"]

SWEEP_SECTIONS = ("search", "tune")


class TuneSection(_Section):
    """How Ray Tune runs the trials of a sweep."""

    scheduler: Literal["asha", "median", "fifo"] = Field(
        "asha",
        description="Trial scheduler: 'asha' (ASHA: stops the trials behind at each rung of "
        "`grace_period` * `reduction_factor`^k epochs), 'median' (median stopping: stops a "
        "trial whose best result is below the median of the others' at the same epoch), "
        "'fifo' (every trial runs all its epochs).",
    )
    searcher: Literal["random", "grid", "optuna"] = Field(
        "random",
        description="'random': Tune's basic variant generator, which draws `choice` and "
        "range spaces at random and expands every `grid` space (each draw runs once per grid "
        "point); 'grid': only `grid` and `choice` spaces, every combination enumerated; "
        "'optuna': Optuna's TPE (the `optuna` extra), which refuses `grid` spaces.",
    )
    num_samples: int = Field(
        1,
        ge=1,
        description="'random': random draws, each run once per grid point; 'grid': times the "
        "whole grid is repeated; 'optuna': trials.",
    )
    time_budget_s: float | None = Field(
        None,
        gt=0.0,
        description="Stop starting and running trials after this many seconds; empty: none.",
    )
    metric: MetricName = Field(
        "val_accuracy",
        description="What ranks the trials, reported every epoch: "
        + ", ".join(REPORTED_METRICS)
        + ". A trial's value is its best epoch's.",
    )
    mode: Literal["max", "min"] | None = Field(
        None,
        description="'max' or 'min'; empty: from the metric (min for losses, else max).",
    )
    max_concurrent_trials: int | None = Field(
        None,
        ge=1,
        description="Trials running at once; empty: as many as the cluster's GPUs (or CPUs) "
        "hold, each trial needing its workers' CPUs, its driver's `trial_cpus` and its own "
        "`scaling.data_cpus`, and at least one CPU left free for Ray Data.",
    )
    grace_period: int = Field(
        1, ge=1, description="'asha': epochs every trial runs before it can be stopped."
    )
    reduction_factor: float = Field(
        2.0,
        gt=1.0,
        description="'asha': rungs at `grace_period` * factor^k epochs, each keeping the top "
        "1/factor of the trials. 2 (Tune's default is 4): a sweep of a few trials of a few "
        "epochs still gets several rungs, each keeping half.",
    )
    trial_cpus: float = Field(
        0.25,
        gt=0.0,
        description="CPUs reserved for each trial's driver (it only coordinates its workers).",
    )
    name: str = Field(
        "sweep",
        min_length=1,
        description="Sweep name: its folder is <storage_path>/<name>/ (trials.csv, sweep.png, "
        "Tune's state); reusing it with --resume continues the sweep.",
    )
    storage_path: str | None = Field(
        None,
        description="Directory (or URI) that holds sweeps; empty: `run.storage_path`, beside "
        "the runs (the trials' runs and the prepared data stay under `run.storage_path`).",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError("must be letters, digits, '.', '_' or '-', starting alphanumeric")
        return name

    @model_validator(mode="after")
    def _mode_fits_metric(self) -> TuneSection:
        natural = "max" if higher_is_better(self.metric) else "min"
        if self.mode is not None and self.mode != natural:
            raise ValueError(
                f"`mode` ({self.mode!r}): `metric` {self.metric!r} improves towards "
                f"{natural!r}; set mode {natural!r} or leave it empty"
            )
        return self

    @property
    def resolved_mode(self) -> Literal["max", "min"]:
        """``mode``, or the metric's direction when it is empty."""
        if self.mode is not None:
            return self.mode
        return "max" if higher_is_better(self.metric) else "min"


@dataclass
class Sweep:
    """A loaded sweep file.

    ``base`` is the job tree (defaults -> YAML -> ``--set``, as ``load_config`` builds it)
    without ``search`` and ``tune``; ``job`` is ``base`` validated, and prepares the data of
    every trial; ``search`` maps dotted paths to spaces in the file's order."""

    base: dict[str, Any]
    job: JobConfig
    search: dict[str, SpaceSpec]
    tune: TuneSection

    def path_list(self) -> list[str]:
        """The searched dotted paths, in the file's order."""
        return list(self.search)

    @property
    def mode(self) -> Literal["max", "min"]:
        """The direction of ``tune.metric``: ``tune.mode`` or derived from the metric."""
        return self.tune.resolved_mode

    @property
    def storage_path(self) -> str:
        """The sweep's folder: ``<tune.storage_path or run.storage_path>/<tune.name>``."""
        root = self.tune.storage_path or self.job.run.storage_path
        return root.rstrip("/") + "/" + self.tune.name

    def trial_count(self) -> int | None:
        """Trials the sweep runs without a time budget, or ``None`` when the searcher
        decides ('optuna' runs ``num_samples``; so does it here)."""
        if self.tune.searcher == "optuna":
            return self.tune.num_samples
        expanded = ("grid",) if self.tune.searcher == "random" else ("grid", "choice")
        count = self.tune.num_samples
        for space in self.search.values():
            if space.kind in expanded:
                count *= len(space.values)
        return count


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read the sweep file at ``path``: its job config (defaults -> file -> ``overrides``),
    its ``search`` and ``tune`` sections (``--set tune.x=v`` edits the latter). Relative
    local paths are made absolute here, against the current directory: the trials run
    elsewhere (``tljob.config.paths``). Raises ``ConfigError`` listing every problem;
    nothing here imports Ray."""
    file_tree = read_config_file(path)
    raw_search = file_tree.pop("search", None)
    raw_tune = file_tree.pop("tune", None)
    tune_tree: Any = {} if raw_tune is None else copy.deepcopy(raw_tune)
    job_overrides = []
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "search":
            raise ConfigError(
                f"override {text!r}: the search section is edited in the sweep file, not with --set"
            )
        if keys[0] != "tune":
            job_overrides.append(text)
        elif len(keys) == 1:
            tune_tree = value
        elif isinstance(tune_tree, dict):
            apply_override(tune_tree, keys[1:], value)
    base = job_tree(file_tree, job_overrides)
    make_paths_absolute(base)
    job = validate_job(copy.deepcopy(base))
    if isinstance(tune_tree, dict) and isinstance(tune_tree.get("storage_path"), str):
        tune_tree["storage_path"] = absolute_path(tune_tree["storage_path"])
    tune = _tune_section(tune_tree)
    search = _search_section(raw_search, base)
    problems = _searcher_problems(search, tune)
    for dotted, space in search.items():
        problems += _value_problems(base, dotted, space)
    if not problems:
        problems += _image_size_problems(job, base, search)
    if problems:
        raise ConfigError("invalid sweep:\n  " + "\n  ".join(problems))
    return Sweep(base=base, job=job, search=search, tune=tune)


def trial_job(sweep: Sweep, sampled: dict[str, Any], run_name: str) -> JobConfig:
    """The ``JobConfig`` of one trial: each sampled value set on a copy of ``sweep.base``
    with ``apply_override`` (as ``--set path=value`` would), ``run.name`` set to
    ``run_name``, validated. ``ConfigError`` naming the sampled values when the combination
    is invalid, or when a key is not a search path of the sweep."""
    unknown = [key for key in sampled if key not in sweep.search]
    if unknown:
        raise ConfigError(
            f"trial {run_name}: {', '.join(unknown)} not among the sweep's search paths "
            f"({', '.join(sweep.search)})"
        )
    tree = copy.deepcopy(sweep.base)
    values = {key: _plain(value) for key, value in sampled.items()}
    for key, value in values.items():
        apply_override(tree, key.split("."), value)
    apply_override(tree, ["run", "name"], run_name)
    described = ", ".join(f"{key}={value!r}" for key, value in values.items())
    try:
        job = validate_job(tree)
    except ConfigError as e:
        reason = str(e).removeprefix("invalid config:\n  ")
        raise ConfigError(
            f"trial {run_name}: the sampled values ({described}) make an invalid config:\n  "
            + reason
        ) from None
    if _data_settings(job) != _data_settings(sweep.job):
        raise ConfigError(
            f"trial {run_name}: the sampled values ({described}) change the prepared data, "
            "which a sweep prepares once for all its trials"
        )
    return job


def _plain(value: Any) -> Any:
    """A numpy scalar (what Tune's samplers give) as the Python number it holds."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _data_settings(job: JobConfig) -> tuple[Any, ...]:
    """What the prepared data of ``job`` depends on, and where it is."""
    data = job.data.model_dump(exclude={"shuffle_buffer", "max_bad_fraction"})
    return (data, job.image_size, job.stored_size, job.prepared_path)


def _tune_section(tune_tree: Any) -> TuneSection:
    if not isinstance(tune_tree, dict):
        raise ConfigError(
            f"invalid sweep:\n  `tune` ({tune_tree!r}): must be a mapping of settings"
        )
    try:
        return TuneSection.model_validate(tune_tree)
    except ValidationError as e:
        errors = [{**err, "loc": ("tune", *err["loc"])} for err in e.errors()]
        raise ConfigError("invalid sweep:\n  " + "\n  ".join(error_lines(errors))) from None


def _search_section(raw: Any, base: dict[str, Any]) -> dict[str, SpaceSpec]:
    """The parsed spaces, each path checked against the schema; ``ConfigError`` listing
    every problem."""
    if raw is None or raw == {}:
        raise ConfigError(
            "invalid sweep: the `search` section has no entries; map at least one dotted "
            "config path to a space, e.g. `model.backbone: {choice: [resnet50, mobilenet_v2]}`"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid sweep: `search` ({raw!r}) must be a mapping of dotted config paths to spaces"
        )
    search: dict[str, SpaceSpec] = {}
    problems: list[str] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            problems.append(f"`search` key {key!r}: must be a dotted config path")
            continue
        try:
            space = SpaceSpec.parse(value, f"search.{key}")
            reason = fixed_reason(key)
            if reason is not None:
                raise ConfigError(f"`search.{key}`: a sweep cannot vary it; {reason}")
            check_space_fits(key, space, resolve_path(base, key))
        except ConfigError as e:
            problems.append(str(e))
            continue
        search[key] = space
    if problems:
        raise ConfigError("invalid sweep:\n  " + "\n  ".join(problems))
    return search


def _searcher_problems(search: dict[str, SpaceSpec], tune: TuneSection) -> list[str]:
    if tune.searcher == "optuna":
        grids = [f"`search.{p}`" for p, s in search.items() if s.kind == "grid"]
        if grids:
            return [
                f"`tune.searcher` ('optuna'): Optuna draws its own points and cannot "
                f"enumerate `grid` spaces ({', '.join(grids)}); use `choice` for them, or "
                "searcher 'random'"
            ]
    if tune.searcher == "grid":
        ranges = [f"`search.{p}` ({s.kind})" for p, s in search.items() if not s.discrete]
        if ranges:
            return [
                f"`tune.searcher` ('grid'): enumerates only `grid` and `choice` spaces, not "
                f"{', '.join(ranges)}; list the values with `grid`, or use searcher 'random' "
                "or 'optuna'"
            ]
    return []


def _value_problems(base: dict[str, Any], dotted: str, space: SpaceSpec) -> list[str]:
    """Each value the space can give (its list, or its lowest and highest draws) set
    alone on the base config: a value rejected by its own field's rule can never be
    valid. Rules across fields are left to the trials (another searched value may fix
    them)."""
    parts = dotted.split(".")
    problems = []
    for named, value in space.extremes():
        tree = copy.deepcopy(base)
        apply_override(tree, parts, value)
        try:
            JobConfig.model_validate(tree)
        except ValidationError as e:
            own = [err for err in e.errors() if [str(p) for p in err["loc"]][: len(parts)] == parts]
            if own:
                problems.append(
                    f"`search.{dotted}` {named} can never be valid: " + "; ".join(error_lines(own))
                )
        except ValueError:
            pass  # a rule across fields: the trial that draws this value reports it
    return problems


def _image_size_problems(
    job: JobConfig, base: dict[str, Any], search: dict[str, SpaceSpec]
) -> list[str]:
    """With ``data.image_size`` empty, each backbone would train (and need its data
    prepared) at its own default size; a sweep prepares once, at the base job's size."""
    space = search.get("model.backbone")
    if space is None or not space.discrete or base["data"].get("image_size") is not None:
        return []
    sizes = {name: get_backbone(name).default_image_size for name in space.values}
    if set(sizes.values()) == {job.image_size}:
        return []
    listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
    if job.model.backbone not in sizes:
        listed += f"; the base job's {job.model.backbone} {job.image_size}"
    return [
        f"`search.model.backbone`: with `data.image_size` empty each backbone trains at its "
        f"default size ({listed} px), but a sweep prepares its data once and trains every "
        "trial at one size: set `data.image_size` (e.g. "
        f"{max(sizes.values())})"
    ]
