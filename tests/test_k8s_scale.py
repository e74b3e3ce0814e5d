"""``tljob k8s render`` at scale: a finished RayJob deletes itself so that the same manifest
applied again reruns it (checked against KubeRay's own deletion rules, ported in
``tljob.deploy.validate``), the training group grows from 0 and is sized for a sweep's trials
at once, the head's size and the submitter are flags, and a config without
``scaling.resource_wait_seconds`` gets the wait its worker pods need. Static and offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from k8s_manifests import (
    EXAMPLES,
    REPO,
    WAIT,
    configmap_job,
    groups,
    rayjob_of,
)

from tljob.cli import main
from tljob.config import load_config
from tljob.deploy.options import render_options
from tljob.deploy.predict import PredictCommand, render_predict
from tljob.deploy.render import deletion_rules, render
from tljob.deploy.validate import operator_problems, rerun_problems, schema_errors
from tljob.deploy.yaml_out import dump_documents, plain
from tljob.errors import UserError

# --- KubeRay's deletion rules, as ported ------------------------------------------------------


def _rule(policy: str, ttl: int, key: str = "jobStatus", value: str = "SUCCEEDED") -> dict:
    return {"policy": policy, "condition": {key: value, "ttlSeconds": ttl}}


def _misordered(first: str, ttl: int, then: str, then_ttl: int, key: str, value: str) -> Any:
    """A case of KubeRay's order rule: ``then`` due before ``first`` for one condition."""
    return pytest.param(
        [_rule(then, then_ttl, key, value), _rule(first, ttl, key, value)],
        [f"deletion rules for {key} {value!r}: {then} TTL ({then_ttl}) must be >= {first} TTL "
         f"({ttl})"],
        id=f"{first}-after-{then}",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "problems"),
    [
        pytest.param(
            [_rule("DeleteWorkers", 20), _rule("DeleteCluster", 10)],
            ["deletion rules for jobStatus 'SUCCEEDED': DeleteCluster TTL (10) must be >= "
             "DeleteWorkers TTL (20)"],
            id="workers-after-cluster",
        ),
        _misordered("DeleteCluster", 120, "DeleteSelf", 60, "jobDeploymentStatus", "Failed"),
        # No DeleteCluster between them: Self is compared with Workers.
        _misordered("DeleteWorkers", 30, "DeleteSelf", 10, "jobStatus", "FAILED"),
        pytest.param(
            # Each condition on its own: a late DeleteCluster on FAILED is no conflict.
            [_rule("DeleteWorkers", 0), _rule("DeleteCluster", 300, value="FAILED"),
             _rule("DeleteSelf", 5)],
            [],
            id="per-condition",
        ),
        pytest.param(
            [_rule("DeleteSelf", 5), _rule("DeleteSelf", 9)],
            ["spec.deletionStrategy.deletionRules[1]: a second DeleteSelf rule for jobStatus "
             "'SUCCEEDED'"],
            id="duplicate",
        ),
        pytest.param(
            [{"policy": "DeleteSelf", "condition": {"ttlSeconds": 5}},
             {"policy": "DeleteSelf",
              "condition": {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed"}},
             _rule("DeleteCluster", -1)],
            ["spec.deletionStrategy.deletionRules[0]: exactly one of jobStatus and "
             "jobDeploymentStatus",
             "spec.deletionStrategy.deletionRules[1]: exactly one of jobStatus and "
             "jobDeploymentStatus",
             "spec.deletionStrategy.deletionRules[2]: ttlSeconds (-1) must be >= 0"],
            id="conditions",
        ),
        pytest.param(
            [],
            ["spec.deletionStrategy: needs deletionRules, or both onSuccess and onFailure"],
            id="empty",
        ),
    ],
)  # fmt: skip
def test_deletion_ttls_grow_from_workers_to_cluster_to_self_per_condition(
    rules: list[dict[str, Any]], problems: list[str]
) -> None:
    # KubeRay's validateDeletionRules (v1.7.0), on rules of a fixed cluster (DeleteWorkers is
    # allowed there); a render's own rules always pass.
    rayjob = render_predict_rayjob()
    assert operator_problems(rayjob) == []
    rayjob["spec"]["deletionStrategy"]["deletionRules"] = rules
    assert operator_problems(rayjob) == problems


def render_predict_rayjob() -> dict[str, Any]:
    command = PredictCommand(
        words=(), model="s3://tljob-runs/m", source="s3://tljob-data/s", out="s3://tljob-data/o"
    )
    (rayjob,) = render_predict(command, render_options()).plain()
    return rayjob


def test_deletion_rules_and_the_other_deletion_fields_are_exclusive() -> None:
    rayjob = render_predict_rayjob()
    spec = rayjob["spec"]
    spec["deletionStrategy"]["onSuccess"] = {"policy": "DeleteCluster"}
    spec["ttlSecondsAfterFinished"] = 30
    assert operator_problems(rayjob) == [
        "spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes",
        "spec.deletionStrategy: deletionRules and onSuccess/onFailure are exclusive",
    ]


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
