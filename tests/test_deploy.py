"""Static checks of the KubeRay manifests in k8s/ (the image: tests/test_image.py).

Fast and offline: nothing here builds an image or talks to a cluster. The RayJob is checked
against the schema of the KubeRay CRD, read from ``<repo>/../shared/kuberay-crds/``; the tests
that need it skip when that folder is absent.
"""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator

from tljob.config import load_config

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
K8S_DIR = REPO / "k8s"
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"

S3_SECRET = "tljob-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CREDENTIAL_ENV_NAMES = (*S3_SECRET_KEYS, "AWS_SESSION_TOKEN")

Manifest = dict[str, Any]


# --- reading the manifests -------------------------------------------------------------------


def manifests() -> list[tuple[str, Manifest]]:
    """Every non-empty YAML document of k8s/*.yaml, as (file name, document), in file order."""
    return [
        (path.name, doc)
        for path in sorted(K8S_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def documents(kind: str) -> list[Manifest]:
    """The documents in k8s/ of the given ``kind``."""
    return [doc for _, doc in manifests() if doc.get("kind") == kind]


def the_rayjob() -> Manifest:
    """The RayJob of k8s/; fails unless there is exactly one."""
    rayjobs = documents("RayJob")
    assert len(rayjobs) == 1, f"expected exactly one RayJob in k8s/*.yaml, found {len(rayjobs)}"
    return rayjobs[0]


def ray_containers(rayjob: Manifest) -> Iterator[tuple[str, Manifest]]:
    """(group, container) for each container of the head group and of every worker group."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(group["groupName"], group) for group in cluster.get("workerGroupSpecs", [])]
    for name, group in groups:
        for container in group["template"]["spec"]["containers"]:
            yield name, container


def entrypoint_argv(rayjob: Manifest) -> list[str]:
    """The RayJob's entrypoint command, split as the shell would."""
    return shlex.split(rayjob["spec"]["entrypoint"])


def configmap_file(rayjob: Manifest, path: str) -> str:
    """Text of ``path`` as the head's Ray container sees it: through a ConfigMap volume mounted
    on the file's directory, whose ConfigMap is one of the documents in k8s/."""
    pod = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    directory, file_name = posixpath.split(path)
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
    assert directory in mounts, f"the head container mounts nothing at {directory}"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmap_name = volumes[mounts[directory]]["configMap"]["name"]
    configmaps = {c["metadata"]["name"]: c for c in documents("ConfigMap")}
    assert configmap_name in configmaps, f"ConfigMap {configmap_name!r} is not in k8s/"
    return configmaps[configmap_name]["data"][file_name]


# --- the CRD schema, closed --------------------------------------------------------------------

_SUBSCHEMA_KEYWORDS = ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")


def close_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which every object that lists ``properties`` rejects
    any other key, unless it says what extra keys may hold (``additionalProperties``) or is
    marked ``x-kubernetes-preserve-unknown-fields``.

    That is what strict field validation (``kubectl apply``'s default) does with a custom
    resource; a plain JSON-schema check of the published schema lets a misspelt field through.
    """
    if isinstance(schema, list):
        return [close_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema  # a boolean schema
    closed = dict(schema)
    if "properties" in schema:
        closed["properties"] = {k: close_schema(s) for k, s in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            closed["additionalProperties"] = False
    for keyword in _SUBSCHEMA_KEYWORDS:
        if keyword in schema:
            closed[keyword] = close_schema(schema[keyword])
    return closed


@pytest.fixture(scope="module")
def rayjob_crd() -> Manifest:
    """The shared KubeRay RayJob CRD; skips when the shared folder is absent."""
    if not CRD_DIR.is_dir():
        pytest.skip(
            f"KubeRay CRDs not found: {CRD_DIR} is absent, so the RayJob cannot be checked "
            "against the ray.io/v1 schema"
        )
    # 1.4 MB of YAML: libyaml's safe loader reads it in a fraction of the pure-Python time.
    safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((CRD_DIR / "ray.io_rayjobs.yaml").read_text(), Loader=safe_loader)


@pytest.fixture(scope="module")
def rayjob_schema(rayjob_crd: Manifest) -> Manifest:
    """The published (open) OpenAPI v3 schema of RayJob version v1."""
    (v1,) = [v for v in rayjob_crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def closed_validator(rayjob_schema: Manifest) -> Draft4Validator:
    """Validator for the v1 RayJob schema with unknown fields rejected (``close_schema``)."""
    return Draft4Validator(close_schema(rayjob_schema))


def schema_errors(validator: Draft4Validator, doc: Manifest) -> list[str]:
    """Every violation as ``<field path>: <message>``; empty when ``doc`` is valid."""
    return sorted(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    )


def with_renamed_field(
    doc: Manifest, parent: tuple[str | int, ...], old: str, new: str
) -> Manifest:
    """A deep copy of ``doc`` whose mapping at path ``parent`` has key ``old`` renamed ``new``."""
    renamed = copy.deepcopy(doc)
    node = renamed
    for step in parent:
        node = node[step]
    node[new] = node.pop(old)
    return renamed


# --- the image the RayJob runs -----------------------------------------------------------------


def test_rayjob_runs_the_dockerfiles_ray_version_on_every_node() -> None:
    # The Dockerfile itself (its Ray against pyproject and the constraints) is checked in
    # tests/test_image.py; here, that the RayJob declares the image's Ray.
    base = re.search(r"^FROM\s+rayproject/ray:(\d+\.\d+\.\d+)-\S+", DOCKERFILE.read_text(), re.M)
    assert base, "the Dockerfile must start from a pinned rayproject/ray:<x.y.z>-... image"
    rayjob = the_rayjob()
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == base.group(1)
    images = {container["image"] for _, container in ray_containers(rayjob)}
    assert len(images) == 1, f"head and workers must run the same image, got {sorted(images)}"


# --- RayJob against the CRD schema -------------------------------------------------------------


def test_rayjob_manifests_match_the_kuberay_crd(
    rayjob_crd: Manifest, closed_validator: Draft4Validator
) -> None:
    api_version = f"{rayjob_crd['spec']['group']}/v1"
    rayjobs = [(name, doc) for name, doc in manifests() if doc.get("kind") == "RayJob"]
    assert rayjobs, "no RayJob in k8s/*.yaml"
    for file_name, doc in rayjobs:
        assert doc["apiVersion"] == api_version, file_name
        errors = schema_errors(closed_validator, doc)
        assert not errors, f"{file_name} does not match the RayJob CRD:\n" + "\n".join(errors)


HEAD_CONTAINER = ("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0)


@pytest.mark.parametrize(
    ("parent", "field", "misspelling"),
    [
        pytest.param(("spec",), "shutdownAfterJobFinishes", "shutdownAfterJobFinishs", id="spec"),
        pytest.param(HEAD_CONTAINER, "volumeMounts", "volumeMount", id="head-template"),
    ],
)
def test_closed_schema_rejects_a_misspelt_field(
    rayjob_schema: Manifest,
    closed_validator: Draft4Validator,
    parent: tuple[str | int, ...],
    field: str,
    misspelling: str,
) -> None:
    misspelt = with_renamed_field(the_rayjob(), parent, field, misspelling)
    errors = schema_errors(closed_validator, misspelt)
    assert any(f"'{misspelling}' was unexpected" in e for e in errors), errors
    # The published schema alone accepts the typo: closing it is what catches it.
    open_errors = schema_errors(Draft4Validator(rayjob_schema), misspelt)
    assert not any(misspelling in e for e in open_errors), open_errors


# --- job config, credentials, entrypoint -------------------------------------------------------


def test_mounted_job_config_is_valid_and_trains_on_gpus(tmp_path: Path) -> None:
    rayjob = the_rayjob()
    argv = entrypoint_argv(rayjob)
    assert "--config" in argv, argv
    config_file = tmp_path / "job.yaml"
    config_file.write_text(configmap_file(rayjob, argv[argv.index("--config") + 1]))

    job = load_config(config_file)

    assert job.scaling.use_gpu is True
    cluster_gpus = sum(
        group["replicas"] * float(container["resources"]["limits"].get("nvidia.com/gpu", 0))
        for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        for container in group["template"]["spec"]["containers"]
    )
    wanted = job.scaling.num_workers * job.scaling.gpus_per_worker
    assert wanted <= cluster_gpus, f"{wanted} GPUs for training, the workers have {cluster_gpus}"


def test_mounted_job_config_paths_are_usable_by_storage(tmp_path: Path) -> None:
    from pyarrow.fs import S3FileSystem

    from tljob import storage

    argv = entrypoint_argv(the_rayjob())
    config_file = tmp_path / "job.yaml"
    text = configmap_file(the_rayjob(), argv[argv.index("--config") + 1])
    config_file.write_text(text)
    job = load_config(config_file)
    # The store is described in the config, and nothing secret is (the loader refuses
    # credential keys; the Secret gives them to the pods).
    settings = storage.S3Settings.from_config(job.s3, environ={})
    assert settings == storage.S3Settings(region="us-east-1")
    assert not re.search(r"(?im)^\s*\w*(secret|access_key|token)\w*\s*:", text)
    storage.configure(settings)
    try:
        source = storage.resolve(job.data.source)
        runs = storage.resolve(job.run.storage_path)
    finally:
        storage.configure(None)
    assert isinstance(source.fs, S3FileSystem) and isinstance(runs.fs, S3FileSystem)
    assert (source.bucket, source.key) == ("example-bucket", "datasets/flowers")
    assert (runs.bucket, runs.key) == ("example-bucket", "tljob-runs")
    assert runs.join(job.run.name).uri == "s3://example-bucket/tljob-runs/flowers-resnet50"


def env_entries(node: Any) -> Iterator[Manifest]:
    """Every entry of every ``env`` list anywhere below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from env_entries(item)


def test_manifests_hold_no_literal_credentials() -> None:
    for file_name, doc in manifests():
        assert doc.get("kind") != "Secret", f"{file_name}: create Secrets out of band, not in git"
        for entry in env_entries(doc):
            if entry.get("name") in CREDENTIAL_ENV_NAMES:
                assert "value" not in entry, f"{file_name}: {entry['name']} has a literal value"
        if doc.get("kind") == "ConfigMap":
            for key, text in doc.get("data", {}).items():
                leaked = [name for name in CREDENTIAL_ENV_NAMES if name in text]
                assert not leaked, f"{file_name}: ConfigMap key {key} mentions {leaked}"


def env_from_s3_secret(container: Manifest) -> set[str]:
    """Names of the container's variables that Kubernetes fills from Secret ``tljob-s3``:
    ``secretKeyRef`` entries naming the key of the same name, and all keys via ``envFrom``."""
    names = set()
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") == S3_SECRET and ref.get("key") == entry["name"]:
            names.add(entry["name"])
    for source in container.get("envFrom", []):
        if source.get("secretRef", {}).get("name") == S3_SECRET and not source.get("prefix"):
            names.update(S3_SECRET_KEYS)
    return names


def test_every_ray_container_gets_s3_credentials_from_the_secret() -> None:
    for group, container in ray_containers(the_rayjob()):
        missing = set(S3_SECRET_KEYS) - env_from_s3_secret(container)
        assert not missing, f"group {group}: {sorted(missing)} not taken from Secret {S3_SECRET}"


def test_entrypoint_runs_the_train_script_shipped_in_the_image() -> None:
    argv = entrypoint_argv(the_rayjob())
    assert argv[:2] == ["python", "ray_jobs/train.py"], argv
    assert (REPO / argv[1]).is_file()
    assert re.search(r"^COPY\s.*\bray_jobs/", DOCKERFILE.read_text(), re.M), (
        "the Dockerfile must copy ray_jobs/ into the image"
    )
