"""Building, freezing and compiling the network. The network is three swappable pieces:

    uint8 RGB image, any size
      -> ResizeImages(image_size)         same bilinear kernel as the data pipeline
      -> [augment]                        ``augment.where: model`` only; training only
      -> BackbonePreprocess(mode)         the backbone's own ImageNet input convention
      -> backbone(training=False)         BatchNorm in inference mode (pretrained weights)
      -> GlobalAveragePooling -> Dropout -> [Dense relu]* -> Dense softmax (float32)

as an ``ImageClassifier`` (``tljob.nn.layers``): a batch of no images, which a replica gets
under a distribution strategy, gives (0, classes) without running the layers.

The loss follows the run's label format (``tljob.nn.labels.LabelFormat``: integer class
indices and ``sparse_categorical_crossentropy``, or MixUp / CutMix class probabilities and
``categorical_crossentropy``; label-smoothed when a stage asks) and is compiled here with
``tljob.config.METRICS``, each stage's optimizer and learning-rate schedule
(``tljob.nn.schedules``). The exported model leaves the augmentation out
(``serving_model``). A stage may switch BatchNorm between inference and training mode
(``with_batchnorm``); the global precision policy is set before building (``set_precision``).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tljob.config import METRICS, JobConfig, ModelSection, Optimizer, StageSection, Trainable
from tljob.config.augment import AugmentSection
from tljob.config.train import Precision
from tljob.errors import UserError
from tljob.nn import schedules
from tljob.nn.augment_layers import AUGMENT_LAYER, training_augmentation
from tljob.nn.backbone_weights import check_fits, load_checked
from tljob.nn.builders import BUILDERS
from tljob.nn.keras import tf_keras
from tljob.nn.labels import SPARSE, LabelFormat
from tljob.nn.layers import BackbonePreprocess, ImageClassifier, ResizeImages
from tljob.nn.metrics import ClassMetrics
from tljob.nn.schedules import StageSchedule, make_optimizer
from tljob.nn.torchvision_mobilenet import convert_for
from tljob.zoo import (
    BackboneSpec,
    WeightsRecord,
    WeightsSource,
    get_backbone,
    resolve_weights_file,
)

BACKBONE_LAYER = "backbone"
MODEL_NAME_PREFIX = "tljob_"  # + the backbone's registry name
SCRATCH_BATCHNORM_MOMENTUM = 0.9


def backbone_constructor(spec: BackboneSpec) -> Callable[..., tf_keras.Model]:
    """The function that builds ``spec``'s network: its builder, or its Keras application."""
    if spec.builder:
        return BUILDERS[spec.builder]
    # every application class is exported here (tf_keras.applications.mobilenet_v3, e.g.,
    # exports only its preprocess_input)
    return getattr(tf_keras.applications, spec.keras_class)


def resolve_here(
    spec: BackboneSpec, weights: WeightsSource, image_size: int, offline: bool
) -> str | None:
    """``model.weights`` as a local file in this process (converting weights needs Keras,
    so the converter is passed from here); what a model built outside a run starts from."""
    return resolve_weights_file(spec, weights, image_size, offline, convert_for)


def empty_backbone(spec: BackboneSpec, image_size: int) -> tf_keras.Model:
    """``spec``'s network without its classifier, randomly initialised."""
    constructor = backbone_constructor(spec)
    return constructor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))


def check_weights_file(
    spec: BackboneSpec, weights: WeightsSource, weights_file: str, image_size: int
) -> WeightsRecord | None:
    """Build ``spec``'s network and check that ``weights_file``, the local copy of
    ``model.weights`` (a file), fits it, without loading it: what the driver does for a
    file without a tljob record before anything starts (``WeightsMismatchError``, naming
    the first differing layer, otherwise). Returns the file's record."""
    label = f"`model.weights` ({weights.path!r})"
    return check_fits(empty_backbone(spec, image_size), spec.name, weights_file, label)


