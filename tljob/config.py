"""The job's one declarative configuration schema, and how it is assembled.

Resolution order (later wins): schema defaults -> YAML file -> ``--set dotted.path=value``
overrides (in the order given) -> validation. Nothing here imports Ray or TensorFlow, so a
bad config is rejected in well under a second, before any cluster is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tljob.backbones import BACKBONES, get_backbone
from tljob.errors import UserError

TRAINABLE_PATTERN = re.compile(r"^(head|all|top:([1-9][0-9]*))$")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_SIZE = 1024

# What every stage compiles (``tljob.model.compile_for_stage`` reads these) and therefore the
# exact names Keras reports after each epoch, since fit validates every epoch. Callbacks may
# only watch these names; anything else would be accepted by Keras and never act.
LOSS = "sparse_categorical_crossentropy"
METRICS = ("accuracy",)
REPORTED_METRICS = tuple(prefix + name for prefix in ("", "val_") for name in ("loss", *METRICS))


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the field, the value and the rule."""


class _Section(BaseModel):
    # allow_inf_nan=False: inf/nan in any float field (learning rates, dropout, CPUs, ...)
    # is a config error, not a run that trains on nothing or never schedules.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _reported_metric(name: str) -> str:
    if name not in REPORTED_METRICS:
        raise ValueError(
            "is not a metric a run reports, so the callback would never act; "
            "use one of " + ", ".join(REPORTED_METRICS)
        )
    return name


class DataSection(_Section):
    source: str = Field(
        "",
        description="Required. Where the images are: a local directory or file:// URI "
        "holding <source>/<class name>/<image file>.",
    )
    layout: Literal["folders"] = Field(
        "folders", description="How classes are encoded. 'folders': one sub-folder per class."
    )
    image_size: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGE_SIZE,
        description="Side in pixels images are resized to (bilinear) before the backbone. "
        "Empty means the backbone's default (224 for the ImageNet backbones). At most "
        f"{MAX_IMAGE_SIZE}: a worker's memory grows with the square of the side (at 1024 one "
        "batch of 32 already needs tens of GiB for backprop), and the preflight check refuses "
        "sizes the cluster's nodes cannot hold.",
    )
    val_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Fraction of each class held out for validation (stratified split).",
    )
    seed: int = Field(
        0, description="Seed of the train/validation split; the same seed gives the same split."
    )
    max_images_per_class: int | None = Field(
        None,
        ge=1,
        description="Use at most this many images of each class (the first ones in sorted "
        "path order). Empty means all.",
    )
    shuffle_buffer: int = Field(
        1024,
        ge=0,
        description="Rows in each worker's local shuffle buffer for training batches; "
        "0 disables shuffling.",
    )


class HeadSection(_Section):
    dropout: float = Field(
        0.2, ge=0.0, lt=1.0, description="Dropout rate after global average pooling."
    )
    dense_units: list[int] = Field(
        default_factory=list,
        description="Hidden Dense(relu) layer sizes between pooling and the softmax layer; "
        "empty means pooling feeds the classifier directly (the classic recipe).",
    )

    @field_validator("dense_units")
    @classmethod
    def _positive_units(cls, units: list[int]) -> list[int]:
        if any(u < 1 for u in units):
            raise ValueError("every entry must be >= 1")
        return units


class ModelSection(_Section):
    backbone: str = Field(
        "mobilenet_v2",
        description="Registered backbone name: " + ", ".join(sorted(BACKBONES)) + ".",
    )
    weights: str = Field(
        "imagenet",
        description="Backbone initialisation: 'none' (random), 'imagenet' (read from the "
        "Keras cache, never downloaded), or a path to a .h5 / .weights.h5 no-top weights file.",
    )
    head: HeadSection = Field(default_factory=HeadSection, description="The classifier head.")

    @field_validator("backbone")
    @classmethod
    def _registered_backbone(cls, name: str) -> str:
        get_backbone(name)  # raises, listing the registered names
        return name

    @field_validator("weights")
    @classmethod
    def _weights_kind(cls, weights: str) -> str:
        if weights in ("none", "imagenet") or weights.endswith(".h5"):
            return weights
        raise ValueError("must be 'none', 'imagenet' or a path ending in .h5 / .weights.h5")


class StageSection(_Section):
    name: str = Field(..., min_length=1, description="Stage name, shown in logs and metrics.")
    epochs: int = Field(..., ge=1, description="Epochs in this stage.")
    learning_rate: float = Field(..., gt=0.0, description="Initial learning rate of the stage.")
    optimizer: str = Field("adam", description="Optimizer: " + ", ".join(OPTIMIZERS) + ".")
    trainable: str = Field(
        "head",
        description="What is trained: 'head' (backbone frozen), 'top:N' (the last N "
        "backbone layers and the head) or 'all'.",
    )

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name not in OPTIMIZERS:
            raise ValueError("must be one of " + ", ".join(OPTIMIZERS))
        return name

    @field_validator("trainable")
    @classmethod
    def _trainable_spec(cls, spec: str) -> str:
        if not TRAINABLE_PATTERN.match(spec):
            raise ValueError("must be 'head', 'all' or 'top:N' with N >= 1")
        return spec


def _default_stages() -> list[StageSection]:
    return [
        StageSection(name="head", epochs=5, learning_rate=1e-4, optimizer="adam", trainable="head"),
        StageSection(
            name="fine_tune", epochs=5, learning_rate=1e-5, optimizer="adam", trainable="top:30"
        ),
    ]


