"""The job's one declarative configuration schema: sections, rules, typed values.

Strings a user writes for an optimizer, a stage's trainable layers, a metric or the weights
source are parsed here, once, into typed values (``Literal`` names, ``Trainable``,
``WeightsSource``) that the rest of tljob consumes without parsing again; they serialise
back to the same strings, so a saved config reads back equal. Derived defaults (the image
size from the backbone) are computed properties and are never written into the user's
config; ``JobConfig.record()`` is what a run saves, with them resolved.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from tljob.config._base import _Section
from tljob.config.augment import AugmentSection
from tljob.config.data import DataSection
from tljob.config.features import refuse_invalid_cached
from tljob.config.s3 import S3Section, credential_keys
from tljob.config.stage import StageSection, _default_stages
from tljob.config.train import (
    BEST_METRICS,
    PRECISIONS,
    BestMetricName,
    ClassWeightName,
    EarlyStoppingSection,
    PrecisionName,
    ReduceLRSection,
)
from tljob.errors import UserError
from tljob.zoo import WeightsSource, get_backbone


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the field, the value and the rule."""


def _parse_weights(value: Any) -> WeightsSource:
    if isinstance(value, WeightsSource):
        return value
    if not isinstance(value, str):
        return WeightsSource.parse(repr(value))  # the message of the rule
    return WeightsSource.parse(value)


