"""The command line's shape and its small outputs, without Ray: one module per command with
the same interface, ``tljob --version``, ``tljob backbones --json``."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

from tljob import cli
from tljob.zoo import BACKBONES

CLI_DIR = Path(cli.__file__).parent


def test_every_command_is_one_module_with_the_same_interface():
    names = [command.NAME for command in cli.COMMANDS]
    assert names == [
        "train", "prepare", "demo", "backbones", "tune", "weights", "augment", "k8s", "config"
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
