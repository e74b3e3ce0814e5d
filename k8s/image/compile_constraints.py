"""Write k8s/image/constraints.txt: the image's dependencies, every one pinned.

    python k8s/image/compile_constraints.py        # from the repository root, any OS

pip resolves the project with its ``cuda`` extra (``.[cuda]``) for the image's platform, not
this machine's: CPython 3.11 on x86_64 Linux, glibc up to 2.35 (the Ubuntu 22.04 under
``rayproject/ray``), wheels only. ``--dry-run --report`` installs nothing; the report's
resolution, less the project itself, becomes one ``name==version`` line per distribution,
sorted by name. The same index state gives the same file: regenerate it after changing a
dependency in pyproject.toml, and commit it with that change.
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
PROJECT = "tljob"
EXTRA = "cuda"
PYTHON_VERSION = "3.11"
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
# The Dockerfile installs these into its virtualenv (pip install --no-deps -r) before the
# source is copied, then the project's wheel against them (-c, --no-index), then pip check.
"""


def resolve_command(report: Path, target: Path) -> list[str]:
    """The pip command that resolves ``.[cuda]`` for the image's platform into ``report``
    (``target``: an empty folder pip requires with ``--platform``, left empty)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--report", str(report), "--target", str(target), "--quiet"]
    command += ["--only-binary=:all:", "--implementation", "cp"]
    command += ["--python-version", PYTHON_VERSION]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return [*command, f"{REPO}[{EXTRA}]"]


def constraints_text(report: dict) -> str:
    """The constraints file for a pip installation report: the header, then
    ``name==version`` for every distribution pip would install except the project, sorted
    by canonical name. Raises ValueError when the report does not hold the project (it is
    not the resolution of this repository)."""
    pins = {}
    for item in report["install"]:
        metadata = item["metadata"]
        pins[canonicalize_name(metadata["name"])] = metadata["version"]
    if pins.pop(PROJECT, None) is None:
        raise ValueError(f"the pip report does not install {PROJECT}: not this project's")
    return HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tljob-constraints-") as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run(resolve_command(report, Path(scratch) / "target"), check=True)
        text = constraints_text(json.loads(report.read_text()))
    CONSTRAINTS.write_text(text)
    print(f"wrote {CONSTRAINTS} ({text.count('==')} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
