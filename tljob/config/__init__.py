"""The job configuration: schema, loading and reference. Pure.

``train`` the optimisation vocabulary (optimizers, schedules, reported metrics, precision);
``schema`` owns the sections, their rules and the typed values parsed from user strings
(``data`` holds the data section; ``s3`` the object-store section and the rule that
refuses credentials anywhere; ``trainable`` a stage's 'head' / 'top_layers:N' /
'top_blocks:K' / 'all');
``load`` builds a ``JobConfig`` from defaults, a YAML file and ``--set`` overrides;
``reference`` renders the settings table. May import ``tljob.errors``, ``tljob.zoo``
(backbone names and sizes), ``tljob.augment.ops`` (each augmentation op declares its own
options; numpy and OpenCV), pydantic and PyYAML; never Ray or TensorFlow, so a bad config is
refused in well under a second, before any cluster is touched.
"""

from tljob.config.data import MAX_IMAGE_SIZE, DataSection
from tljob.config.load import apply_override, dump_config, load_config, parse_override
from tljob.config.s3 import S3Section
from tljob.config.schema import (
    ConfigError,
    HeadSection,
    JobConfig,
    ModelSection,
    RunSection,
    ScalingSection,
    TrainSection,
)
from tljob.config.stage import StageSection
from tljob.config.train import (
    BEST_METRICS,
    LOSS,
    METRICS,
    OPTIMIZERS,
    PER_CLASS_METRICS,
    REPORTED_METRICS,
    SCHEDULES,
    EarlyStoppingSection,
    Metric,
    Optimizer,
    ReduceLRSection,
    ScheduleSection,
    balanced_class_weights,
    higher_is_better,
)
from tljob.config.trainable import Trainable

__all__ = [
    "BEST_METRICS",
    "LOSS",
    "MAX_IMAGE_SIZE",
    "METRICS",
    "OPTIMIZERS",
    "PER_CLASS_METRICS",
    "REPORTED_METRICS",
    "SCHEDULES",
    "ConfigError",
    "DataSection",
    "EarlyStoppingSection",
    "HeadSection",
    "JobConfig",
    "Metric",
    "ModelSection",
    "Optimizer",
    "ReduceLRSection",
    "RunSection",
    "S3Section",
    "ScalingSection",
    "ScheduleSection",
    "StageSection",
    "TrainSection",
    "Trainable",
    "apply_override",
    "balanced_class_weights",
    "dump_config",
    "load_config",
    "higher_is_better",
    "parse_override",
]
