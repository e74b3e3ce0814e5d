"""The backbone zoo, one test per registered backbone and property (timm's pattern).

Each backbone is built once, with random weights at its smallest input size, by the
module-scoped fixture ``zoo``; pytest groups the tests by backbone, so one network is alive
at a time (all of them together would not fit in memory). Per backbone: one training step,
the output for every per-replica batch size (0 rows included), the preprocessing against the
Keras application's own ``preprocess_input``, ``top_blocks:1`` against the network's graph,
and the registry's figures against the real network.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tljob.config import Trainable, load_config
from tljob.nn import model as nn_model
from tljob.zoo import BACKBONES, BackboneSpec

# The largest networks (>= 40M parameters or >= 700 layers): bigger variants of families
# the default run covers, and half of this file's time (215 of 442 s measured on 2 busy
# cores; the whole file is ~5.5 min of CPU). Marked `slow` and skipped unless
# TLJOB_SLOW_TESTS=1 (run them when changing the zoo: TLJOB_SLOW_TESTS=1 pytest -m slow).
HEAVY = {
    "convnext_base",
    "convnext_small",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "inception_resnet_v2",
    "resnet152",
    "resnet152_v2",
}
RUN_SLOW = os.environ.get("TLJOB_SLOW_TESTS") == "1"
SLOW = (
    pytest.mark.slow,
    pytest.mark.skipif(not RUN_SLOW, reason="heavy backbone; set TLJOB_SLOW_TESTS=1"),
)


class Built:
    """One backbone's tljob model (3 classes, random weights, smallest input size)."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.spec = spec
        self.size = spec.min_image_size
        cfg = load_config(
            None,
            [
                "data.source=x",
                f"model.backbone={spec.name}",
                "model.weights=none",
                f"data.image_size={self.size}",
            ],
        ).model
        self.net = nn_model.build_model(cfg, num_classes=3, image_size=self.size)
        self.backbone = nn_model.backbone_of(self.net)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=SLOW) if name in HEAVY else name for name in sorted(BACKBONES)
    ],
)
def zoo(request):
    built = Built(BACKBONES[request.param])
    yield built
    del built
    tf_keras.backend.clear_session()


def test_builds_at_its_minimum_size_and_trains_one_step(zoo):
    net = zoo.net
    nn_model.set_trainable(net, Trainable.parse("all"))
    nn_model.compile_for_stage(net, "adam", 1e-3)
    net.run_eagerly = True  # tracing the update of every variable is the slow part
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, zoo.size, zoo.size, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0])
    before = [w.numpy().copy() for w in net.trainable_weights]
    history = net.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = sum(
        not np.array_equal(a, w.numpy()) for a, w in zip(before, net.trainable_weights, strict=True)
    )
    assert changed > len(before) // 2  # the step reached the backbone, not just the head
    probs = net(x, training=False).numpy()
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_every_per_replica_share_of_a_batch_gives_one_row_per_image(zoo):
    # Under a distribution strategy a replica gets a full share of the global batch, a short
    # one, or none: a last batch of 1 row over 2 replicas leaves one of them 0 rows, which
    # oneDNN's convolutions mis-shape (tljob.nn.layers.ImageClassifier)
    x = np.random.default_rng(2).integers(0, 256, (4, zoo.size, zoo.size, 3), dtype=np.uint8)
    full = zoo.net(x, training=False).numpy()
    assert full.shape == (4, 3)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-5)
    one = zoo.net(x[:1], training=False).numpy()
    np.testing.assert_allclose(one, full[:1], rtol=1e-4, atol=1e-6)
    empty = zoo.net(x[:0], training=False)
    assert (empty.shape, empty.dtype) == ((0, 3), tf.float32)


def keras_preprocess_input(spec: BackboneSpec):
    """The Keras application's own ``preprocess_input``; for tljob's builders (no Keras
    application), Keras' ImageNet function in the registered mode."""
    if spec.builder:
        utils = tf_keras.applications.imagenet_utils
        if spec.preprocessing == "none":
            return lambda x: x
        return lambda x: utils.preprocess_input(x, mode=spec.preprocessing)
    return getattr(tf_keras.applications, spec.keras_module).preprocess_input


def test_preprocessing_equals_the_keras_applications_own(zoo):
    x = np.random.default_rng(1).uniform(0, 255, (2, zoo.size, zoo.size, 3)).astype(np.float32)
    ours = zoo.net.get_layer("preprocess")(tf.constant(x)).numpy()
    reference = keras_preprocess_input(zoo.spec)(x.copy())
    np.testing.assert_allclose(ours, np.asarray(reference), rtol=1e-5, atol=1e-4)