def build_backbone(
    spec: BackboneSpec,
    image_size: int,
    weights: WeightsSource,
    weights_file: str | None = None,
    offline: bool = False,
) -> tf_keras.Model:
    """The registered Keras application without its classifier, named ``backbone``.

    ``weights_file``: the resolved local file of pretrained ``weights`` (what the driver
    shipped, on a worker); when None, ``weights`` is resolved in this process."""
    if weights.pretrained and weights_file is None:
        weights_file = resolve_here(spec, weights, image_size, offline)
    backbone = empty_backbone(spec, image_size)
    if weights.pretrained:
        load_checked(backbone, spec.name, weights, weights_file)  # refuses another's file
    backbone._name = BACKBONE_LAYER  # a stable name lets freezing find it after reloads
    if not weights.pretrained:
        # Keras' ImageNet BatchNorm momentum (0.999 in MobileNetV2) needs thousands of
        # steps before the moving statistics used at validation mean anything; from random
        # weights, runs are short enough that 0.9 is the usable choice.
        for layer in backbone.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BATCHNORM_MOMENTUM
    return backbone


def batchnorm_frozen(model_cfg: ModelSection) -> bool:
    """Whether BatchNorm runs in inference mode throughout (true for pretrained weights)."""
    return model_cfg.weights.pretrained


def build_model(
    model_cfg: ModelSection,
    num_classes: int,
    image_size: int,
    weights_file: str | None = None,
    augment: AugmentSection | None = None,
    seed: int = 0,
) -> tf_keras.Model:
    """Backbone + head for ``num_classes`` classes; takes uint8 RGB batches of any size and
    any number of images, none included (``ImageClassifier``).

    ``weights_file``: the resolved backbone weights (see ``build_backbone``). ``augment``:
    the job's section; with ``where: model`` and an option on, the training-only
    augmentation layers (``tljob.nn.augment_layers``) follow the resize, seeded from
    ``augment.seed`` or else ``seed`` (``data.seed``). They hold no weights."""
    if num_classes < 2:
        raise ValueError(f"num_classes ({num_classes}) must be >= 2")
    spec = get_backbone(model_cfg.backbone)
    backbone = build_backbone(
        spec, image_size, model_cfg.weights, weights_file, offline=model_cfg.offline
    )
    images = tf_keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = ResizeImages(image_size, name="resize")(images)
    augmentation = training_augmentation(augment, image_size, seed)
    if augmentation is not None:
        x = augmentation(x)
    x = BackbonePreprocess(spec.preprocessing, name="preprocess")(x)
    # With pretrained weights, training=False keeps BatchNorm in inference mode even after
    # the backbone is unfrozen, so fine-tuning cannot wreck the pretrained statistics.
    # Random weights have no statistics to protect (and in inference mode their activations
    # vanish), so there BatchNorm trains whenever the backbone does.
    x = backbone(x, training=False if batchnorm_frozen(model_cfg) else None)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if model_cfg.head.dropout > 0:
        x = tf_keras.layers.Dropout(model_cfg.head.dropout, name="dropout")(x)
    for i, units in enumerate(model_cfg.head.dense_units):
        x = tf_keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    probs = tf_keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="classifier"
    )(x)
    return ImageClassifier(images, probs, name=f"{MODEL_NAME_PREFIX}{spec.name}")


def build_job_model(
    job: JobConfig, num_classes: int, weights_file: str | None = None
) -> tf_keras.Model:
    """``build_model`` for a job: its model, image size and augmentation (seeded from
    ``augment.seed``, else ``data.seed``)."""
    return build_model(
        job.model, num_classes, job.image_size, weights_file, job.augment, job.data.seed
    )


def batchnorm_trains(model_cfg: ModelSection, stage: StageSection) -> bool:
    """Whether ``stage`` trains BatchNorm statistics (``stage.batchnorm``; 'auto': only
    without pretrained weights). Layers that stay frozen never update them either way."""
    if stage.batchnorm == "auto":
        return not batchnorm_frozen(model_cfg)
    return stage.batchnorm == "train"


