"""What the example tests run in: a user's checkout, as examples/README.md assumes one.

``user_checkout`` is a folder holding copies of the repository's ``examples/`` and
``ray_jobs/``, the venv as ``.venv`` (a link to this interpreter's), and the Fashion-MNIST
tree that ``tljob demo`` writes (``tljob-demo/fashion-mnist-600``, by the demo's own
code), made once per session: the examples' relative paths resolve in it as in a clone
after the Quick start. ``TINY`` are the ``--set`` overrides that make an example's job
a few seconds of training; the example files themselves stay as users read them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

EXAMPLES = REPO / "examples"
DEMO_TREE = "tljob-demo/fashion-mnist-600"  # where `tljob demo` writes its images
# 5 images of each class (4 train + 1 val), 32 px, one epoch per stage, batch 4.
TINY = [
    "data.image_size=32",
    "data.max_images_per_class=5",
    "train.batch_size=4",
    "train.stages.0.epochs=1",
    "train.stages.1.epochs=1",
]
_made: dict[str, Path] = {}


def user_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's user checkout (see the module docstring)."""
    if "checkout" not in _made:
        from tljob.demo import write_demo_images

        root = tmp_path_factory.mktemp("checkout")
        shutil.copytree(EXAMPLES, root / "examples")
        shutil.copytree(REPO / "ray_jobs", root / "ray_jobs")
        (root / ".venv").symlink_to(sys.prefix)
        images = write_demo_images(None, root / "tljob-demo", 600)
        assert images == root / DEMO_TREE
        _made["checkout"] = root
    return _made["checkout"]


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment (conftest's settings included) for a user's command,
    with what a checkout's activated venv gives: its ``bin`` first on PATH and, through
    PYTHONPATH, this checkout's tljob (the venv's editable install may be another's)."""
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def set_args(overrides: list[str]) -> list[str]:
    """``--set`` arguments for ``overrides``."""
    return [arg for override in overrides for arg in ("--set", override)]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
