"""Prepared data: shards reused or redone by fingerprint, bad objects quarantined, manifest
sources, raw vs encoded pixels. Real files, and the session's Ray cluster where marked."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, write_digits_tree
from PIL import Image

from tljob import storage
from tljob.config import load_config
from tljob.data.listing import DataError
from tljob.data.pipeline import prepare_data
from tljob.data.prepared import (
    MANIFEST_FILE,
    PreparedManifest,
    SplitSettings,
    StoreSettings,
    fingerprint,
    publish,
    read_manifest,
)
from tljob.data.shards import decode_stored
from tljob.data.sources import list_manifest, stat_objects
from tljob.images import load_image


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray (2 CPUs, no dashboard) for this module's preparations."""
    import ray

    if ray.is_initialized():  # the session cluster's driver connection, from other tests
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _job(source: Path | str, runs: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.source={source}",
            "data.image_size=32",
            "model.weights=none",
            f"run.storage_path={runs}",
            *overrides,
        ],
    )


def _shard_rows(prepared_uri: str) -> dict[str, dict]:
    """Every row of the published shards, by source uri, with its split."""
    folder = storage.resolve(prepared_uri)
    manifest = read_manifest(folder)
    rows = {}
    for split, files in manifest.files.items():
        for f in files:
            for row in pq.read_table(folder.join(f).path).to_pylist():
                rows[row["uri"]] = {**row, "split": split}
    return rows


def _freeze_as_garbage(paths: list[Path]) -> dict[Path, tuple[bytes, os.stat_result]]:
    """Overwrite each file with zero bytes of the same length, keep its mtime, make it
    unreadable: a preparation that read any of them would quarantine it."""
    kept = {}
    for p in paths:
        st = p.stat()
        kept[p] = (p.read_bytes(), st)
        p.write_bytes(b"\0" * st.st_size)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        p.chmod(0)
    return kept


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_prepared_shards_are_reused_and_redone_when_one_source_changes(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=6)
    runs = tmp_path / "runs"
    job = _job(root, runs)
    first = prepare_data(job)
    assert not first.reused
    assert Path(first.prepared_uri).parent == runs / "prepared"
    rows = _shard_rows(first.prepared_uri)
    assert len(rows) == 12 and first.summary()["quarantined"] == 0

    sources = sorted(root.rglob("*.png"))
    originals = _freeze_as_garbage(sources)
    second = prepare_data(job)  # nothing a reuse reads can be a source image now
    assert second.reused and second.prepared_uri == first.prepared_uri
    assert second.summary() == first.summary() and second.quarantined == []
    assert sorted(r["label"] for r in second.train.take_all()) == sorted(
        r["label"] for r in rows.values() if r["split"] == "train"
    )

    for p, (data, st) in originals.items():
        p.chmod(0o644)
        p.write_bytes(data)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = sources[7]  # a digit_1 image
    Image.new("L", (8, 8), 77).save(changed)
    third = prepare_data(job)
    assert not third.reused and third.prepared_uri != first.prepared_uri
    assert sorted(p.name for p in (runs / "prepared").iterdir()) == sorted(
        Path(u).name for u in (first.prepared_uri, third.prepared_uri)
    )
    new_rows = _shard_rows(third.prepared_uri)
    assert set(np.frombuffer(new_rows[str(changed)]["image"], np.uint8).tolist()) == {77}
    assert set(np.frombuffer(rows[str(changed)]["image"], np.uint8).tolist()) != {77}

    # A folder without its manifest is an interrupted preparation: prepared again.
    (Path(third.prepared_uri) / MANIFEST_FILE).unlink()
    fourth = prepare_data(job)
    assert not fourth.reused and fourth.prepared_uri == third.prepared_uri
    assert _shard_rows(fourth.prepared_uri).keys() == new_rows.keys()