class ReduceLRSection(_Section):
    enabled: bool = Field(True, description="Use ReduceLROnPlateau.")
    monitor: str = Field(
        "val_loss", description="Metric watched: " + ", ".join(REPORTED_METRICS) + "."
    )
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="Multiply the LR by this.")
    patience: int = Field(2, ge=0, description="Epochs without improvement before reducing.")
    min_lr: float = Field(1e-7, ge=0.0, description="Lower bound on the learning rate.")

    _known_monitor = field_validator("monitor")(_reported_metric)


class EarlyStoppingSection(_Section):
    enabled: bool = Field(False, description="Stop a stage early when the metric stalls.")
    monitor: str = Field(
        "val_loss", description="Metric watched: " + ", ".join(REPORTED_METRICS) + "."
    )
    patience: int = Field(3, ge=0, description="Epochs without improvement before stopping.")

    _known_monitor = field_validator("monitor")(_reported_metric)


class TrainSection(_Section):
    batch_size: int = Field(32, ge=1, description="Images per batch on each worker.")
    stages: list[StageSection] = Field(
        default_factory=_default_stages,
        description="Training stages run in order, each recompiled with its own optimizer "
        "and trainable layers. Default: the classic two-stage recipe.",
    )
    reduce_lr: ReduceLRSection = Field(
        default_factory=ReduceLRSection, description="ReduceLROnPlateau settings (per stage)."
    )
    early_stopping: EarlyStoppingSection = Field(
        default_factory=EarlyStoppingSection, description="EarlyStopping settings (per stage)."
    )

    @field_validator("stages")
    @classmethod
    def _unique_stage_names(cls, stages: list[StageSection]) -> list[StageSection]:
        if not stages:
            raise ValueError("at least one stage is required")
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(dupes)}")
        return stages


class ScalingSection(_Section):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one model replica each).")
    use_gpu: bool = Field(False, description="Give each worker GPUs.")
    cpus_per_worker: float = Field(
        0.5,
        gt=0.0,
        description="CPUs reserved per worker. A worker must fit on one node, and the "
        "workers together must leave `scaling.data_cpus` free (checked before training).",
    )
    gpus_per_worker: float = Field(1.0, ge=0.0, description="GPUs per worker when use_gpu.")
    data_cpus: float = Field(
        1.0,
        ge=0.0,
        description="CPUs of the cluster left unreserved by the workers, for Ray Data to "
        "decode images. A job whose workers leave fewer is refused before it starts: with no "
        "CPU left, the workers wait forever for images.",
    )
    resource_wait_seconds: float = Field(
        0.0,
        ge=0.0,
        description="0: the cluster is fixed, and a job it cannot hold is refused at once. "
        "On an autoscaling cluster, wait up to this many seconds for nodes to appear before "
        "refusing.",
    )


class RunSection(_Section):
    name: str = Field(
        "tljob",
        min_length=1,
        description="Run name: outputs go to <storage_path>/<name>/; reusing it resumes.",
    )
    storage_path: str = Field(
        "./tljob-runs",
        description="Directory (or URI) that holds runs. Relative paths are resolved "
        "against the current directory.",
    )
    checkpoints_to_keep: int = Field(2, ge=1, description="Latest checkpoints kept on storage.")
    progress_seconds: float = Field(
        30.0, gt=0.0, description="Print a progress line within an epoch at most this often."
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError("must be letters, digits, '.', '_' or '-', starting alphanumeric")
        return name


class JobConfig(_Section):
    """A whole tljob run."""

    data: DataSection = Field(default_factory=DataSection, description="Input images.")
    model: ModelSection = Field(default_factory=ModelSection, description="Network.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation.")
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Workers.")
    run: RunSection = Field(default_factory=RunSection, description="Outputs and resume.")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> JobConfig:
        spec = get_backbone(self.model.backbone)
        if self.data.image_size is None:
            self.data.image_size = spec.default_image_size
        if self.data.image_size < spec.min_image_size:
            raise ValueError(
                f"`data.image_size` ({self.data.image_size}) must be >= "
                f"{spec.min_image_size} for backbone {spec.name!r}"
            )
        return self

    @property
    def image_size(self) -> int:
        assert self.data.image_size is not None  # filled in by validation
        return self.data.image_size


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"`{path}` is not a known setting (check the spelling)")
        elif e["type"] == "finite_number":
            lines.append(f"`{path}` ({e['input']!r}): must be a finite number, not inf or nan")
        elif path:
            lines.append(f"`{path}` ({e['input']!r}): {msg}")
        else:
            lines.append(msg)
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a","b","c"], value parsed as a YAML scalar or list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like dotted.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
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

    Overrides are applied on top of the defaults merged with the file, so
    ``--set train.stages.1.epochs=3`` edits the default second stage even when the file
    does not mention stages. Raises ``ConfigError`` for any unusable input.
    """
    tree: dict[str, Any] = JobConfig().model_dump(mode="json", exclude={"data": {"image_size"}})
    if path is not None:
        file_tree = _read_yaml(Path(path))
        tree = _merge(tree, file_tree)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(tree, keys, value)
    try:
        return JobConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None
    except ValueError as e:  # cross-field rules and registry lookups outside a field
        raise ConfigError(f"invalid config:\n  {e}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections, "
            f"not a {type(loaded).__name__}"
        )
    return loaded


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; lists and scalars in ``top`` replace those in ``base``."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: JobConfig) -> str:
    """The resolved config as YAML (what is saved with each run)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