# Typed in Python, the user's spelling in YAML and JSON.
WeightsSpec = Annotated[
    WeightsSource, PlainValidator(_parse_weights), PlainSerializer(str, return_type=str)
]


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
        description="Registered backbone name (e.g. resnet50, efficientnet_b0, convnext_tiny, "
        "alexnet); `tljob backbones` lists them all with their sizes, preprocessing and "
        "ImageNet weights.",
    )
    weights: WeightsSpec = Field(
        WeightsSource("imagenet"),
        description="Backbone initialisation: 'none' (random); 'imagenet' (the Keras "
        "cache's file, else downloaded once on the driver and checked against its published "
        "sha256 unless offline; converted from torchvision for *_tv backbones); or a local "
        "path or s3:// URI to a .h5 / .weights.h5 no-top weights file, optionally pinned as "
        "<path>#sha256=<hex>. The driver resolves it once and ships the file to the workers "
        "through the run directory.",
    )
    offline: bool = Field(
        False,
        description="Never download weights (as does the environment variable "
        "TLJOB_OFFLINE=1): 'imagenet' must then be in the Keras cache (or, for *_tv "
        "backbones, in an installed weights package).",
    )
    head: HeadSection = Field(default_factory=HeadSection, description="The classifier head.")

    @field_validator("backbone")
    @classmethod
    def _registered_backbone(cls, name: str) -> str:
        get_backbone(name)  # raises, listing the registered names
        return name


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
    class_weight: ClassWeightName = Field(
        "none",
        description="'balanced': weight each training image's loss by n_images / "
        "(n_classes * n_images_of_its_class), from the training split's counts; 'none'.",
    )
    best_metric: BestMetricName = Field(
        "val_accuracy",
        description="What makes an epoch the best (exported): "
        + ", ".join(BEST_METRICS)
        + "; ties go to the lower val_loss (to the higher val_accuracy for val_loss), then "
        "the earlier epoch.",
    )
    precision: PrecisionName = Field(
        "float32",
        description="Compute precision: " + ", ".join(PRECISIONS) + " (mixed_float16 needs "
        "GPUs). Variables and the softmax classifier stay float32.",
    )
    jit_compile: bool = Field(False, description="Compile the training step with XLA.")
    tensorboard: bool = Field(
        False,
        description="Write TensorBoard logs (every epoch's figures and learning rate) to "
        "<run>/tensorboard, local or S3: `tensorboard --logdir <run>/tensorboard`.",
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
    worker_cache_mib: float = Field(
        1024.0,
        ge=0.0,
        description="Each worker reads its training and validation images into its memory "
        "once, as uint8, when they fit in this many MiB (training first), and serves every "
        "epoch from there, the training rows in a new order each epoch (drawn from "
        "`data.seed` and the epoch; none when `data.shuffle_buffer` is 0). What does not "
        "fit is streamed from Ray Data every epoch. 0: always stream.",
    )
    max_failures: int = Field(
        2,
        ge=0,
        description="Worker-group failures Ray Train recovers from in one run (its "
        "FailureConfig.max_failures): when a worker dies, every worker restarts from the "
        "newest complete checkpoint and the run goes on. 0: the first failure ends the run "
        "(rerunning the same command still resumes).",
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
    augment: AugmentSection = Field(
        default_factory=AugmentSection,
        description="Random views of the training images (validation is only resized).",
    )
    model: ModelSection = Field(default_factory=ModelSection, description="Network.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation.")
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Workers.")
    run: RunSection = Field(default_factory=RunSection, description="Outputs and resume.")
    s3: S3Section = Field(
        default_factory=S3Section, description="How s3:// URIs are reached (no credentials)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, tree: Any) -> Any:
        # A model-level error: the message is printed without the offending values.
        keys = [f"`{key}`" for key in credential_keys(tree)]
        endpoint = (tree.get("s3") or {}).get("endpoint_url") if isinstance(tree, dict) else None
        if isinstance(endpoint, str) and "@" in endpoint.split("://", 1)[-1].split("/", 1)[0]:
            keys.append("`s3.endpoint_url` (user:password@ in the URL)")
        if keys:
            raise ValueError(
                f"credentials are never read from the config: {', '.join(keys)}"
                " (the config is saved as config.yaml with every run, so a key there would "
                "leak). Remove them, and give each process (driver and Ray workers) its "
                "credentials through the standard AWS chain: the AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN environment variables, a shared "
                "profile (AWS_PROFILE), or web identity on Kubernetes (on KubeRay, from a "
                "Secret, as `tljob k8s render` does)"
            )
        return tree

    @model_validator(mode="after")
    def _cross_field_rules(self) -> JobConfig:
        if self.s3.endpoint_url is not None or self.s3.addressing_style == "path":
            # The rules live with the settings, which apply them again once the environment
            # has filled in empty fields (tljob.storage, imported only when needed).
            from tljob.storage.settings import S3Settings

            S3Settings(
                endpoint_url=self.s3.endpoint_url.rstrip("/") if self.s3.endpoint_url else None,
                region=self.s3.region,
                addressing_style=self.s3.addressing_style,
                allow_http=self.s3.allow_http,
            )
        if self.train.precision == "mixed_float16" and not self.scaling.use_gpu:
            raise ValueError(
                "`train.precision` ('mixed_float16') needs GPUs (`scaling.use_gpu: true`); "
                "on CPUs use 'mixed_bfloat16' or 'float32'"
            )
        spec = get_backbone(self.model.backbone)
        if self.image_size < spec.min_image_size:
            raise ValueError(
                f"`data.image_size` ({self.image_size}) must be >= "
                f"{spec.min_image_size} for backbone {spec.name!r}"
            )
        for i, stage in enumerate(self.train.stages):
            if stage.trainable.kind == "top_blocks" and stage.trainable.blocks > len(spec.blocks):
                raise ValueError(
                    f"`train.stages.{i}.trainable` ('{stage.trainable}'): backbone "
                    f"{spec.name!r} has {len(spec.blocks)} blocks, so K must be <= "
                    f"{len(spec.blocks)}"
                )
        refuse_invalid_cached(self)
        if self.data.stored_size is not None and self.data.stored_size < self.image_size:
            raise ValueError(
                f"`data.stored_size` ({self.data.stored_size}) must be >= the training size "
                f"`data.image_size` ({self.image_size})"
            )
        return self

    @property
    def stored_size(self) -> int:
        """``data.stored_size``, or ceil(image_size * 8 / 7): a margin for random crops."""
        if self.data.stored_size is not None:
            return self.data.stored_size
        return -(-self.image_size * 8 // 7)

    @property
    def prepared_path(self) -> str:
        """``data.prepared_path``, or ``<run.storage_path>/prepared``."""
        if self.data.prepared_path:
            return self.data.prepared_path
        return self.run.storage_path.rstrip("/") + "/prepared"

    @property
    def image_size(self) -> int:
        """``data.image_size``, or the backbone's default when it is empty (computed, never
        stored back into ``data``)."""
        if self.data.image_size is not None:
            return self.data.image_size
        return get_backbone(self.model.backbone).default_image_size

    def resolved(self) -> JobConfig:
        """A copy with every derived default written out: what a run trains with."""
        data = self.data.model_copy(update={"image_size": self.image_size})
        return self.model_copy(update={"data": data})

    def record(self) -> dict[str, Any]:
        """The resolved config as plain JSON types: what a run saves as ``config.yaml`` and
        what a rerun is compared with."""
        return self.resolved().model_dump(mode="json")