def _png(path: Path, size=(10, 8), color=(10, 200, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _planted_store(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest (CSV, relative and absolute uris) with 12 good images and one of every
    bad kind. Returns (manifest, image folder)."""
    imgs = tmp_path / "store" / "imgs"
    rows = []
    for i in range(6):
        rows.append((f"../imgs/cats/c{i}.png", "cats"))
        _png(imgs / "cats" / f"c{i}.png", color=(i * 40, 10, 10))
        dog = _png(imgs / "dogs" / f"d{i}.png", color=(10, i * 40, 10))
        rows.append((str(dog) if i % 2 else f"file://{dog}", "dogs"))
    bad = imgs / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, format="JPEG"
    )
    (bad / "trunc.jpg").write_bytes(buf.getvalue()[:600])
    (bad / "text.jpg").write_text("these are notes, not a picture")
    _png(bad / "huge.png", size=(2000, 1000), color=0, mode="L")
    _png(imgs / "zebra.png")
    rows += [
        ("../imgs/bad/zero.jpg", "cats"),
        ("../imgs/bad/trunc.jpg", "dogs"),
        ("../imgs/bad/text.jpg", "cats"),
        ("../imgs/bad/huge.png", "dogs"),
        ("../imgs/zebra.png", "zebra"),
        ("../imgs/nope.jpg", "cats"),
    ]
    manifest = tmp_path / "store" / "lists" / "all.csv"
    manifest.parent.mkdir(parents=True)
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([("uri", "label"), *rows])
    return manifest, imgs


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_every_bad_kind_is_quarantined_and_listed_in_quarantine_csv(tmp_path, local_ray):
    local_address = local_ray
    manifest, imgs = _planted_store(tmp_path)
    # a size column, empty (looked at) but for one row naming no object: not looked at, so
    # it is quarantined when read
    rows = [(*row, "") for row in list(csv.reader(manifest.open()))[1:]]
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows(
            [("uri", "label", "size"), *rows, ("../imgs/gone.jpg", "cats", "10")]
        )
    settings = ["data.classes=[cats, dogs]", "data.max_image_pixels=1000000"]
    job = _job(manifest, tmp_path / "runs", *settings, "data.max_bad_fraction=0.5")
    prepared = prepare_data(job)
    csv_text = Path(prepared.quarantine_uri).read_text()
    bad = imgs / "bad"
    assert csv_text.splitlines() == [
        "uri,split,reason",
        f'{bad / "huge.png"},none,"too_many_pixels: 2000x1000 = 2000000 pixels, more than '
        '`data.max_image_pixels` (1000000)"',
        f"{bad / 'text.jpg'},none,corrupt_image: not a recognised image format",
        f"{bad / 'trunc.jpg'},none,corrupt_image: OSError: Truncated File Read",
        f"{bad / 'zero.jpg'},none,empty_file: the file has 0 bytes",
        f"{imgs / 'gone.jpg'},none,unreadable_file: [Errno 2] Failed to open local file "
        f"'{imgs / 'gone.jpg'}'. Detail: [errno 2] No such file or directory",
        f"{imgs / 'nope.jpg'},none,missing_object: no such file or object",
        f"{imgs / 'zebra.png'},none,unknown_label: 'zebra' is not one of `data.classes`",
    ]
    summary = prepared.summary()
    assert summary["listed"] == 19 and summary["quarantined"] == 7  # in = used + set aside
    assert summary["splits"]["train"]["used"] + summary["splits"]["val"]["used"] == 12
    assert summary["quarantined_reasons"] == {
        "corrupt_image": 2,
        "empty_file": 1,
        "missing_object": 1,
        "too_many_pixels": 1,
        "unknown_label": 1,
        "unreadable_file": 1,
    }
    assert prepared.report()["quarantined_files"] == prepared.quarantined
    assert prepared.classes == ["cats", "dogs"]

    # More bad than allowed: exit 2 through the CLI, naming the field, limit and fraction;
    # the limit is not part of the fingerprint, so this run reuses the shards.
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(job.record()))
    proc = subprocess.run(
        [sys.executable, "-m", "tljob.cli", "prepare", "--config", str(config)]
        + ["--set", "data.max_bad_fraction=0.25"],
        env={**os.environ, "RAY_ADDRESS": local_address, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "`data.max_bad_fraction` (0.25): 7 of 19 listed images (36.8%) are quarantined, more "
        f"than the limit allows. Each is listed with why in {prepared.quarantine_uri}"
    ) in proc.stderr
    assert "reusing prepared data" in proc.stdout + proc.stderr


def test_manifest_rows_resolve_relative_and_absolute_uris_csv_and_parquet(tmp_path):
    manifest, imgs = _planted_store(tmp_path)
    listing = list_manifest(str(manifest))
    assert listing.classes == ["cats", "dogs", "zebra"]  # sorted distinct labels
    assert listing.files["cats"] == sorted(
        [str(imgs / "cats" / f"c{i}.png") for i in range(6)]
        + [str(imgs / "bad" / n) for n in ("text.jpg", "zero.jpg")]
    )
    assert listing.files["dogs"][:6] == [
        str(imgs / "bad" / n) for n in ("huge.png", "trunc.jpg")
    ] + [str(imgs / "dogs" / f"d{i}.png") for i in range(4)]
    assert listing.quarantined == [
        {"path": str(imgs / "nope.jpg"), "reason": "missing_object: no such file or object"}
    ]
    # The same rows as Parquet, plus a label conflict, a repeated row and a row without uri.
    rows = list(csv.reader(manifest.open()))[1:]
    rows += [(rows[0][0], "dogs"), (rows[2][0], "cats"), ("", "cats")]
    parquet = manifest.with_suffix(".parquet")
    pq.write_table(pa.table({"uri": [r[0] for r in rows], "label": [r[1] for r in rows]}), parquet)
    from_parquet = list_manifest(str(parquet), classes=["dogs", "cats"], max_per_class=3)
    assert from_parquet.classes == ["dogs", "cats"]  # data.classes order is label order
    c0, c1 = (str(imgs / "cats" / f"c{i}.png") for i in (0, 1))
    conflict = "label_conflict: the manifest lists this uri under classes 'cats', 'dogs'"
    assert from_parquet.quarantined == [
        {"path": c0, "reason": conflict},
        {"path": c0, "reason": conflict},
        {"path": c1, "reason": "duplicate_row: the manifest lists this uri again"},
        {"path": str(imgs / "nope.jpg"), "reason": "missing_object: no such file or object"},
        {
            "path": str(imgs / "zebra.png"),
            "reason": "unknown_label: 'zebra' is not one of `data.classes`",
        },
        {"path": f"{parquet}#row=21", "reason": "empty_uri: the row has no uri"},
    ]
    assert from_parquet.files["cats"] == [
        str(imgs / "bad" / "text.jpg"),
        str(imgs / "bad" / "zero.jpg"),
        c1,
    ]
    with pytest.raises(DataError, match=r"the manifest has no column\(s\) label"):
        bad = tmp_path / "bad.csv"
        bad.write_text("uri,class\na.png,cats\n")
        list_manifest(str(bad))


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_raw_and_encoded_shards_hold_the_same_labels_and_nearly_the_same_pixels(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=5, scale=4)
    rows = {}
    for pixels in ("raw", "png", "jpeg"):
        job = _job(root, tmp_path / "runs", f"data.shard_pixels={pixels}")
        rows[pixels] = _shard_rows(prepare_data(job).prepared_uri)
    assert len(rows["raw"]) == 10
    for pixels in ("png", "jpeg"):
        assert {u: (r["split"], r["label"], r["sha256"]) for u, r in rows[pixels].items()} == {
            u: (r["split"], r["label"], r["sha256"]) for u, r in rows["raw"].items()
        }
    for uri, raw in rows["raw"].items():
        size = 37 if raw["split"] == "train" else 32  # train: ceil(32 * 8 / 7); val: 32
        want = decode_stored(raw["image"], size, "raw")
        assert want.shape == (size, size, 3)
        # stored straight from the source at its size, as the exported model resizes
        assert np.array_equal(want, load_image(uri, size))
        assert np.array_equal(decode_stored(rows["png"][uri]["image"], size, "png"), want)
        jpeg = decode_stored(rows["jpeg"][uri]["image"], size, "jpeg").astype(int)
        assert np.abs(jpeg - want).mean() < 3.0
        assert len(rows["jpeg"][uri]["image"]) < len(raw["image"])
    assert {r["split"] for r in rows["raw"].values()} == {"train", "val"}


def _manifest(folder: storage.Location, attempt: str) -> PreparedManifest:
    return PreparedManifest(
        fingerprint="fp",
        attempt=attempt,
        classes=["a", "b"],
        store={},
        listed=2,
        per_split={},
        files={"train": [f"{attempt}/train/x.parquet"], "val": []},
    )


def test_concurrent_publishes_of_one_fingerprint_keep_the_first(tmp_path):
    folder = storage.resolve(str(tmp_path / "prepared" / "fp"))
    for attempt in ("first", "second"):
        (Path(folder.path) / attempt / "train").mkdir(parents=True)
        (Path(folder.path) / attempt / "train" / "x.parquet").write_bytes(b"x")
    assert publish(folder, _manifest(folder, "first")).attempt == "first"
    assert publish(folder, _manifest(folder, "second")).attempt == "first"
    assert sorted(os.listdir(folder.path)) == ["first", MANIFEST_FILE]
    assert json.loads((Path(folder.path) / MANIFEST_FILE).read_text())["attempt"] == "first"


def test_fingerprint_follows_content_metadata_and_settings(tmp_path):
    root = write_digits_tree(tmp_path / "d", classes=2, per_class=3)
    from tljob.data.listing import list_images

    listing = list_images(str(root))
    split, store = SplitSettings(0.2, 0), StoreSettings(37, 32, "raw", 0, 10**8, 10**8)

    def fp(**changes) -> str:
        uris = [u for c in listing.classes for u in listing.files[c]]
        return fingerprint(
            listing,
            stat_objects(uris),
            changes.get("split", split),
            changes.get("store", store),
        )

    base = fp()
    assert fp() == base
    assert fp(split=SplitSettings(0.2, 1)) != base
    assert fp(store=StoreSettings(40, 32, "raw", 0, 10**8, 10**8)) != base
    assert fp(store=StoreSettings(37, 32, "jpeg", 95, 10**8, 10**8)) != base
    victim = sorted(root.rglob("*.png"))[0]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert fp() != base  # same bytes, newer mtime: prepared again (it cannot know)


def test_only_old_unpublished_attempts_are_removed(tmp_path):
    from tljob.data.prepared import ABANDONED_AFTER_S, remove_abandoned_attempts

    folder = storage.resolve(str(tmp_path / "fp"))
    old = ABANDONED_AFTER_S + 60
    for attempt, age in [("won", old), ("stale", old), ("running", 10), ("mixed", old)]:
        shard = tmp_path / "fp" / attempt / "train" / "a.parquet"
        shard.parent.mkdir(parents=True)
        shard.write_bytes(b"x")
        when = shard.stat().st_mtime - age
        os.utime(shard, (when, when))
    fresh = tmp_path / "fp" / "mixed" / "staging.parquet"  # one recent write keeps it
    fresh.write_bytes(b"y")
    (tmp_path / "fp" / MANIFEST_FILE).write_text("{}")
    assert remove_abandoned_attempts(folder, keep="won") == ["stale"]
    assert sorted(p.name for p in (tmp_path / "fp").iterdir()) == [
        MANIFEST_FILE,
        "mixed",
        "running",
        "won",
    ]
    assert remove_abandoned_attempts(folder, keep="won", max_age_s=0) == ["mixed", "running"]
