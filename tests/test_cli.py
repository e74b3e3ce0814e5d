"""The command line's shape and its small outputs, without Ray: one module per command with
the same interface, ``tljob --version``, ``tljob backbones --json``, and the read-only
checks ``tljob train --dry-run`` is made of (run directory, lock, resume plan)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from test_resume import _write_checkpoint, job_with, state_after

from tljob import cli, storage
from tljob.config import dump_config
from tljob.run import checkpoint as ckpt_files
from tljob.run.lock import RunLock, RunLockedError, StoragePathError, check_run_dir, prepare_run_dir
from tljob.run.plan import read_plan
from tljob.zoo import BACKBONES

CLI_DIR = Path(cli.__file__).parent


def test_every_command_is_one_module_with_the_same_interface():
    names = [command.NAME for command in cli.COMMANDS]
    assert names == [
        "train", "prepare", "evaluate", "predict", "demo", "backbones", "tune", "weights",
        "augment", "k8s", "config", "export",
    ]  # fmt: skip
    for command in cli.COMMANDS:
        assert command.__name__ == f"tljob.cli.{command.NAME}"
        assert isinstance(command.HELP, str) and command.HELP.endswith(".")
        assert callable(command.add_arguments) and callable(command.run)
    # a module in tljob/cli/ is a command on the parser, or one of the shared parts
    modules = {p.stem for p in CLI_DIR.glob("*.py")}
    assert modules == {*names, "__init__", "__main__", "_args"}
    (group,) = [a for a in cli.build_parser()._actions if a.dest == "command"]
    assert list(group.choices) == names


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_version_names_tljob_ray_and_tensorflow_without_importing_them():
    code = (
        "import sys\n"
        "from tljob.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'tensorflow'}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    tensorflow = next(d for d in ("tensorflow", "tensorflow-cpu") if _installed(d))
    assert proc.stdout.splitlines() == [
        f"tljob {_installed('tljob')} (ray {_installed('ray')}, {tensorflow} "
        f"{_installed(tensorflow)}, python {platform.python_version()})",
        "exit 0",
        "[]",  # read from the packages' metadata: neither was imported
    ]
    assert _installed("ray") == "2.60.0"  # the expected line is not empty of meaning


def test_backbones_json_is_the_table_of_every_registered_backbone(capsys):
    assert cli.main(["backbones", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == list(BACKBONES)
    for entry, spec in zip(entries, BACKBONES.values(), strict=True):
        assert entry == {
            "name": spec.name,
            "family": spec.family,
            "default_image_size": spec.default_image_size,
            "min_image_size": spec.min_image_size,
            "parameters": spec.parameters,
            "preprocessing": spec.preprocessing,
            "imagenet": bool(spec.imagenet),
            "blocks": len(spec.blocks),
        }
    vgg16 = next(e for e in entries if e["name"] == "vgg16")
    assert vgg16 == {
        "name": "vgg16",
        "family": "vgg",
        "default_image_size": 224,
        "min_image_size": 32,
        "parameters": 14714688,
        "preprocessing": "caffe",
        "imagenet": True,
        "blocks": 5,
    }
    # the table says the same: vgg16's row, formatted
    assert cli.main(["backbones"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("vgg16 ")]
    assert row.split() == ["vgg16", "vgg", "224", "px", "32", "px", "14.7M", "caffe", "yes", "5"]


def test_backbones_json_of_named_ones_in_their_order_and_unknown_exit_2(capsys):
    assert cli.main(["backbones", "--json", "vgg16", "resnet50"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["vgg16", "resnet50"]
    assert cli.main(["backbones", "--json", "vgg61"]) == cli.EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "tljob: error: unknown backbone 'vgg61'; did you mean" in captured.err


def test_train_dry_run_and_json_do_not_combine(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--config", "job.yaml", "--dry-run", "--json"])
    assert exit_.value.code == 2
    assert "argument --json: not allowed with argument --dry-run" in capsys.readouterr().err


def test_the_run_directory_check_creates_nothing_and_refuses_as_a_run_does(tmp_path):
    run_dir, exists = check_run_dir(str(tmp_path / "runs"), "r")
    assert (run_dir.uri, exists) == (str(tmp_path / "runs" / "r"), False)
    assert list(tmp_path.iterdir()) == []  # nothing created
    prepare_run_dir(str(tmp_path / "runs"), "r")
    assert check_run_dir(str(tmp_path / "runs"), "r")[1] is True
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoragePathError) as dry:
        check_run_dir(str(tmp_path / "file"), "r")
    with pytest.raises(StoragePathError) as real:
        prepare_run_dir(str(tmp_path / "file"), "r")
    assert str(dry.value) == str(real.value)
    assert "is an existing file, not a directory" in str(dry.value)


def test_the_lock_check_takes_nothing_and_refuses_a_live_holder_as_acquire_does(tmp_path):
    run = storage.resolve(str(tmp_path / "run"))
    assert RunLock(run).check() == f"free ({tmp_path / 'run' / 'run.lock'})"
    assert not (tmp_path / "run").exists()
    with RunLock(run):
        before = (tmp_path / "run" / "run.lock").read_bytes()
        with pytest.raises(RunLockedError) as dry:
            RunLock(run).check()
        with pytest.raises(RunLockedError) as real:
            RunLock(run).acquire()
        assert str(dry.value) == str(real.value)
        waited = RunLock(run, wait_s=30).check()
        assert waited.endswith("the run would wait up to 30 s for it")
        assert (tmp_path / "run" / "run.lock").read_bytes() == before  # untouched


def test_the_resume_plan_is_read_without_tidying_the_run_directory(tmp_path):
    run_dir = storage.resolve(str(tmp_path / "r"))
    job = job_with()
    storage.write_text(run_dir.join("labels.json"), '{"0": "a", "1": "b"}')
    storage.write_text(run_dir.join("config.yaml"), dump_config(job))
    ckpt = tmp_path / "r" / "checkpoint_epoch_0001"
    _write_checkpoint(ckpt)
    (ckpt / "state.json").write_text(state_after(job, [1]).to_json())
    ckpt_files.write_manifest(str(ckpt))
    (tmp_path / "r" / "checkpoint_epoch_0002").mkdir()  # an interrupted upload
    (tmp_path / "r" / "history.csv").write_text("stale\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    found = read_plan(run_dir, job, ["a", "b"])
    assert (found.plan.stage_index, found.plan.checkpoint) == (1, "checkpoint_epoch_0001")
    assert found.incomplete == ["checkpoint_epoch_0002"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "r" / "history.csv").read_text() == "stale\n"


def test_steps_per_epoch_counts_as_the_workers_do():
    from tljob.preflight import steps_per_epoch

    # 64 training images, 2 workers, batch 4: the "step N/8" lines of the two-worker run
    assert steps_per_epoch(64, 4, 2) == 8
    assert steps_per_epoch(24, 4, 1) == 6
    # 15 each, 3 batches of 4 per worker (per replica, tljob.run.feed), 3 rows each dropped:
    # in global batches of 8 it was 1 batch of 8 split over the 2 replicas, 2 steps
    assert steps_per_epoch(30, 4, 2) == 3
    assert steps_per_epoch(64, 32, 2) == 1  # a global batch of 64 took 128 images


def test_dry_run_refuses_a_batch_too_large_with_the_message_a_run_gives(tmp_path, capsys):
    from conftest import write_digits_tree

    data = write_digits_tree(tmp_path / "digits", classes=3, per_class=10)
    argv = [
        "train",
        "--config",
        str(tmp_path / "job.yaml"),
        *("--set", f"data.source={data}", "--set", "model.weights=none"),
        *("--set", f"run.storage_path={tmp_path / 'runs'}", "--set", "scaling.num_workers=1"),
    ]
    (tmp_path / "job.yaml").write_text("{}")
    assert cli.main([*argv, "--dry-run"]) == cli.EXIT_USER_ERROR
    dry = capsys.readouterr()
    assert cli.main(argv) == cli.EXIT_USER_ERROR
    real = capsys.readouterr()
    assert dry.err == real.err
    assert dry.err.startswith(
        "tljob: error: too few training images for one step: 24 training images over 1 "
        "worker (`scaling.num_workers`) give each worker 24, fewer than one batch of "
        "`train.batch_size` (32)"
    )
    assert dry.out.splitlines() == [
        "tljob train --dry-run: checks only; nothing is trained, prepared or written",
        f"ok     config        {tmp_path / 'job.yaml'}: run 'tljob', backbone "
        "mobilenet_v2 at 224 px, 1 worker, stages head 5 epochs, fine_tune 5 epochs",
        "ok     object store  none used (local paths only)",
        f"ok     data          {data}: 3 classes, 30 images listed",
    ]  # the lines of the checks that passed, then the refusal
    assert not (tmp_path / "runs").exists()
