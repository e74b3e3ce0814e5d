"""``tljob k8s render``: what a rendered RayJob holds, its flags, and what it refuses.

Static and offline: the manifests are checked against the KubeRay CRD schemas read from
``<repo>/../shared/kuberay-crds/`` or ``$TLJOB_KUBERAY_CRDS`` (``tests/kuberay_crds.py``;
skipped when that folder is absent), with every object closed so that a misspelt field fails
as the API server would fail it, against the operator's own rules, and, for the core
objects, with ``kubernetes-validate --strict``.
"""

from __future__ import annotations

import copy
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from kuberay_crds import CRD_DIR

from tljob.cli import main
from tljob.config import load_config
from tljob.config.sweep import load_sweep
from tljob.deploy.options import render_options
from tljob.deploy.render import ENTRYPOINTS, deletion_rules, render
from tljob.deploy.validate import (
    close_schema,
    crd_schema,
    credential_problems,
    operator_problems,
    pod_templates,
    rerun_problems,
    schema_errors,
)
from tljob.deploy.yaml_out import dump_documents, plain
from tljob.errors import UserError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "k8s" / "examples"
WAIT = "scaling.resource_wait_seconds=1200"  # what render writes into a config without one

CPU_JOB = """
data: {source: s3://bucket/flowers, image_size: 96}
model: {backbone: mobilenet_v2, weights: none}
scaling: {num_workers: 3, use_gpu: false, cpus_per_worker: 2, data_cpus: 6}
run: {name: Flowers_CPU.dev, storage_path: s3://bucket/runs}
"""


@pytest.fixture(scope="module")
def rayjob_schema() -> dict[str, Any]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found: {CRD_DIR} is absent, so no RayJob is checked")
    return crd_schema(CRD_DIR, "RayJob")


@pytest.fixture(scope="module")
def closed_validator(rayjob_schema: dict[str, Any]) -> Draft4Validator:
    return Draft4Validator(close_schema(rayjob_schema))


@pytest.fixture
def cpu_job(tmp_path: Path) -> Path:
    path = tmp_path / "cpu.yaml"
    path.write_text(CPU_JOB)
    return path


