"""``tljob backbones rank``: the probe, the subsample, the candidates and the command's
refusals (no Ray), and one tiny real ranking on Ray where one candidate sees the planted
class signal and the other cannot."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from tljob.cli import main
from tljob.data.features import FORMAT_VERSION, FeatureKey
from tljob.rank.choose import (
    Candidate,
    RankArgumentError,
    class_quota,
    parse_candidates,
    stratified_subsample,
)
from tljob.rank.probe import probe
from tljob.zoo import BACKBONES


def _blobs(rng, per_class: int, classes: int, dim: int, spread: float):
    centres = np.eye(classes, dim) * 10.0
    y = np.repeat(np.arange(classes), per_class)
    return centres[y] + rng.normal(scale=spread, size=(len(y), dim)), y


def test_the_probe_separates_separable_features_exactly_and_twice_the_same():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 30, 3, 8, 1.0)
    val_x, val_y = _blobs(rng, 20, 3, 8, 1.0)
    score = probe(train_x, train_y, val_x, val_y, 3)
    assert (score.val_accuracy, score.val_macro_f1, score.train_accuracy) == (1.0, 1.0, 1.0)
    assert probe(train_x, train_y, val_x, val_y, 3) == score  # no randomness


def test_the_probe_on_features_without_the_signal_is_at_chance():
    # constant features: only the bias learns, so every validation row gets the majority
    # class of training (0): half right; F1 2/3 for class 0, 0 for class 1 (true, never
    # predicted): macro 1/3
    train_y = np.array([0] * 6 + [1] * 4)
    val_y = np.array([0] * 5 + [1] * 5)
    score = probe(np.ones((10, 4)), train_y, np.ones((10, 4)), val_y, 2)
    assert score.val_accuracy == 0.5
    assert score.val_macro_f1 == pytest.approx(1 / 3)
    # noise: near chance on 2,000 validation rows
    rng = np.random.default_rng(1)
    noise = probe(
        rng.normal(size=(400, 16)),
        rng.integers(0, 2, 400),
        rng.normal(size=(2000, 16)),
        rng.integers(0, 2, 2000),
        2,
    )
    assert 0.45 < noise.val_accuracy < 0.55


def test_the_probe_predicts_as_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    train_x, train_y = _blobs(rng, 100, 4, 12, 6.0)  # overlapping classes
    val_x, val_y = _blobs(rng, 100, 4, 12, 6.0)
    scaler = StandardScaler().fit(train_x)
    theirs = LogisticRegression(C=1.0 / (1e-3 * len(train_y)), max_iter=10_000)
    theirs.fit(scaler.transform(train_x), train_y)
    expected = theirs.score(scaler.transform(val_x), val_y)
    assert 0.5 < expected < 0.95  # the case is not trivial
    assert probe(train_x, train_y, val_x, val_y, 4).val_accuracy == pytest.approx(
        expected, abs=0.01
    )


def test_the_stratified_subsample_keeps_every_class_in_proportion_seeded():
    labels = np.repeat([0, 1, 2, 3], [500, 300, 195, 5])
    chosen = stratified_subsample(labels, 100, seed=7)
    assert np.bincount(labels[chosen]).tolist() == [50, 30, 19, 1]
    assert len(set(chosen.tolist())) == 100 and np.all(np.diff(chosen) > 0)
    assert np.array_equal(stratified_subsample(labels, 100, seed=7), chosen)
    assert not np.array_equal(stratified_subsample(labels, 100, seed=8), chosen)
    assert np.array_equal(stratified_subsample(labels, 5000, seed=7), np.arange(1000))
    # a class far below its share still gets one row; the total stays exact
    assert class_quota(np.array([97, 2, 1]), 10).tolist() == [8, 1, 1]
    assert class_quota(np.array([5, 5, 5]), 2).tolist() == [1, 1, 0]


def test_candidates_groups_weights_and_unknown_names():
    small = parse_candidates("small")
    assert [c.backbone for c in small][:3] == [
        "mobilenet_v3_small",
        "mobilenet_v2",
        "mobilenet_v2_tv",
    ]
    assert all(BACKBONES[c.backbone].parameters <= 8_000_000 for c in small)
    assert len(small) == 12 and len(parse_candidates("all")) == len(BACKBONES)
    assert parse_candidates("resnet50, mobilenet_v2_tv:none,resnet50") == [
        Candidate("resnet50"),
        Candidate("mobilenet_v2_tv", "none"),
    ]
    with pytest.raises(RankArgumentError, match=r"unknown backbone\(s\) 'resnet5'.*alexnet, "):
        parse_candidates("resnet50,resnet5")
    with pytest.raises(RankArgumentError, match="'resnet50:random'.*imagenet, none"):
        parse_candidates("resnet50:random")


def test_a_key_without_a_subsample_keeps_the_fingerprint_of_cached_stages():
    key = FeatureKey("fp", "mobilenet_v2_tv", "abc", 32, "torch", "float32")
    parts = {"format_version": FORMAT_VERSION, **asdict(key)}
    for later in ("subsample", "views", "augment"):  # parts added since: left out when unset
        del parts[later]
    old = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    assert key.fingerprint() == old
    assert FeatureKey(**{**asdict(key), "subsample": "x"}).fingerprint() != old


def test_the_command_refuses_bad_arguments_before_ray(tmp_path, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": str(tmp_path)}}))
    rc = main(["backbones", "rank", "--config", str(config), "--candidates", "resnet50,nope"])
    assert rc == 2
    assert "--candidates: unknown backbone(s) 'nope'; the valid names are 'all', 'small'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["backbones", "rank", "--config", str(config), "--subsample", "0"])
    assert exit_info.value.code == 2
    assert "argument --subsample: '0' is not a whole number of 1 or more" in capsys.readouterr().err
    assert main(["backbones", "rank", "--candidates", "resnet50"]) == 2
    assert "needs --config job.yaml" in capsys.readouterr().err
    assert main(["backbones", "resnet50", "--top", "2"]) == 2
    assert "--top: only `tljob backbones rank` takes these options" in capsys.readouterr().err
    assert main(["backbones", "resnet50"]) == 0  # the listing is unchanged
    assert capsys.readouterr().out.startswith("resnet50: ResNet50")


def _textures_tree(root: Path, per_class: int, size: int = 32) -> Path:
    """Two classes of the same brightness and contrast (every crop scaled to mean 128,
    standard deviation 40, grey): crops of scikit-image's grass and gravel photographs.
    ImageNet features tell the textures apart; a random MobileNetV2 (BatchNorm in inference
    mode, as a frozen backbone runs) does not (measured: 0.75 against 0.375)."""
    import skimage.data
    from PIL import Image
    from skimage.transform import resize

    rng = np.random.default_rng(0)
    for name, photo in (("grass", skimage.data.grass()), ("gravel", skimage.data.gravel())):
        photo = photo.astype(np.float32)
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            side = int(rng.integers(48, 96))
            y = int(rng.integers(0, photo.shape[0] - side))
            x = int(rng.integers(0, photo.shape[1] - side))
            crop = resize(photo[y : y + side, x : x + side], (size, size), preserve_range=True)
            crop = (crop - crop.mean()) / (crop.std() + 1e-6) * 40 + 128
            grey = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
            grey.convert("RGB").save(root / name / f"{i}.png")
    return root


@pytest.mark.ray
def test_rank_puts_the_backbone_that_sees_the_planted_texture_first(tmp_path, ray_cluster):
    from PIL import Image
    from test_driver_imports import DRIVER
    from test_train_cli import tljob

    from tljob.config.sweep import load_sweep

    data = _textures_tree(tmp_path / "textures", per_class=40)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(data), "image_size": 32, "val_fraction": 0.3, "seed": 1},
                "model": {"backbone": "mobilenet_v2_tv", "weights": "imagenet"},
                "run": {"name": "textures", "storage_path": str(tmp_path / "runs")},
            }
        )
    )
    # the random-weights candidate first: the order printed is the probe's, not the given one
    argv = ["backbones", "rank", "--config", str(config), "--subsample", "56", "--top", "2"]
    argv += ["--candidates", "mobilenet_v2_tv:none,mobilenet_v2_tv"]
    first = tljob(ray_cluster, *argv)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("computing the features of 80 images at 32 px") == 2

    out = tmp_path / "runs" / "rank" / "textures"
    with open(out / "rank.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["rank"], r["candidate"], r["weights"]) for r in table] == [
        ("1", "mobilenet_v2_tv", "imagenet"),
        ("2", "mobilenet_v2_tv:none", "none"),
    ]
    pretrained, random = (float(r["val_accuracy"]) for r in table)
    assert pretrained >= 0.7 and random <= 0.55, table
    assert all(float(r["images_per_s"]) > 0 and r["parameters"] == "2257984" for r in table)
    ranked = json.loads((out / "rank.json").read_text())
    assert ranked["rows"] == {"train": 56, "val": 24}  # 56 // 2 asked: all 24 there are
    assert ranked["candidates"][1]["notes"] == ["random weights (seed 1)"]
    with Image.open(out / "rank.png") as png:
        assert png.size == (800, 550)
    sweep = load_sweep(out / "sweep.yaml")
    assert sweep.search["model.backbone"].values == ("mobilenet_v2_tv",)
    assert sweep.job.image_size == 32 and sweep.tune.name == "textures-backbones"

    features = sorted((tmp_path / "runs" / "prepared").glob("*/features/*/features.json"))
    assert len(features) == 2
    published = [p.read_text() for p in features]
    # the rerun's driver: no TensorFlow either (the first run may have converted the
    # torchvision weights into the Keras cache, which a run's driver does too)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster["gcs"], "PYTHONUNBUFFERED": "1"}
    again = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv], capture_output=True, text=True, timeout=900, env=env
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.splitlines()[-1] == "TF-MODULES []", again.stdout[-3000:]
    # no backbone ran: every candidate's features were found, nothing new was written
    assert "computing the features" not in again.stdout
    assert again.stdout.count("(found)") == 2
    assert [p.read_text() for p in features] == published
    assert sorted((tmp_path / "runs" / "prepared").glob("*/features/*/features.json")) == features
    with open(out / "rank.csv") as f:
        assert list(csv.DictReader(f)) == table  # the timing is kept with the features
