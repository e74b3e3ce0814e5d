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
from k8s_manifests import (
    EXAMPLES,
    WAIT,
    configmap_job,
    containers,
    groups,
    rayjob_of,
)

from tljob.cli import main
from tljob.config import load_config
from tljob.config.sweep import load_sweep
from tljob.deploy.options import render_options
from tljob.deploy.render import ENTRYPOINTS, render
from tljob.deploy.validate import (
    credential_problems,
    operator_problems,
    pod_templates,
    rerun_problems,
    schema_errors,
)
from tljob.errors import UserError

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