def rayjob_of(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (rayjob,) = [d for d in documents if d["kind"] == "RayJob"]
    return rayjob


def containers(rayjob: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (group, c)
        for group, template in pod_templates(rayjob)
        for c in template["spec"]["containers"]
    ]


def groups(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    return {g["groupName"]: g for g in specs}


def configmap_job(documents: list[dict[str, Any]], tmp_path: Path, file_name: str = "job.yaml"):
    (configmap,) = [d for d in documents if d["kind"] == "ConfigMap"]
    path = tmp_path / f"from-configmap-{file_name}"
    path.write_text(configmap["data"][file_name])
    return path


# --- every render validates --------------------------------------------------------------


def _cases(cpu_job: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    return {
        "cpu-only": (cpu_job, {}),
        "gpu": (EXAMPLES / "job.yaml", {"gpu_node_selector": {"pool": "a100"}}),
        "gpu-no-autoscaler": (EXAMPLES / "job.yaml", {"cpu_workers": 0}),
        "tune": (EXAMPLES / "sweep.yaml", {"tune": True, "resume": True}),
        "service-account": (
            EXAMPLES / "job.yaml",
            {"service_account": "tljob-s3", "role_arn": "arn:aws:iam::1:role/r"},
        ),
        "cluster-selector": (cpu_job, {"cluster_selector": "shared-ray"}),
        "k8s-job-submitter": (
            EXAMPLES / "job.yaml",
            {"submitter": "k8s-job", "head_cpus": "500m", "head_memory": "3Gi"},
        ),
        "parallel-sweep": (
            EXAMPLES / "sweep.yaml",
            {"tune": True, "overrides": ("tune.max_concurrent_trials=4",), "max_train_pods": 4},
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "cpu-only",
        "gpu",
        "gpu-no-autoscaler",
        "tune",
        "service-account",
        "cluster-selector",
        "k8s-job-submitter",
        "parallel-sweep",
    ],
)
def test_every_render_matches_the_crd_the_operator_and_keeps_keys_out(
    case: str, cpu_job: Path, closed_validator: Draft4Validator
) -> None:
    config, options = _cases(cpu_job)[case]
    documents = render(config, render_options(**options)).plain()
    rayjob = rayjob_of(documents)
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert schema_errors(closed_validator, rayjob) == []
    assert operator_problems(rayjob) == []
    assert rerun_problems(rayjob) == []
    for document in documents:
        assert credential_problems(document) == [], document["kind"]


def test_core_objects_pass_kubernetes_validate_strict(tmp_path: Path) -> None:
    import kubernetes_validate

    options = render_options(service_account="s3-reader", role_arn="arn:aws:iam::1:role/r")
    core = [d for d in render(EXAMPLES / "job.yaml", options).plain() if d["apiVersion"] == "v1"]
    assert sorted(d["kind"] for d in core) == ["ConfigMap", "ServiceAccount"]
    for document in core:
        kubernetes_validate.validate(document, "1.37", strict=True)
    misspelt = copy.deepcopy(core[0])
    misspelt["metadata"]["labelz"] = misspelt["metadata"].pop("labels")
    with pytest.raises(kubernetes_validate.ValidationError, match="labelz"):
        kubernetes_validate.validate(misspelt, "1.37", strict=True)


HEAD = ("spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0)
DATA_GROUP = ("spec", "rayClusterSpec", "workerGroupSpecs", 1)


@pytest.mark.parametrize(
    ("parent", "field", "misspelling"),
    [
        pytest.param(("spec",), "submissionMode", "submisionMode", id="spec"),
        pytest.param(HEAD, "volumeMounts", "volumeMount", id="head-container"),
        pytest.param(DATA_GROUP, "idleTimeoutSeconds", "idleTimeoutSecond", id="data-group"),
    ],
)
def test_closed_schema_rejects_a_misspelt_field(
    rayjob_schema: dict[str, Any],
    closed_validator: Draft4Validator,
    parent: tuple[str | int, ...],
    field: str,
    misspelling: str,
) -> None:
    misspelt = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())
    node = misspelt
    for step in parent:
        node = node[step]
    node[misspelling] = node.pop(field)
    errors = schema_errors(closed_validator, misspelt)
    assert any(f"'{misspelling}' was unexpected" in e for e in errors), errors
    # The published schema alone accepts the typo: closing it is what catches it.
    open_errors = schema_errors(Draft4Validator(rayjob_schema), misspelt)
    assert not any(misspelling in e for e in open_errors), open_errors


# --- credentials ---------------------------------------------------------------------------


def test_a_literal_secret_is_rejected_wherever_it_is() -> None:
    documents = render(EXAMPLES / "job.yaml", render_options()).plain()
    rayjob = rayjob_of(documents)
    leaked = copy.deepcopy(rayjob)
    env = groups(leaked)["train"]["template"]["spec"]["containers"][0]["env"]
    env[1] = {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG"}
    problems = credential_problems(leaked)
    assert "env AWS_SECRET_ACCESS_KEY has a literal value; use a secretKeyRef" in problems
    assert any("group train" in p and "AWS_SECRET_ACCESS_KEY" in p for p in problems)
    configmap = copy.deepcopy(documents[0])
    configmap["data"]["job.yaml"] += "s3: {secret_access_key: abc}\n"
    assert credential_problems(configmap) == [
        "ConfigMap key job.yaml holds credentials (s3.secret_access_key)"
    ]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tljob-s3"}}
    assert credential_problems(secret) != []


def test_s3_credentials_come_from_the_secret_or_from_a_service_account() -> None:
    with_secret = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())
    for group, container in containers(with_secret):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert refs == {
            key: {"name": "tljob-s3", "key": key}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        }, group
    options = render_options(service_account="s3-reader", role_arn="arn:aws:iam::1:role/r")
    documents = render(EXAMPLES / "job.yaml", options).plain()
    account = documents[0]
    assert account["kind"] == "ServiceAccount" and account["metadata"]["name"] == "s3-reader"
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"
    }
    with_account = rayjob_of(documents)
    for group, template in pod_templates(with_account):
        assert template["spec"]["serviceAccountName"] == "s3-reader", group
    assert all("env" not in c for _, c in containers(with_account))
    assert credential_problems(with_account) == []
    # Neither: the check notices.
    for _, template in pod_templates(with_account):
        del template["spec"]["serviceAccountName"]
    assert len(credential_problems(with_account)) == 3


# --- what the RayJob holds ------------------------------------------------------------------


def test_scaling_sizes_the_groups_and_flags_override_it_in_both_places(
    tmp_path: Path, cpu_job: Path
) -> None:
    plain = render(EXAMPLES / "job.yaml", render_options()).plain()
    train = groups(rayjob_of(plain))["train"]
    assert (train["replicas"], train["minReplicas"], train["maxReplicas"]) == (0, 0, 2)
    # data_cpus 4 on 4-CPU pods: one pod at most, from none.
    data = groups(rayjob_of(plain))["data"]
    assert (data["replicas"], data["minReplicas"], data["maxReplicas"]) == (0, 0, 1)

    options = render_options(
        workers=3, gpus_per_worker=2, cpu_workers=5, overrides=("train.batch_size=8",)
    )
    documents = render(EXAMPLES / "job.yaml", options).plain()
    train, data = groups(rayjob_of(documents)).values()
    assert (train["replicas"], train["minReplicas"], train["maxReplicas"]) == (0, 0, 3)
    resources = train["template"]["spec"]["containers"][0]["resources"]
    assert (
        resources["requests"]
        == resources["limits"]
        == {
            "cpu": "8",
            "memory": "32Gi",
            "nvidia.com/gpu": 2,
        }
    )
    assert data["maxReplicas"] == 5
    job = load_config(configmap_job(documents, tmp_path))
    assert (job.scaling.num_workers, job.scaling.use_gpu, job.scaling.gpus_per_worker) == (
        3,
        True,
        2,
    )
    assert job.train.batch_size == 8
    assert job == load_config(
        EXAMPLES / "job.yaml",
        [WAIT, "train.batch_size=8", "scaling.num_workers=3", "scaling.gpus_per_worker=2"],
    )

    cpu = render(cpu_job, render_options(gpus_per_worker=0)).plain()
    assert "nvidia.com/gpu" not in yaml.safe_dump(rayjob_of(cpu))
    assert groups(rayjob_of(cpu))["train"]["maxReplicas"] == 3
    assert groups(rayjob_of(cpu))["data"]["maxReplicas"] == 2  # data_cpus 6 / 4 per pod


def test_gpu_pods_tolerate_the_gpu_taint_and_take_the_node_flags() -> None:
    options = render_options(
        gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        gpu_tolerations=(
            {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoExecute"},
        ),
    )
    train = groups(rayjob_of(render(EXAMPLES / "job.yaml", options).plain()))["train"]
    spec = train["template"]["spec"]
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoExecute"},
    ]


def test_cleanup_deadlines_and_retries() -> None:
    spec = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())["spec"]
    assert spec["submissionMode"] == "SidecarMode"
    assert (spec["preRunningDeadlineSeconds"], spec["activeDeadlineSeconds"]) == (900, 86400)
    assert spec["backoffLimit"] == 2
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    rules = spec["deletionStrategy"]["deletionRules"]
    ends = [{"jobStatus": "SUCCEEDED"}, {"jobStatus": "FAILED"}, {"jobDeploymentStatus": "Failed"}]
    assert [(r["policy"], r["condition"]) for r in rules] == [
        *(("DeleteCluster", {**end, "ttlSeconds": 120}) for end in ends),
        *(("DeleteSelf", {**end, "ttlSeconds": 600}) for end in ends),
    ]
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["version"] == "v2"

    # No Ray Data group: the training group still autoscales, so no DeleteWorkers rule.
    options = render_options(cpu_workers=0, grace_seconds=30, keep_job_seconds=30)
    no_data = rayjob_of(render(EXAMPLES / "job.yaml", options).plain())
    rules = no_data["spec"]["deletionStrategy"]["deletionRules"]
    assert {r["policy"] for r in rules} == {"DeleteCluster", "DeleteSelf"}
    assert {r["condition"]["ttlSeconds"] for r in rules} == {30}
    assert no_data["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    assert list(groups(no_data)) == ["train"]
    assert operator_problems(no_data) == []
    # KubeRay refuses DeleteWorkers on an autoscaling cluster: the check knows it.
    workers = {"policy": "DeleteWorkers", "condition": {"jobStatus": "SUCCEEDED"}}
    no_data["spec"]["deletionStrategy"]["deletionRules"].insert(0, workers)
    assert operator_problems(no_data) == [
        "spec.deletionStrategy.deletionRules[0]: DeleteWorkers is not supported with "
        "autoscaling enabled"
    ]


def test_every_pod_is_restricted() -> None:
    rayjob = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())
    templates = list(pod_templates(rayjob))
    assert [group for group, _ in templates] == ["head", "train", "data"]
    for group, template in templates:
        security = template["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000, group
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, group
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    for group, container in containers(rayjob):
        assert container["securityContext"] == restricted, group
    assert rayjob["spec"]["rayClusterSpec"]["autoscalerOptions"]["securityContext"] == restricted


def test_entrypoint_runs_the_image_script_on_the_mounted_config(tmp_path: Path) -> None:
    documents = render(EXAMPLES / "job.yaml", render_options()).plain()
    rayjob = rayjob_of(documents)
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:4] == ["python", f"{ENTRYPOINTS}/train.py", "--config", "/etc/tljob/job.yaml"]
    assert argv[4:] == ["--lock-wait", "360"]  # a retry waits out the old lock: test_run_lock
    assert ENTRYPOINTS == "/home/ray/tljob/ray_jobs"
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["volumeMounts"][0]["mountPath"] == "/etc/tljob"
    assert head["volumes"][0]["configMap"]["name"] == documents[0]["metadata"]["name"]
    assert load_config(configmap_job(documents, tmp_path)) == load_config(
        EXAMPLES / "job.yaml", [WAIT]
    )

    sweep_docs = render(EXAMPLES / "sweep.yaml", render_options(tune=True, resume=True)).plain()
    sweep_job = rayjob_of(sweep_docs)
    assert shlex.split(sweep_job["spec"]["entrypoint"]) == [
        "python",
        f"{ENTRYPOINTS}/tune.py",
        "--config",
        "/etc/tljob/sweep.yaml",
        "--resume",
    ]
    assert sweep_job["metadata"]["name"] == "tljob-flowers-sweep"
    assert sweep_job["spec"]["backoffLimit"] == 0  # a rerun of a sweep needs --resume
    loaded = load_sweep(configmap_job(sweep_docs, tmp_path, "sweep.yaml"))
    assert loaded.search == load_sweep(EXAMPLES / "sweep.yaml").search


def test_cluster_selector_runs_on_an_existing_cluster(tmp_path: Path, cpu_job: Path) -> None:
    name = f"tljob-test-{tmp_path.name.lower().replace('_', '-')}"[:47].rstrip("-")
    (rayjob,) = render(
        cpu_job, render_options(cluster_selector="shared-ray", name=name, workers=4)
    ).plain()
    spec = rayjob["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": "shared-ray"}
    assert "rayClusterSpec" not in spec and "deletionStrategy" not in spec
    assert (spec["submissionMode"], spec["backoffLimit"]) == ("HTTPMode", 0)
    # The entrypoint writes the job config on the head, then runs it: run the writing part.
    write, _, run = spec["entrypoint"].rpartition(" && ")
    written = Path(f"/tmp/tljob/{name}/job.yaml")
    try:
        subprocess.run(["sh", "-c", write], check=True, timeout=30)
        assert shlex.split(run) == ["python", f"{ENTRYPOINTS}/train.py", "--config", str(written)]
        assert load_config(written) == load_config(cpu_job, ["scaling.num_workers=4"])
    finally:
        written.unlink(missing_ok=True)
        written.parent.rmdir()
    with pytest.raises(
        UserError, match="--cluster-selector runs on an existing RayCluster, so --image"
    ):
        render(cpu_job, render_options(cluster_selector="shared-ray", image="x"))


def test_the_cli_prints_what_render_returns(
    capsys: pytest.CaptureFixture[str], cpu_job: Path
) -> None:
    assert main(["k8s", "render", "--config", str(cpu_job), "--namespace", "ml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# tljob k8s render --config {cpu_job} | kubectl apply -f -\n")
    expected = render(cpu_job, render_options(namespace="ml")).plain()
    assert [d for d in yaml.safe_load_all(out) if d] == expected
    assert {d["metadata"]["namespace"] for d in expected} == {"ml"}
    assert expected[1]["metadata"]["name"] == "tljob-flowers-cpu-dev"  # from run.name
    # A comment above each field whose reason is not obvious.
    for field in (
        "submissionMode",
        "backoffLimit",
        "preRunningDeadlineSeconds",
        "activeDeadlineSeconds",
        "deletionStrategy",
        "enableInTreeAutoscaling",
        "entrypoint",
    ):
        lines = out.splitlines()
        (i,) = [i for i, line in enumerate(lines) if line.strip().startswith(f"{field}:")]
        assert lines[i - 1].strip().startswith("# "), field


# --- rerunning a finished job -----------------------------------------------------------------


def test_a_finished_rayjob_deletes_itself_so_the_same_apply_runs_it_again() -> None:
    rayjob = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())
    assert rerun_problems(rayjob) == []
    rules = rayjob["spec"]["deletionStrategy"]["deletionRules"]
    deleting_self = [r["condition"] for r in rules if r["policy"] == "DeleteSelf"]
    assert deleting_self == [
        {"jobStatus": "SUCCEEDED", "ttlSeconds": 600},
        {"jobStatus": "FAILED", "ttlSeconds": 600},
        {"jobDeploymentStatus": "Failed", "ttlSeconds": 600},
    ]
    # The rules before this change (the cluster goes, the RayJob stays): no rerun.
    rayjob["spec"]["deletionStrategy"]["deletionRules"] = [
        r for r in rules if r["policy"] != "DeleteSelf"
    ]
    assert operator_problems(rayjob) == []  # KubeRay accepts it, and never reruns it
    assert rerun_problems(rayjob) == [
        f"no DeleteSelf rule for {status}: the finished RayJob would stay, and applying the "
        "same manifest again would not run it"
        for status in (
            "jobStatus 'SUCCEEDED'",
            "jobStatus 'FAILED'",
            "jobDeploymentStatus 'Failed'",
        )
    ]
    # --keep-job-seconds below --grace-seconds is what KubeRay refuses: render refuses it
    # (tests/test_k8s_tree.py), and the ported rule names each condition.
    rayjob["spec"]["deletionStrategy"] = plain(deletion_rules(True, 120, 60))
    assert operator_problems(rayjob) == [
        f"deletion rules for {status}: DeleteSelf TTL (60) must be >= DeleteCluster TTL (120)"
        for status in (
            "jobStatus 'SUCCEEDED'",
            "jobStatus 'FAILED'",
            "jobDeploymentStatus 'Failed'",
        )
    ]
    options = render_options(grace_seconds=300, keep_job_seconds=300)
    rules = rayjob_of(render(EXAMPLES / "job.yaml", options).plain())["spec"]["deletionStrategy"]
    assert {r["condition"]["ttlSeconds"] for r in rules["deletionRules"]} == {300}


# --- the training group: from 0, sized for the trials at once -----------------------------


def test_the_training_group_grows_from_zero_for_a_run_and_for_parallel_trials() -> None:
    run = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())
    train = groups(run)["train"]
    assert (train["replicas"], train["minReplicas"], train["maxReplicas"]) == (0, 0, 2)
    assert "idleTimeoutSeconds" not in train  # the autoscaler's own timeout is the GPUs'
    autoscaler = run["spec"]["rayClusterSpec"]["autoscalerOptions"]
    assert (autoscaler["version"], autoscaler["idleTimeoutSeconds"]) == ("v2", 30)
    assert groups(run)["data"]["idleTimeoutSeconds"] == 60
    resources = train["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1}

    # 4 trials at once of 1 worker (1 GPU, 2 data CPUs each): 4 GPU pods, 8 data CPUs.
    four = ("tune.max_concurrent_trials=4",)
    sweep = rayjob_of(
        render(EXAMPLES / "sweep.yaml", render_options(tune=True, overrides=four)).plain()
    )
    train, data = groups(sweep)["train"], groups(sweep)["data"]
    assert (train["replicas"], train["minReplicas"], train["maxReplicas"]) == (0, 0, 4)
    assert data["maxReplicas"] == 2  # 4 x 2 CPUs on 4-CPU pods
    gpus = train["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == 1
    options = render_options(
        tune=True, overrides=four, workers=2, gpus_per_worker=2, train_idle_seconds=5
    )
    sweep = rayjob_of(render(EXAMPLES / "sweep.yaml", options).plain())
    assert groups(sweep)["train"]["maxReplicas"] == 8
    limits = groups(sweep)["train"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2
    assert sweep["spec"]["rayClusterSpec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 5
    # Without tune.max_concurrent_trials: one trial's pods.
    one = rayjob_of(render(EXAMPLES / "sweep.yaml", render_options(tune=True)).plain())
    assert groups(one)["train"]["maxReplicas"] == 1
    # A cap that the trials at once exceed: refused with the numbers.
    with pytest.raises(UserError) as refused:
        render(EXAMPLES / "sweep.yaml", options.model_copy(update={"max_train_pods": 6}))
    assert (
        "--max-train-pods (6): the training group needs 8 pods (`scaling.num_workers` (2) x "
        "`tune.max_concurrent_trials` (4)), one per worker; lower `tune.max_concurrent_trials` "
        "or `scaling.num_workers`, or raise the cap"
    ) in str(refused.value)
    render(EXAMPLES / "sweep.yaml", options.model_copy(update={"max_train_pods": 8}))


def parallel_sweep_groups() -> str:
    """The worker groups (without their pod templates) of the 4-trial sweep that
    docs/pages/kubernetes.md shows, as render writes them."""
    options = render_options(tune=True, overrides=("tune.max_concurrent_trials=4",))
    rayjob = render(EXAMPLES / "sweep.yaml", options).documents[-1]
    specs = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    shown = {"workerGroupSpecs": [{k: v for k, v in g.items() if k != "template"} for g in specs]}
    return dump_documents([shown]).removeprefix("---\n")


def test_the_docs_show_the_parallel_sweep_as_render_writes_it() -> None:
    page = (REPO / "docs" / "pages" / "kubernetes.md").read_text()
    command = (
        "tljob k8s render --tune --config k8s/examples/sweep.yaml "
        "--set tune.max_concurrent_trials=4"
    )
    assert command in page
    assert f"```yaml\n{parallel_sweep_groups()}```" in page, parallel_sweep_groups()
    # ... and what a cap of 3 pods says about it.
    options = render_options(tune=True, overrides=("tune.max_concurrent_trials=4",))
    with pytest.raises(UserError) as refused:
        render(EXAMPLES / "sweep.yaml", options.model_copy(update={"max_train_pods": 3}))
    assert f"```text\ntljob: error: {refused.value}\n```" in page, refused.value


# --- the head and the submitter -----------------------------------------------------------


def test_head_size_and_submitter_are_flags(closed_validator: Draft4Validator) -> None:
    sidecar = rayjob_of(render(EXAMPLES / "job.yaml", render_options()).plain())
    head = sidecar["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert sidecar["spec"]["submissionMode"] == "SidecarMode"
    assert "submitterPodTemplate" not in sidecar["spec"]

    options = render_options(submitter="k8s-job", head_cpus="500m", head_memory="3Gi")
    job_mode = rayjob_of(render(EXAMPLES / "job.yaml", options).plain())
    spec = job_mode["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert (
        head["resources"]["requests"]
        == head["resources"]["limits"]
        == {
            "cpu": "500m",
            "memory": "3Gi",
        }
    )
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["submitterConfig"] == {"backoffLimit": 2}
    pod = spec["submitterPodTemplate"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (submitter,) = pod["containers"]
    assert submitter["image"] == head["image"] == "ghcr.io/example/tljob:0.1.0"
    assert submitter["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "command" not in submitter  # KubeRay writes its `ray job submit` there
    assert "env" not in submitter  # no S3 keys: it only submits
    assert schema_errors(closed_validator, job_mode) == []
    assert operator_problems(job_mode) == []
    # KubeRay refuses a submitter template in SidecarMode: the check knows it.
    spec["submissionMode"] = "SidecarMode"
    assert operator_problems(job_mode) == [
        "spec.submitterPodTemplate: not supported in SidecarMode",
        "spec.submitterConfig: not supported in SidecarMode",
    ]


def test_the_submitter_and_head_flags_reach_render_from_the_cli(
    capsys: pytest.CaptureFixture[str], cpu_job: Path
) -> None:
    argv = ["k8s", "render", "--config", str(cpu_job), "--submitter", "k8s-job"]
    assert main([*argv, "--head-cpus", "1", "--head-memory", "4Gi"]) == 0
    (_, rayjob) = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert rayjob["spec"]["submissionMode"] == "K8sJobMode"
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "4Gi"}
    with pytest.raises(SystemExit) as bad:
        main(["k8s", "render", "--config", str(cpu_job), "--submitter", "http"])
    assert bad.value.code == 2
    assert "--submitter: invalid choice: 'http'" in capsys.readouterr().err


# --- the driver's wait for its workers --------------------------------------------------------


def test_a_minimal_config_renders_with_the_wait_its_workers_need(tmp_path: Path) -> None:
    config = tmp_path / "minimal.yaml"
    config.write_text("data: {source: s3://tljob-data/flowers}\n")
    documents = render(config, render_options()).plain()
    written = load_config(configmap_job(documents, tmp_path))
    assert written.scaling.resource_wait_seconds == 1200
    assert written == load_config(config, [WAIT])
    longer = render(config, render_options(resource_wait_seconds=1800)).plain()
    assert load_config(configmap_job(longer, tmp_path)).scaling.resource_wait_seconds == 1800
    # A value given (in the file or with --set) is kept when it is long enough ...
    kept = render(config, render_options(overrides=("scaling.resource_wait_seconds=2400",)))
    assert "resource_wait_seconds: 2400" in kept.plain()[0]["data"]["job.yaml"]
    config.write_text(
        "data: {source: s3://tljob-data/flowers}\nscaling: {resource_wait_seconds: 600}\n"
    )
    lowered = render(config, render_options(resource_wait_seconds=600)).plain()
    assert load_config(configmap_job(lowered, tmp_path)).scaling.resource_wait_seconds == 600
    # ... and refused, with the numbers, when it is not.
    with pytest.raises(
        UserError,
        match=r"`scaling.resource_wait_seconds` \(600\) is shorter "
        r"than the 1200 s the driver waits for its worker pods on KubeRay",
    ):
        render(config, render_options())
    # On an existing cluster nothing is written: its workers may be up already.
    (selector,) = render(config, render_options(cluster_selector="shared-ray")).plain()
    assert "resource_wait_seconds: 600" in selector["spec"]["entrypoint"]
