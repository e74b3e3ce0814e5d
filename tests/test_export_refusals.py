"""``tljob export``: bad inputs exit 2 naming the thing at fault, and an export appears at
``--out`` whole or not at all (failed, killed, replacing an earlier one; local and
``s3://``). The model and its run: tests/serving_files.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from serving_files import copy_run, make_run

from tljob import storage
from tljob.cli import main
from tljob.nn.keras import tf_keras
from tljob.serving import publish


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"))


# --- (d) bad inputs: exit 2 naming the thing at fault ----------------------------------


def not_keras(folder: Path) -> str:
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.keras").write_text("not a model")
    (folder / "labels.json").write_text('{"0": "a", "1": "b"}')
    return str(folder)


def plain_keras(folder: Path) -> str:
    """A Keras model (one Dense layer) that tljob did not make."""
    (folder / "model").mkdir(parents=True)
    net = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    net.save(folder / "model" / "model.keras")
    (folder / "labels.json").write_text('{"0": "a", "1": "b"}')
    return str(folder / "model" / "model.keras")


def two_labels(folder: Path, run: Path) -> str:
    copy_run(run, folder, "model/model.keras")
    (folder / "labels.json").write_text('{"0": "digit_0", "1": "digit_1"}')
    return str(folder)


BAD_INPUTS = {
    "missing labels.json beside a model file": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras") / "model" / "model.keras"),
        [],
        "model.keras': no labels.json beside it (looked for '{tmp}/model/labels.json' or "
        "'{tmp}/labels.json')",
    ),
    "missing labels.json in a run directory": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras")),
        [],
        "{tmp}/labels.json: no such file",
    ),
    "labels.json not index -> name": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras")),
        ["labels"],
        '{tmp}/labels.json: it must be a JSON object {{"0": "<class name>"',
    ),
    "labels.json of another number of classes": (
        lambda tmp, run: two_labels(tmp, run),
        [],
        "the model answers output shape (None, 3), but labels.json names 2 classes",
    ),
    "no such path": (lambda tmp, run: str(tmp / "nowhere"), [], "nowhere': no such file or folder"),
    "a folder that is not a run": (
        lambda tmp, run: str(tmp),
        [],
        "this folder has no model/model.keras, so it is not a tljob run directory",
    ),
    "a file that is not .keras": (
        lambda tmp, run: str(copy_run(run, tmp, "summary.json") / "summary.json"),
        [],
        "summary.json' is not a tljob model: tljob's models are .keras files",
    ),
    "a .keras file Keras cannot read": (
        lambda tmp, run: not_keras(tmp),
        [],
        "model.keras' is not a tljob model: Keras cannot read it",
    ),
    "a Keras model tljob did not make": (
        lambda tmp, run: plain_keras(tmp),
        [],
        "model.keras' is not a tljob model: it does not take images through tljob's "
        "ResizeImages layer",
    ),
    "a --set outside the s3 section": (
        lambda tmp, run: str(run),
        ["--set", "train.batch_size=4"],
        "--set 'train.batch_size': tljob export takes s3 settings only (s3.endpoint_url, "
        "s3.region, s3.addressing_style, s3.allow_http, s3.max_attempts)",
    ),
    "an unknown s3 setting": (
        lambda tmp, run: str(run),
        ["--set", "s3.secret_access_key=abcd1234"],
        "invalid --set:\n  `s3.secret_access_key` is not a known setting",
    ),
    "a plain-http endpoint not allowed": (
        lambda tmp, run: str(run),
        ["--set", "s3.endpoint_url=http://minio:9000"],
        "set `s3.allow_http: true`",
    ),
    "an --out folder holding other files": (
        lambda tmp, run: str(copy_run(run, tmp, "model/model.keras", "labels.json")),
        ["foreign out"],
        "--out '{tmp}/out' already holds files that are not a tljob export",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_exit_2_naming_what_is_wrong(case, tmp_path, run, capsys):
    make, tweaks, expected = BAD_INPUTS[case]
    folder = tmp_path / "given"
    folder.mkdir()
    model = make(folder, run)
    argv = ["export", "--model", model, "--format", "savedmodel"]
    argv += [tweak for tweak in tweaks if tweak.startswith(("--set", "s3.", "train."))]
    if "labels" in tweaks:
        (folder / "labels.json").write_text('{"0": "digit_0", "2": "digit_2"}')
    if "foreign out" in tweaks:
        (folder / "out").mkdir()
        (folder / "out" / "notes.txt").write_text("mine")
        argv += ["--out", str(folder / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tljob: error: ")
    assert expected.format(tmp=folder) in err
    assert "abcd1234" not in err
    assert not (folder / "export").exists()
    if "foreign out" in tweaks:
        assert [p.name for p in (folder / "out").iterdir()] == ["notes.txt"]


def test_an_unknown_format_exits_2_naming_it_and_the_formats(capsys, run):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--model", str(run), "--format", "pytorch"])
    assert exit_.value.code == 2
    assert (
        "argument --format: invalid choice: 'pytorch' (choose from 'savedmodel', 'tflite', "
        "'onnx')" in capsys.readouterr().err
    )


# --- publishing: whole or not at all ----------------------------------------------------


def earlier_export(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "model.tflite").write_text("old")
    (out / "model_card.json").write_text(json.dumps({"tljob_export": {"format": "tflite"}}))


def test_a_failed_export_leaves_the_earlier_one_and_no_temporary_folder(tmp_path):
    out = tmp_path / "export" / "tflite"
    earlier_export(out)
    staged = publish.staged(storage.resolve(str(out)), "model.tflite")
    with pytest.raises(RuntimeError, match="converter failed"), staged as folder:
        Path(folder, "model.tflite").write_text("new, half written")
        raise RuntimeError("converter failed")
    assert sorted(p.name for p in out.parent.iterdir()) == ["tflite"]
    assert (out / "model.tflite").read_text() == "old"
    with publish.staged(storage.resolve(str(out)), "model.tflite") as folder:
        Path(folder, "model.tflite").write_text("new")
    assert sorted(p.name for p in out.parent.iterdir()) == ["tflite"]
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite"]  # the old card is gone
    assert (out / "model.tflite").read_text() == "new"


KILLED_MID_EXPORT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tljob import storage
    from tljob.serving import publish

    with publish.staged(storage.resolve(sys.argv[1]), "saved_model.pb") as folder:
        (Path(folder) / "variables").mkdir()
        (Path(folder) / "variables" / "variables.index").write_text("half")
        (Path(folder) / "saved_model.pb").write_text("written, the rest is not")
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_export_leaves_no_folder_at_out(tmp_path):
    out = tmp_path / "export" / "savedmodel"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_EXPORT, str(out)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    (left,) = out.parent.iterdir()  # hidden: no runtime looks for a model there
    assert left.name.startswith(storage.TMP_PREFIX) and left.name.endswith("-savedmodel")


def test_an_export_on_s3_appears_whole_and_replaces_only_an_earlier_export(s3):
    out = storage.resolve(s3.uri("runs", "r", "export", "onnx"))
    with (
        pytest.raises(RuntimeError, match="converter failed"),
        publish.staged(out, "model.onnx") as folder,
    ):
        Path(folder, "labels.json").write_text("{}")
        raise RuntimeError("converter failed")
    assert s3.objects() == []  # nothing is uploaded before the writer is done

    card = json.dumps({"tljob_export": {"format": "onnx"}})
    for content in ("first", "second"):
        with publish.staged(out, "model.onnx") as folder:
            Path(folder, "model.onnx").write_text(content)
            Path(folder, "model_card.json").write_text(card)
            Path(folder, f"{content}.txt").write_text(content)
    keys = [
        f"runs/r/export/onnx/{name}" for name in ("model.onnx", "model_card.json", "second.txt")
    ]
    assert s3.objects() == keys  # the earlier export's own file is gone
    assert storage.read_text(out.join("model.onnx")) == "second"

    storage.write_text(storage.resolve(s3.uri("mine", "notes.txt")), "not an export")
    with pytest.raises(publish.OutputFolderError, match="not a tljob export"):
        publish.check_replaceable(storage.resolve(s3.uri("mine")))
    with pytest.raises(publish.OutputFolderError, match="is a whole bucket; give a prefix"):
        publish.check_replaceable(storage.resolve(s3.uri()))
