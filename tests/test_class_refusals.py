"""A class left with no image to train on is refused with exit 2 by ``tljob prepare`` (the
data step ``tljob train`` runs first), as an empty class folder is, whether its images are
in folders, listed by a manifest or on S3: the error names the class, counts its quarantined
images by reason and names the quarantine list; the prepared data's manifest.json still
accounts for every listed image, and a rerun refuses again without reading a source."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_digits_tree, write_manifest, write_truncated_jpeg

from tljob import cli, storage

REMEDY = (
    "Fix or replace those images, or remove the class (its folder, its manifest rows, or its "
    "name in `data.classes`): a class with no usable image is refused as an empty class "
    "folder is"
)


@pytest.fixture
def own_storage_settings():
    """``tljob prepare`` makes the job's S3 settings this process's: undone afterwards."""
    yield
    storage.reset()


def _config(tmp_path: Path, source: str | Path, data: dict | None = None, **sections) -> Path:
    tree = {
        "data": {
            "source": str(source),
            "image_size": 32,
            "val_fraction": 0.2,
            "seed": 1,
            **(data or {}),
        },
        "model": {"weights": "none"},
        "run": {"storage_path": str(tmp_path / "runs")},
        **sections,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _prepare(config: Path, capsys) -> tuple[int, str]:
    rc = cli.main(["prepare", "--config", str(config)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def _published(runs: Path) -> tuple[dict, Path]:
    """The one published manifest.json under ``runs/prepared`` and its quarantine.csv."""
    (manifest,) = (runs / "prepared").glob("*/manifest.json")
    published = json.loads(manifest.read_text())
    return published, manifest.parent / published["attempt"] / "quarantine.csv"


def _accounted(published: dict) -> int:
    used = sum(split["used"] for split in published["per_split"].values())
    return used + len(published["duplicates"]) + len(published["quarantined"])


def _good_and_owl_tree(root: Path, owl_images: int) -> Path:
    """3 classes of 40 good digits and an ``owl`` folder of truncated JPEGs only."""
    write_digits_tree(root, classes=3, per_class=40)
    for i in range(owl_images):
        write_truncated_jpeg(root / "owl" / f"{i}.jpg", seed=i)
    return root


@pytest.mark.usefixtures("ray_connected", "own_storage_settings")
def test_a_folder_class_whose_every_image_is_quarantined_is_refused_by_prepare(tmp_path, capsys):
    # 5 of 125 images (4 %) are bad, under `data.max_bad_fraction` (0.1): only owl is empty
    root = _good_and_owl_tree(tmp_path / "images", owl_images=5)
    config = _config(tmp_path, root)
    rc, output = _prepare(config, capsys)
    assert rc == 2, output
    published, quarantine = _published(tmp_path / "runs")
    assert output.endswith(
        f"tljob: error: `data.source` ({str(root)!r}): class 'owl' has no image left to train "
        "on: 5 of its 5 listed image(s) were quarantined (corrupt_image 5). Every quarantined "
        f"image is listed with why in {quarantine}. {REMEDY}\n"
    )
    # the accounting is written down: listed = used + duplicates + quarantined
    assert published["listed"] == 125 == _accounted(published)
    assert published["per_split"]["train"]["per_class_used"]["owl"] == 0
    rows = list(csv.DictReader(quarantine.open()))
    assert [(Path(r["uri"]).relative_to(root).as_posix(), r["reason"]) for r in rows] == [
        (f"owl/{i}.jpg", "corrupt_image: OSError: Truncated File Read") for i in range(5)
    ]
    # a rerun reuses the published data (no source is read) and refuses the same way
    rc, again = _prepare(config, capsys)
    assert rc == 2
    assert "reusing prepared data" in again
    assert again.endswith(output.splitlines()[-1] + "\n")


@pytest.mark.usefixtures("ray_connected", "own_storage_settings")
def test_a_manifest_class_whose_every_image_is_quarantined_is_refused_by_prepare(tmp_path, capsys):
    root = write_digits_tree(tmp_path / "images", classes=2, per_class=10)
    rows = [(p.relative_to(tmp_path).as_posix(), p.parent.name) for p in root.rglob("*.png")]
    owl = [write_truncated_jpeg(root / "owl" / f"{i}.jpg", seed=i) for i in range(2)]
    rows += [(str(p), "owl") for p in owl]
    rows += [("images/owl", "owl"), ("images/owl/gone.jpg", "owl"), ("images/digit_0", "digit_0")]
    manifest = write_manifest(tmp_path / "all.csv", sorted(rows))
    # 5 of 25 rows are bad: allowed, so that only the empty class can refuse the data
    config = _config(tmp_path, manifest, data={"max_bad_fraction": 0.5})
    rc, output = _prepare(config, capsys)
    assert rc == 2, output
    published, quarantine = _published(tmp_path / "runs")
    assert output.endswith(
        f"tljob: error: `data.source` ({str(manifest)!r}): class 'owl' has no image left to "
        "train on: 4 of its 4 listed image(s) were quarantined (corrupt_image 2, "
        "is_a_directory 1, missing_object 1). Every quarantined image is listed with why in "
        f"{quarantine}. {REMEDY}\n"
    )
    assert published["listed"] == 25 == len(rows) == _accounted(published)
    reasons = {Path(r["uri"]).name: r["reason"] for r in csv.DictReader(quarantine.open())}
    assert {name: reason.split(":")[0] for name, reason in reasons.items()} == {
        "0.jpg": "corrupt_image",
        "1.jpg": "corrupt_image",
        "owl": "is_a_directory",
        "gone.jpg": "missing_object",
        "digit_0": "is_a_directory",
    }


@pytest.mark.ray  # the CLI starts its own local Ray: its workers get the test's S3 keys
def test_an_s3_class_whose_every_image_is_quarantined_is_refused_by_prepare(tmp_path, s3):
    local = _good_and_owl_tree(tmp_path / "images", owl_images=3)
    storage.upload_dir(local, storage.resolve(s3.uri("images")), threads=4)
    config = _config(
        tmp_path,
        s3.uri("images"),
        run={"storage_path": s3.uri("runs")},
        s3={"endpoint_url": s3.server.endpoint_url, "allow_http": True},
    )
    # the endpoint comes from the config's s3 section only
    env = {k: v for k, v in s3.env().items() if k not in ("AWS_ENDPOINT_URL", "RAY_ADDRESS")}
    proc = subprocess.run(
        [sys.executable, "-m", "tljob.cli", "prepare", "--config", str(config)],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    (manifest_key,) = [k for k in s3.objects("runs/prepared/") if k.endswith("/manifest.json")]
    published = json.loads(storage.read_text(storage.resolve(s3.uri(manifest_key))))
    quarantine = s3.uri(os.path.dirname(manifest_key), published["attempt"], "quarantine.csv")
    assert proc.stderr.endswith(
        f"tljob: error: `data.source` ({s3.uri('images')!r}): class 'owl' has no image left "
        "to train on: 3 of its 3 listed image(s) were quarantined (corrupt_image 3). Every "
        f"quarantined image is listed with why in {quarantine}. {REMEDY}\n"
    )
    assert published["listed"] == 123 == _accounted(published)
    assert published["per_split"]["train"]["per_class_used"]["owl"] == 0
    listed = storage.read_text(storage.resolve(quarantine)).splitlines()
    assert listed[1:] == [
        f"{s3.uri('images', 'owl', f'{i}.jpg')},none,corrupt_image: OSError: Truncated File Read"
        for i in range(3)
    ]


@pytest.mark.usefixtures("ray_connected", "own_storage_settings")
def test_when_every_class_is_quarantined_nothing_is_published_but_the_list_is_kept(
    tmp_path, capsys
):
    root = tmp_path / "images"
    for name in ("emu", "owl"):
        for i in range(3):
            write_truncated_jpeg(root / name / f"{i}.jpg", seed=i + (name == "owl") * 10)
    config = _config(tmp_path, root, data={"max_bad_fraction": 1.0})
    rc, output = _prepare(config, capsys)
    assert rc == 2, output
    assert not list((tmp_path / "runs" / "prepared").glob("*/manifest.json"))  # no split
    (quarantine,) = (tmp_path / "runs" / "prepared").glob("*/*/quarantine.csv")
    assert output.endswith(
        f"tljob: error: `data.source` ({str(root)!r}): classes 'emu', 'owl' have no image left "
        "to train on: 'emu': 3 of its 3 listed image(s) were quarantined (corrupt_image 3); "
        "'owl': 3 of its 3 listed image(s) were quarantined (corrupt_image 3). Every "
        f"quarantined image is listed with why in {quarantine}. {REMEDY}\n"
    )
    # every listed image is a row of the list kept: nothing was used, nothing duplicated
    rows = list(csv.DictReader(quarantine.open()))
    assert sorted(Path(r["uri"]).relative_to(root).as_posix() for r in rows) == [
        f"{name}/{i}.jpg" for name in ("emu", "owl") for i in range(3)
    ]
    assert list((tmp_path / "runs" / "prepared").glob("*/*/staging")) == []
