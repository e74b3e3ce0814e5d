"""The data plan (``tljob.data.plan``): the listing's split, per-class counts, fingerprint
and batch check, made once and passed down. Without Ray: what a plan holds and how a
trial's plan and preparation use it without splitting or checking again. On the session's
Ray: a real tiny ``tljob train`` on a folder and a pseudo-label manifest (with ``--json``:
its stdout is the summary alone; preparation sets images aside, so the split is redone
once) and a one-trial sweep that splits the listing once and checks batches once, counted
from the debug lines ``split_stratified`` and ``check_batches`` log."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import write_digits_tree

from tljob import ray_private
from tljob.config import load_config
from tljob.config.sweep import load_sweep, trial_job
from tljob.data.listing import DataError, check_listing, list_images
from tljob.data.plan import Batches, plan_data, store_settings
from tljob.data.prepared import SplitSettings, fingerprint
from tljob.data.sources import listing_stats
from tljob.data.split import split_stratified
from tljob.infer.parts import manifest_csv
from tljob.preflight import TooFewImagesError, check_batches


class _Lines(logging.Handler):
    """The messages tljob's loggers log, debug lines included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def count(self, prefix: str) -> int:
        return sum(m.startswith(prefix) for m in self.messages)

    def counts(self) -> tuple[int, int]:
        """(splits made, batch checks made)."""
        return self.count("split_stratified: "), self.count("check_batches: ")


@pytest.fixture
def lines():
    """Count what tljob logs in this process while the test runs."""
    handler = _Lines()
    root = logging.getLogger("tljob")
    children = [logging.getLogger(f"tljob.{name}") for name in ("data", "preflight")]
    levels = [child.level for child in children]
    root.addHandler(handler)
    for child in children:
        child.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for child, level in zip(children, levels, strict=True):
            child.setLevel(level)


def _job(data: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.source={data}",
            "model.weights=none",
            "data.image_size=32",
            "data.val_fraction=0.25",
            "data.seed=1",
            "train.batch_size=4",
            "scaling.num_workers=1",
            *overrides,
        ],
    )


def test_a_plan_holds_the_listings_split_counts_fingerprint_and_batch_check(tmp_path, lines):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=8)
    job = _job(data)
    listing = list_images(str(data))
    plan = plan_data(job, listing)
    assert lines.counts() == (1, 1)
    train, val = split_stratified(listing, 0.25, 1)
    assert (list(plan.train), list(plan.val)) == (train, val)
    assert (len(plan.train), len(plan.val)) == (18, 6)
    assert plan.per_class == {
        "train": {"digit_0": 6, "digit_1": 6, "digit_2": 6},
        "val": {"digit_0": 2, "digit_1": 2, "digit_2": 2},
    }
    uris = [u for c in listing.classes for u in listing.files[c]]
    split = SplitSettings(0.25, 1)
    assert plan.split == split and plan.store == store_settings(job)
    assert plan.fingerprint == fingerprint(
        listing, listing_stats(listing, uris), split, store_settings(job)
    )
    assert plan.batches == Batches(batch_size=4, num_workers=1)
    assert plan_data(job, listing, batches=False).batches is None


def test_a_plan_refuses_what_the_batch_check_and_the_split_refuse(tmp_path):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=8)
    with pytest.raises(TooFewImagesError) as err:
        plan_data(_job(data, "train.batch_size=32"), list_images(str(data)))
    with pytest.raises(TooFewImagesError) as expected:
        check_batches(18, 6, 32, 1)
    assert str(err.value) == str(expected.value)
    single = write_digits_tree(tmp_path / "single", classes=2, per_class=1)
    with pytest.raises(DataError) as err:
        plan_data(_job(single), list_images(str(single)), batches=False)
    assert str(err.value) == (
        "`data.val_fraction` (0.25) leaves no validation images: every class needs at least "
        "2 images"
    )


def _job_tree(tmp_path: Path, data: Path) -> dict:
    """The tiny job both the train and the sweep tests run."""
    return {
        "data": {"source": str(data), "image_size": 32, "val_fraction": 0.25, "seed": 1},
        "model": {"backbone": "mobilenet_v3_small", "weights": "none"},
        "train": {
            "batch_size": 4,
            "stages": [{"name": "all", "epochs": 1, "learning_rate": 1e-3, "trainable": "all"}],
        },
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "run": {"storage_path": str(tmp_path / "runs")},
    }