def _ancestors(backbone: tf_keras.Model, layer) -> set[str]:
    """Names of the layers ``layer``'s output is computed from (``layer`` included)."""
    seen: set[str] = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for node in current._inbound_nodes:
            stack.extend(tf.nest.flatten(node.inbound_layers))
    return seen


# The last block of a few backbones, layer by layer (the test below checks every backbone
# against its graph).
LAST_BLOCK = {
    "resnet50": [
        *(f"conv5_block3_{i}_{kind}" for i in (1, 2) for kind in ("conv", "bn", "relu")),
        *("conv5_block3_3_conv", "conv5_block3_3_bn", "conv5_block3_add", "conv5_block3_out"),
    ],
    "vgg16": ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"],
    "mobilenet_v2": [
        *(
            f"block_16_{step}{suffix}"
            for step in ("expand", "depthwise")
            for suffix in ("", "_BN", "_relu")
        ),
        *("block_16_project", "block_16_project_BN", "Conv_1", "Conv_1_bn", "out_relu"),
    ],
    "efficientnet_b0": [
        *(
            f"block7a_{name}"
            for name in (
                "expand_conv",
                "expand_bn",
                "expand_activation",
                "dwconv",
                "bn",
                "activation",
                "se_squeeze",
                "se_reshape",
                "se_reduce",
                "se_expand",
                "se_excite",
                "project_conv",
                "project_bn",
            )
        ),
        *("top_conv", "top_bn", "top_activation"),
    ],
    "alexnet": ["conv5_conv", "conv5_relu", "conv5_pool"],
}


def test_top_blocks_1_unfreezes_exactly_the_last_block(zoo):
    spec, backbone = zoo.spec, zoo.backbone
    assert spec.blocks, f"{spec.name} registers no blocks"
    nn_model.set_trainable(zoo.net, Trainable.parse("top_blocks:1"))
    names = [layer.name for layer in backbone.layers]
    unfrozen = [layer.name for layer in backbone.layers if layer.trainable]
    marker = spec.blocks[-1]
    if marker.startswith(">"):
        entry = backbone.get_layer(marker[1:])
        assert entry.name not in unfrozen
    else:
        # the block starts at the first layer carrying its prefix; every such layer trains,
        # and none of the previous block's
        assert unfrozen[0].startswith(marker)
        assert {n for n in names if n.startswith(marker)} <= set(unfrozen)
        if len(spec.blocks) > 1:
            assert not any(n.startswith(spec.blocks[-2]) for n in unfrozen)
        (node,) = backbone.get_layer(unfrozen[0])._inbound_nodes
        entry = node.inbound_layers  # the previous block's end: a single layer
    # ...and, by the graph, the trained layers are exactly those the previous block's
    # output does not depend on: nothing in the block is left frozen, nothing before it
    # trains (for a chain of blocks, the layers downstream of the previous block's end;
    # NASNet's cells also read the cell before last, through layers of their own)
    assert set(unfrozen) == set(names) - _ancestors(backbone, entry)
    assert names[-1] in unfrozen
    if spec.name in LAST_BLOCK:
        assert unfrozen == LAST_BLOCK[spec.name]
    # one block more trains strictly more, still ending at the last layer
    if len(spec.blocks) > 1:
        nn_model.set_trainable(zoo.net, Trainable.parse("top_blocks:2"))
        two = [layer.name for layer in backbone.layers if layer.trainable]
        assert set(unfrozen) < set(two) and two[-len(unfrozen) :] == unfrozen


def test_top_blocks_beyond_the_count_names_both(zoo):
    spec = zoo.spec
    n = len(spec.blocks)
    with pytest.raises(nn_model.TooManyBlocksError) as err:
        nn_model.set_trainable(zoo.net, Trainable.parse(f"top_blocks:{n + 1}"))
    assert str(err.value) == (
        f"`trainable` ('top_blocks:{n + 1}'): backbone {spec.name!r} has {n} blocks, so K "
        f"must be between 1 and {n}"
    )
    # all K blocks: every layer from the first block's start trains, the stem stays frozen
    nn_model.set_trainable(zoo.net, Trainable.parse(f"top_blocks:{n}"))
    trained = [layer.trainable for layer in zoo.backbone.layers]
    first = trained.index(True)
    assert all(trained[first:]) and not any(trained[:first]) and first >= 1


