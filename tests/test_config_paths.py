"""A sweep's relative local paths are resolved once, where the sweep is loaded: its trials
run in Ray Tune's trial folders (on a cluster, where its nodes started), where the same
relative path names another folder (a sweep with `run.storage_path: tljob-runs` failed
every trial: "trained on .../working_dirs/trial_.../tljob-runs/prepared/..., not on the
sweep's prepared data"). No Ray."""

from __future__ import annotations

import textwrap

from tljob.config.paths import absolute_path, absolute_weights
from tljob.config.sweep import load_sweep, trial_job

PIN = "#sha256=" + "ab" * 32
SWEEP = f"""
    data: {{source: images, image_size: 32, prepared_path: cache/prepared, test_source: held}}
    model: {{backbone: mobilenet_v2, weights: "weights/backbone.h5{PIN}"}}
    run: {{storage_path: runs}}
    search:
      train.stages.0.learning_rate: {{loguniform: [1.0e-4, 1.0e-2]}}
    tune: {{name: lr, storage_path: sweeps}}
"""


def test_relative_paths_of_a_sweep_mean_the_folder_it_is_loaded_in(tmp_path, monkeypatch):
    (tmp_path / "sweep.yaml").write_text(textwrap.dedent(SWEEP))
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("sweep.yaml", ["data.source=more/../images"])
    job = sweep.job
    assert job.data.source == str(tmp_path / "images")
    assert job.data.prepared_path == str(tmp_path / "cache" / "prepared")
    assert job.data.test_source == str(tmp_path / "held")
    assert job.run.storage_path == str(tmp_path / "runs")
    assert str(job.model.weights) == f"{tmp_path / 'weights' / 'backbone.h5'}{PIN}"
    assert sweep.storage_path == str(tmp_path / "sweeps" / "lr")

    # a trial builds its job in Tune's trial folder: the same folders as the sweep's
    trial_dir = tmp_path / "working_dirs" / "trial_0"
    trial_dir.mkdir(parents=True)
    monkeypatch.chdir(trial_dir)
    trial = trial_job(sweep, {"train.stages.0.learning_rate": 1e-3}, "lr-0")
    assert (trial.data.source, trial.run.storage_path, trial.data.prepared_path) == (
        job.data.source,
        job.run.storage_path,
        job.data.prepared_path,
    )
    assert str(trial.model.weights) == str(job.model.weights)


def test_uris_absolute_paths_and_named_weights_are_kept_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("s3://bucket/images", "file:///data/images", "/data/images", ""):
        assert absolute_path(uri) == uri
    assert absolute_path("~/images") == absolute_path(str(tmp_path.home() / "images"))
    for weights in ("imagenet", "none", f"s3://bucket/w.h5{PIN}", f"/w/b.h5{PIN}"):
        assert absolute_weights(weights) == weights
    assert absolute_weights("b.weights.h5") == str(tmp_path / "b.weights.h5")