def _sweep(tmp_path: Path, data: Path, search: dict) -> Path:
    tree = {
        **_job_tree(tmp_path, data),
        "search": search,
        "tune": {"name": "plan", "scheduler": "fifo", "metric": "val_loss"},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_trial_uses_the_sweeps_plan_and_checks_only_other_batches(tmp_path, lines):
    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=8)
    sweep = load_sweep(
        _sweep(
            tmp_path,
            data,
            {"train.batch_size": {"grid": [4, 2, 32]}, "model.head.dropout": {"grid": [0.0, 0.1]}},
        )
    )
    plan = plan_data(sweep.job, list_images(str(data)))
    assert lines.counts() == (1, 1)

    same = plan.for_job(trial_job(sweep, {"train.batch_size": 4, "model.head.dropout": 0.1}, "t1"))
    assert same is plan  # the sweep's own batches: nothing derived again
    assert lines.counts() == (1, 1)

    smaller = plan.for_job(trial_job(sweep, {"train.batch_size": 2}, "t2"))
    assert smaller.batches == Batches(batch_size=2, num_workers=1)
    assert (smaller.train, smaller.val, smaller.fingerprint) == (
        plan.train,
        plan.val,
        plan.fingerprint,
    )
    assert lines.counts() == (1, 2)  # one check for the new batch size, no split

    with pytest.raises(TooFewImagesError, match=r"`train.batch_size` \(32\)"):
        plan.for_job(trial_job(sweep, {"train.batch_size": 32}, "t3"))
    assert lines.counts() == (1, 3)

    other_data = _job(data, "data.seed=2")
    with pytest.raises(ValueError, match="the data plan is for"):
        plan.for_job(other_data)


def test_preparation_reuses_the_plans_split_unless_images_were_set_aside(tmp_path, lines):
    from conftest import scan_file

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=8)
    listing = list_images(str(data))
    plan = plan_data(_job(data), listing)
    scans = {p: scan_file(p) for c in listing.classes for p in listing.files[c]}
    assert plan.split_for(check_listing(listing, scans).usable) == (
        list(plan.train),
        list(plan.val),
        [],
    )
    assert lines.counts() == (1, 1)
    plan.check_prepared(len(plan.train), len(plan.val))  # the counts checked already
    assert lines.counts() == (1, 1)

    # one image is a copy of another: the usable images are split by the same rule
    copied = listing.files["digit_0"][1]
    Path(copied).write_bytes(Path(listing.files["digit_0"][0]).read_bytes())
    scans[copied] = scan_file(copied)
    usable = check_listing(listing, scans).usable
    assert plan.split_for(usable)[:2] == split_stratified(usable, 0.25, 1)
    assert lines.counts() == (3, 1)  # the usable images' split, and the one just above
    plan.check_prepared(17, 6)
    assert lines.counts() == (3, 2)
    with pytest.raises(TooFewImagesError, match="too few validation images: 0 for 1 worker"):
        plan.check_prepared(17, 0)