def with_batchnorm(model: tf_keras.Model, trains: bool) -> tf_keras.Model:
    """The same layers and weights, rewired with the backbone called in training mode
    (``trains``: BatchNorm follows fit, updating its statistics) or inference mode.

    Keras records ``training=False`` in the functional graph, so switching means calling
    the (already built) layers again on a new input: no variable is created or copied, and
    the weights keep their order. Recompile the returned model.
    """
    return _rechained(model, backbone_training=None if trains else False)


def _rechained(
    model: tf_keras.Model, backbone_training: bool | None, augment: bool = True
) -> tf_keras.Model:
    """``build_model``'s chain called again on a new input (no variable created or copied):
    the backbone with ``backbone_training``, the augmentation layer kept if ``augment``."""
    images = tf_keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = images
    for layer in model.layers[1:]:  # the chain build_model makes, in order
        if len(layer.inbound_nodes[0].parent_nodes) != 1:
            raise ValueError(f"layer {layer.name!r} is not part of a single chain")
        if layer.name == BACKBONE_LAYER:
            x = layer(x, training=backbone_training)
        elif layer.name != AUGMENT_LAYER or augment:
            x = layer(x)
    return ImageClassifier(images, x, name=model.name)


def has_augmentation(model: tf_keras.Model) -> bool:
    return any(layer.name == AUGMENT_LAYER for layer in model.layers)


def augmentation_steps(model: tf_keras.Model) -> list[str]:
    """The in-model augmentation's layers, short names in order ('rotation', 'flip', ...)."""
    if not has_augmentation(model):
        return []
    prefix = AUGMENT_LAYER + "_"
    return [layer.name.removeprefix(prefix) for layer in model.get_layer(AUGMENT_LAYER).layers]


def serving_model(model: tf_keras.Model) -> tf_keras.Model:
    """``model`` without its training-only augmentation layer (the same layers and weights:
    what is exported), or ``model`` itself when it has none. The backbone keeps the
    BatchNorm mode it is called with in ``model``."""
    if not has_augmentation(model):
        return model
    calls = [
        node.call_kwargs
        for nodes in model._nodes_by_depth.values()  # this model's own calls only
        for node in nodes
        if node.layer.name == BACKBONE_LAYER
    ]
    return _rechained(model, backbone_training=calls[0].get("training"), augment=False)


def backbone_of(model: tf_keras.Model) -> tf_keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def backbone_spec_of(model: tf_keras.Model) -> BackboneSpec:
    """The registry entry ``model`` was built from (``build_model`` names it after it)."""
    return get_backbone(model.name.removeprefix(MODEL_NAME_PREFIX))


class TooManyBlocksError(UserError, ValueError):
    """``top_blocks:K`` asks for more blocks than the backbone has."""


def block_layers(backbone: tf_keras.Model, spec: BackboneSpec, count: int) -> list:
    """The layers of the last ``count`` blocks of ``backbone``, per ``spec.blocks``: from the
    start of block ``len(blocks) - count`` to the end of the network."""
    if not 1 <= count <= len(spec.blocks):
        raise TooManyBlocksError(
            f"`trainable` ('top_blocks:{count}'): backbone {spec.name!r} has "
            f"{len(spec.blocks)} blocks, so K must be between 1 and {len(spec.blocks)}"
        )
    marker = spec.blocks[len(spec.blocks) - count]
    names = [layer.name for layer in backbone.layers]
    if marker.startswith(">"):
        starts = [i + 1 for i, name in enumerate(names) if name == marker[1:]]
    else:
        starts = [i for i, name in enumerate(names) if name.startswith(marker)]
    if not starts:  # a registry entry that does not describe its network
        raise ValueError(f"backbone {spec.name!r} has no layer marked by block {marker!r}")
    return backbone.layers[starts[0] :]