def test_registry_figures_equal_the_real_network(zoo):
    spec, backbone = zoo.spec, zoo.backbone
    assert backbone.count_params() == spec.parameters
    assert backbone.output_shape[-1] == spec.feature_channels
    # activations_per_pixel is measured at the default size by benchmarks/measure_backbones.py
    # (exact: test_the_measuring_tool_agrees_with_the_registry). At the smallest size the
    # per-pixel figure stays within 30% of it, except where valid padding shrinks small
    # maps more: Inception-v3 and Inception-ResNet-v2 at 75 px measure 0.66 and 0.58 of it.
    from benchmarks.measure_backbones import activations_per_pixel

    ratio = activations_per_pixel(backbone, zoo.size) / spec.activations_per_pixel
    assert 0.55 <= ratio <= 1.3


def test_the_measuring_tool_agrees_with_the_registry(capsys):
    # the tool builds at the default size; the two quickest networks keep it honest here
    from benchmarks.measure_backbones import main

    assert main(["vgg16", "alexnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:5] == ["vgg16", "224", "14_714_688", "512", "303.5"]
    assert lines[2].split()[:5] == ["alexnet", "224", "2_469_696", "256", "27.2"]


def test_top_blocks_beyond_the_block_count_names_both():
    from tljob.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [
                "data.source=x",
                "model.backbone=vgg16",
                "train.stages.1.trainable=top_blocks:6",
            ],
        )
    assert (
        "`train.stages.1.trainable` ('top_blocks:6'): backbone 'vgg16' has 5 blocks, "
        "so K must be <= 5" in str(err.value)
    )


# --- names: close matches, the listing -------------------------------------------------------


def test_unknown_backbone_gets_close_matches_and_the_list_hint():
    from tljob.zoo import UnknownBackboneError, get_backbone

    with pytest.raises(UnknownBackboneError) as err:
        get_backbone("resnet5")
    assert str(err.value) == (
        "unknown backbone 'resnet5'; did you mean 'resnet50' or 'resnet152' or 'resnet50_v2'? "
        f"`tljob backbones` lists the {len(BACKBONES)} registered backbones"
    )
    with pytest.raises(UnknownBackboneError) as err:
        get_backbone("EfficientNetB3")
    assert "did you mean 'efficientnet_b3'" in str(err.value)
    with pytest.raises(UnknownBackboneError) as err:
        get_backbone("zzz")
    assert str(err.value) == (
        f"unknown backbone 'zzz'; `tljob backbones` lists the {len(BACKBONES)} registered backbones"
    )


def test_config_rejects_an_unknown_backbone_with_close_matches():
    from tljob.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.source=x", "model.backbone=mobilenetv3_small"])
    assert "`model.backbone` ('mobilenetv3_small'): unknown backbone 'mobilenetv3_small'; " in (
        str(err.value)
    )
    assert "did you mean 'mobilenet_v3_small'" in str(err.value)


def test_cli_lists_every_backbone(capsys):
    from tljob.cli import main

    assert main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "name",
        "family",
        "default",
        "min",
        "parameters",
        "preprocessing",
        "imagenet",
        "blocks",
    ]
    assert [line.split()[0] for line in lines[1:]] == list(BACKBONES)
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["resnet50"] == [
        "resnet50",
        "resnet",
        "224",
        "px",
        "32",
        "px",
        "23.6M",
        "caffe",
        "yes",
        "16",
    ]
    assert rows["alexnet"][-2:] == ["no", "5"]


def test_cli_describes_one_and_refuses_unknown_names(capsys):
    from tljob.cli import EXIT_USER_ERROR, main

    assert main(["backbones", "convnext_tiny"]) == 0
    out = capsys.readouterr().out
    assert "https://storage.googleapis.com/tensorflow/keras-applications/convnext/" in out
    assert "sha256 d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1" in out
    assert main(["backbones", "vgg61"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == (
        "tljob: error: unknown backbone 'vgg61'; did you mean 'vgg19' or 'vgg16'? "
        f"`tljob backbones` lists the {len(BACKBONES)} registered backbones\n"
    )


def test_docs_backbone_table_is_current():
    from pathlib import Path

    from tljob.zoo.listing import format_backbones

    page = Path(__file__).resolve().parents[1] / "docs" / "pages" / "reference" / "backbones.md"
    table = "```\n$ tljob backbones\n" + format_backbones(BACKBONES.values()) + "\n```"
    assert table in page.read_text(), "regenerate with: python -m tljob.docs_gen --write"