def controllers_left(ray_connected, wait_s: float = 60) -> list[str]:
    """The ids of Train controller actors still alive after up to ``wait_s`` seconds (an
    actor whose last handle went ends asynchronously)."""
    import gc

    from ray.util.state import list_actors

    deadline = time.monotonic() + wait_s
    while True:
        gc.collect()
        alive = [
            a.actor_id
            for a in list_actors(
                address=ray_connected["dashboard"],
                filters=[("state", "=", "ALIVE"), ("class_name", "=", "TrainController")],
                raise_on_missing_output=False,
            )
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(1)


def test_a_train_on_a_folder_and_a_pseudo_label_manifest_prints_json_and_frees_its_controller(
    tmp_path, ray_connected, lines, capfd
):
    """One tiny run serves four checks: one round of self-training's second command (a
    folder of labelled images and a pseudo-label manifest as ``tljob predict
    --as-manifest`` writes it, ``infer.parts.manifest_csv``: absolute uris; every listed
    entry counted once, the rules without Ray: test_source_list.py), the plan made once
    and redone once after preparation set images aside, ``--json``'s stdout, and no Train
    controller left behind in the calling process."""
    from tljob.cli import main

    labelled = write_digits_tree(tmp_path / "labelled", classes=3, per_class=6)
    unlabelled = write_digits_tree(tmp_path / "unlabelled", classes=3, per_class=9)
    for c in range(3):  # keep the 3 images of each class the labelled folder does not hold
        for path in sorted((unlabelled / f"digit_{c}").iterdir())[:6]:
            path.unlink()
    same = sorted((labelled / "digit_1").iterdir())[0]
    other = sorted((labelled / "digit_2").iterdir())[0]
    copy = unlabelled / "copy_of_digit_0.png"
    shutil.copy(sorted((labelled / "digit_0").iterdir())[0], copy)
    rows = [(str(p), f"digit_{c}") for c in range(3)
            for p in sorted((unlabelled / f"digit_{c}").iterdir())]  # fmt: skip
    rows += [(str(same), "digit_1"), (str(other), "digit_0"), (str(copy), "digit_0")]
    pseudo = tmp_path / "pseudo.csv"
    pseudo.write_text(manifest_csv(sorted(rows)))
    config = tmp_path / "job.yaml"
    tree = {
        "data": {
            "source": [str(labelled), str(pseudo)],
            "image_size": 32,
            "val_fraction": 0.25,
            "seed": 1,
        },
        "model": {"backbone": "mobilenet_v3_small", "weights": "none"},
        "train": {
            "batch_size": 4,
            "stages": [{"name": "all", "epochs": 1, "learning_rate": 1e-3, "trainable": "all"}],
        },
        # a wait for resources: the run asks the autoscaler for its workers' resources
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "resource_wait_seconds": 5},
        "run": {"name": "pseudo", "storage_path": str(tmp_path / "runs")},
    }
    config.write_text(yaml.safe_dump(tree))
    assert main(["train", "--config", str(config), "--json"]) == 0
    # ... and withdrew the request once its workers were gone (request_resources(bundles=
    # [])): a standing request would keep an autoscaler's GPU nodes up for good
    assert ray_private.requested_resources() == []
    assert lines.count("preparing 30 images into ") == 1  # every row, prepared now (not reused)
    # the plan's split, then one over the usable images: preparation set 3 aside (a clean
    # listing is split once: the sweep's test below; test_preparation_reuses_the_plans_...)
    assert lines.counts() == (2, 2)
    out, err = capfd.readouterr()
    # the run's Train controller is gone though this process goes on: fit() hands Ctrl-C
    # back to its caller (Ray Train's handler held the controller's handle)
    assert controllers_left(ray_connected) == []

    run_dir = tmp_path / "runs" / "pseudo"
    saved = json.loads((run_dir / "summary.json").read_text())
    assert json.loads(out) == {**saved, "run_dir": str(run_dir)}  # and nothing else
    assert saved["epochs"] == 1
    released = saved["worker_resources_released"]
    assert released["request_withdrawn"] is True
    # the wall time, cut where the workers went (each figure rounded to 0.1 s)
    parts = released["seconds_after_start"] + released["seconds_before_end"]
    assert abs(parts - saved["wall_seconds"]) <= 0.1 + 1e-9
    assert datetime.fromisoformat(released["at"]).tzinfo == UTC
    # (rank 0's progress lines reach a separate driver process's stderr; this in-process
    # driver joined the suite's Ray without Ray's log relay, so they are not checked here)
    assert "[tljob] data: 3 classes; images 30 listed" in err  # tljob's lines: stderr
    assert "val_acc best" not in out + err  # no table
    data = saved["data"]
    # 18 labelled + 12 rows = 30 listed: 27 distinct images (9 a class), the labelled image
    # listed again and the copy duplicates, the other label of a labelled image quarantined
    assert (data["listed"], data["duplicates"], data["quarantined"]) == (30, 2, 1)
    assert {name: split["per_class_used"] for name, split in data["splits"].items()} == {
        "train": {"digit_0": 7, "digit_1": 7, "digit_2": 7},
        "val": {"digit_0": 2, "digit_1": 2, "digit_2": 2},
    }
    assert data["listed"] == 21 + 6 + data["duplicates"] + data["quarantined"]
    assert data["quarantined_reasons"] == {"label_conflict": 1}
    # the steps' input wait (tljob.run.input_wait): 21 training images in batches of 4, 5
    # steps taking 20 of them, served from worker memory; the ratio is the wait over the step
    figures = saved["input"]
    assert set(figures) == {
        "streamed", "epochs", "steps", "step_seconds", "input_wait_seconds",
        "input_wait_ratio", "images_per_step", "starved", "stream_images_per_cpu_s",
    }  # fmt: skip
    assert (figures["streamed"], figures["epochs"], figures["steps"]) == (False, 1, 5)
    assert (figures["images_per_step"], figures["stream_images_per_cpu_s"]) == (4, None)
    step, wait = figures["step_seconds"], figures["input_wait_seconds"]
    assert isinstance(step, float) and isinstance(wait, float) and 0 <= wait <= step
    assert 0 <= figures["input_wait_ratio"] <= 1
    assert figures["input_wait_ratio"] == pytest.approx(wait / step, abs=1e-4 + 1e-6 / step)
    assert figures["starved"] is (figures["input_wait_ratio"] > 0.2)
    (timing,) = json.loads((run_dir / "timings.json").read_text())
    assert {k: timing["input"][k] for k in ("steps", "images", "streamed")} == {
        "steps": 5, "images": 20, "streamed": False,
    }  # fmt: skip
    assert timing["input"]["step_seconds"] == step
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["quarantined_files"] == [
        {
            "path": str(other),
            "reason": f"label_conflict: `data.source[1]` ({str(pseudo)!r}) lists this uri as "
            f"'digit_0', `data.source[0]` ({str(labelled)!r}) as 'digit_2' (the earlier "
            "source's label is used)",
        }
    ]
    first = str(sorted((labelled / "digit_0").iterdir())[0])
    assert report["duplicate_files"] == [
        {"path": str(same), "duplicate_of": str(same)},
        {"path": str(copy), "duplicate_of": first},
    ]
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels == {"0": "digit_0", "1": "digit_1", "2": "digit_2"}
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["source"] == [
        str(labelled),
        str(pseudo),
    ]