def set_trainable(
    model: tf_keras.Model, trainable: Trainable, spec: BackboneSpec | None = None
) -> int:
    """Apply a stage's ``trainable`` spec; return the number of trainable tensors.

    'head': the backbone frozen; 'top_layers:N' (alias 'top:N'): the last N layers of the
    backbone; 'top_blocks:K': the layers of its last K blocks (``spec.blocks``; ``spec``
    defaults to the entry ``model`` was built from); 'all'. The head is always trainable.
    Recompile after calling this: Keras reads trainability at compile time.
    """
    backbone = backbone_of(model)
    if trainable.kind == "head":
        backbone.trainable = False
        return len(model.trainable_weights)
    backbone.trainable = True
    if trainable.kind == "all":
        unfrozen = backbone.layers
    elif trainable.kind == "top_blocks":
        unfrozen = block_layers(backbone, spec or backbone_spec_of(model), trainable.blocks)
    else:  # "top": the last N layers
        unfrozen = backbone.layers[max(0, len(backbone.layers) - trainable.layers) :]
    ids = {id(layer) for layer in unfrozen}
    for layer in backbone.layers:
        layer.trainable = id(layer) in ids
    return len(model.trainable_weights)


def compile_stage(
    model: tf_keras.Model,
    stage: StageSection,
    steps_per_epoch: int,
    jit_compile: bool = False,
    labels: LabelFormat = SPARSE,
    steps_per_execution: int = 1,
) -> StageSchedule:
    """Compile for ``stage`` with a fresh optimizer driven by its schedule; call inside the
    distribution strategy's scope. Returns the schedule (the plateau callback moves it).

    The loss and the accuracy follow ``labels`` (``LabelFormat.loss``, label-smoothed by
    ``stage.label_smoothing``); the metrics are ``tljob.config.METRICS``, which also derives
    ``REPORTED_METRICS``, the names callbacks may monitor. Class weights passed to ``fit``
    weight each row by its label's class (the argmax of a soft label). One call of the
    compiled step runs ``steps_per_execution`` steps (batch callbacks see one per call).
    """
    num_classes = int(model.output_shape[-1])
    schedule = StageSchedule.for_stage(stage, steps_per_epoch)
    assert METRICS == ("accuracy", "macro_f1")  # the names ClassMetrics reports
    model.compile(
        optimizer=make_optimizer(stage, schedule),
        loss=labels.loss(num_classes, stage.label_smoothing),
        metrics=[labels.accuracy(), ClassMetrics(num_classes)],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    # Under MultiWorkerMirroredStrategy the metrics are already global; Keras' default
    # ("auto" = sum over replicas) would show per-batch figures num_workers times too big.
    model.distribute_reduction_method = "first"
    return schedule


def compile_for_stage(model: tf_keras.Model, optimizer: Optimizer, learning_rate: float) -> None:
    """``compile_stage`` for a one-epoch stage at a settable rate (plateau, no callback)."""
    stage = StageSection(name="stage", epochs=1, learning_rate=learning_rate, optimizer=optimizer)
    compile_stage(model, stage, steps_per_epoch=1)


def current_learning_rate(model: tf_keras.Model) -> float:
    """The rate the model's next optimizer step uses."""
    return schedules.current_learning_rate(model)


def set_learning_rate(model: tf_keras.Model, value: float) -> None:
    """Set a plateau schedule's level (what ReduceLROnPlateau moves)."""
    schedule = schedules.schedule_of(model)
    if schedule.level is None:
        raise ValueError(f"a {schedule.kind!r} schedule has no settable rate")
    schedule.level.assign(value)


class PrecisionError(UserError):
    """A precision this worker cannot run."""


def set_precision(precision: Precision) -> None:
    """Make ``precision`` the global Keras policy; call before building the model (layers
    take the policy when created). Variables stay float32, and so does the classifier."""
    if precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        raise PrecisionError(
            "`train.precision` ('mixed_float16') needs a GPU, and this process sees none; "
            "use 'mixed_bfloat16' or 'float32' on CPUs"
        )
    tf_keras.mixed_precision.set_global_policy(precision)