def _counting_trial(config, *, splits_to: str, **kwargs):
    """``trial_driver_fn`` that writes to ``splits_to`` how many splits its process made
    (it runs in a Tune actor: this module is shipped by value, see the test below)."""
    from pathlib import Path as _Path

    from tljob.data import plan, split
    from tljob.tune.trial import trial_driver_fn

    made = []
    real = split.split_listing

    def counted(*args, **kw):
        made.append(1)
        return real(*args, **kw)

    split.split_listing = plan.split_listing = counted
    try:
        trial_driver_fn(config, **kwargs)
    finally:
        split.split_listing = plan.split_listing = real
        _Path(splits_to).write_text(str(len(made)))


def test_a_sweep_splits_the_listing_once_and_checks_batches_once(
    tmp_path, ray_connected, lines, monkeypatch
):
    import functools
    import sys

    import ray.cloudpickle

    from tljob.tune import driver
    from tljob.tune.driver import sweep_driver_fn

    # the sweep's driver sets RAY_AIR_NEW_OUTPUT=0 in its process (this one): undone after
    # the test, so later tests' subprocesses do not inherit Tune's old output engine
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    # the trial counts the splits made in its own process (a Tune actor), into a file
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    trial_splits = tmp_path / "trial_splits"
    counting = functools.partial(_counting_trial, splits_to=str(trial_splits))
    monkeypatch.setattr(
        driver, "trial_driver_fn", functools.update_wrapper(counting, _counting_trial)
    )

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=8, scale=4)
    # one trial is enough: a trial's own plan is test_a_trial_uses_the_sweeps_plan_...'s
    # (the best trial scored on a test split: test_tune_integration.py's sweep)
    sweep_driver_fn(load_sweep(_sweep(tmp_path, data, {"train.batch_size": {"grid": [2]}})))
    with open(tmp_path / "runs" / "plan" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [(t["train.batch_size"], t["status"], t["epochs_run"]) for t in trials] == [
        ("2", "completed", "1")
    ]
    assert lines.count("preparing 24 images into ") == 1
    assert lines.counts() == (1, 1)  # in the sweep's driver; the trial gets its plan
    assert trial_splits.read_text() == "0"  # and splits nothing again
