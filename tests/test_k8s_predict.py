"""``tljob k8s render --predict``: a RayJob that runs ``ray_jobs/predict.py`` with the predict
command's flags, checked at render time by that command's own parser and rules.

Static and offline, as ``test_k8s_render.py``: the RayJob is checked against the KubeRay CRD
schema read from ``<repo>/../shared/kuberay-crds/`` or ``$TLJOB_KUBERAY_CRDS``
(``tests/kuberay_crds.py``; skipped when that folder is absent), closed so that a misspelt
field fails, and against the operator's own rules.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from k8s_predict_cli import FLAGS, SCRIPT, refusal, rendered
from kuberay_crds import CRD_DIR

from tljob.cli import build_parser, main
from tljob.deploy.validate import (
    crd_validator,
    credential_problems,
    operator_problems,
    pod_templates,
    schema_errors,
)

REPO = Path(__file__).resolve().parents[1]
SECRET_REFS = {
    key: {"name": "tljob-s3", "key": key} for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
}


@pytest.fixture(scope="module")
def validator() -> Draft4Validator:
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found: {CRD_DIR} is absent, so no RayJob is checked")
    return crd_validator(CRD_DIR, "RayJob")


def groups(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}


# --- what runs ---------------------------------------------------------------------------


def test_the_entrypoint_is_predict_py_with_exactly_the_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra = ["--format", "csv", "--top-k", "3", "--batch-size", "64", "--part-size", "5000",
             "--min-confidence", "0.95", "--as-manifest", "s3://tljob-data/pseudo.csv",
             "--set", "s3.endpoint_url=https://minio.example.com:9000"]  # fmt: skip
    out, documents = rendered(capsys, [], [*FLAGS, *extra])
    (rayjob,) = documents  # no ConfigMap: the flags are the whole job
    assert rayjob["kind"] == "RayJob" and rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["spec"]["entrypoint"] == (
        "python /home/ray/tljob/ray_jobs/predict.py "
        "--model s3://tljob-runs/flowers-resnet50 --source s3://tljob-data/new-images/ "
        "--out s3://tljob-data/predictions/flowers-2026 --format csv --top-k 3 "
        "--batch-size 64 --part-size 5000 --min-confidence 0.95 "
        "--as-manifest s3://tljob-data/pseudo.csv "
        "--set s3.endpoint_url=https://minio.example.com:9000"
    )
    # ray_jobs/predict.py hands its arguments to `tljob predict`: they parse as given.
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["python", SCRIPT] and (REPO / "ray_jobs" / "predict.py").is_file()
    args = build_parser().parse_args(["predict", *argv[2:]])
    assert (args.format, args.top_k, args.batch_size, args.part_size) == ("csv", 3, 64, 5000)
    assert (args.min_confidence, args.overrides) == (
        0.95,
        ["s3.endpoint_url=https://minio.example.com:9000"],
    )
    assert rayjob["metadata"]["name"] == "tljob-predict-flowers-2026"  # --out's last folder
    assert out.startswith(
        f"# tljob k8s render --predict -- {shlex.join([*FLAGS, *extra])} | kubectl apply -f -\n"
        "# S3 keys, once per namespace: kubectl create secret generic tljob-s3 "
    )


def test_a_word_that_needs_quoting_stays_one_word(capsys: pytest.CaptureFixture[str]) -> None:
    flags = [*FLAGS[:2], "--source", "s3://tljob-data/new images/it's here/", *FLAGS[4:]]
    _, (rayjob,) = rendered(capsys, [], flags)
    assert shlex.split(rayjob["spec"]["entrypoint"]) == ["python", SCRIPT, *flags]


def test_cpu_pods_by_default_the_operator_submits_once_all_are_up(
    capsys: pytest.CaptureFixture[str], validator: Draft4Validator
) -> None:
    _, (rayjob,) = rendered(capsys, ["--namespace", "ml"], FLAGS)
    spec = rayjob["spec"]
    # SidecarMode would start the driver beside a lone head (0 CPUs): predict, which sizes
    # its actor pool from the cluster it finds, would find no CPU for a model actor.
    assert spec["submissionMode"] == "HTTPMode"
    assert spec["backoffLimit"] == 2  # a rerun writes only the parts still missing
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in cluster
    (predict,) = groups(rayjob).values()
    assert (predict["groupName"], predict["replicas"]) == ("predict", 1)
    assert (predict["minReplicas"], predict["maxReplicas"]) == (1, 1)
    pod = predict["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "8", "memory": "32Gi"}
    assert "tolerations" not in pod and "nodeSelector" not in pod
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0"}
    assert "volumes" not in head["template"]["spec"]  # nothing to mount: no config
    rules = [(r["policy"], r["condition"]) for r in spec["deletionStrategy"]["deletionRules"]]
    assert rules[0] == ("DeleteWorkers", {"jobStatus": "SUCCEEDED", "ttlSeconds": 0})
    assert rayjob["metadata"]["namespace"] == "ml"
    assert schema_errors(validator, rayjob) == []
    assert operator_problems(rayjob) == []


def test_gpu_pods_take_the_train_renders_gpu_options(
    capsys: pytest.CaptureFixture[str], validator: Draft4Validator
) -> None:
    render_flags = ["--workers", "3", "--gpus-per-worker", "2", "--worker-cpus", "12",
                    "--worker-memory", "48Gi", "--gpu-node-selector", "pool=l4",
                    "--gpu-toleration", "team=vision:NoExecute", "--grace-seconds", "30",
                    "--image", "registry.example.com/tljob:0.2.0"]  # fmt: skip
    _, (rayjob,) = rendered(capsys, render_flags, [*FLAGS, "--actors", "6"])
    (predict,) = groups(rayjob).values()
    assert (predict["replicas"], predict["minReplicas"], predict["maxReplicas"]) == (3, 3, 3)
    pod = predict["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "12", "memory": "48Gi", "nvidia.com/gpu": 2}
    assert pod["nodeSelector"] == {"pool": "l4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "vision", "effect": "NoExecute"},
    ]
    images = {c["image"] for _, t in pod_templates(rayjob) for c in t["spec"]["containers"]}
    assert images == {"registry.example.com/tljob:0.2.0"}
    rules = rayjob["spec"]["deletionStrategy"]["deletionRules"]
    ttls = {(r["policy"], r["condition"]["ttlSeconds"]) for r in rules[1:]}
    assert ttls == {("DeleteCluster", 30), ("DeleteSelf", 600)}
    assert schema_errors(validator, rayjob) == []
    assert operator_problems(rayjob) == []


def test_s3_keys_come_only_from_the_secret_or_a_service_account(
    capsys: pytest.CaptureFixture[str], validator: Draft4Validator
) -> None:
    _, (rayjob,) = rendered(capsys, ["--gpus-per-worker", "1"], FLAGS)
    containers = [(g, c) for g, t in pod_templates(rayjob) for c in t["spec"]["containers"]]
    assert [g for g, _ in containers] == ["head", "predict"]
    for group, container in containers:
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        assert refs == SECRET_REFS, group
        assert all(set(e) == {"name", "valueFrom"} for e in container["env"]), group
    assert credential_problems(rayjob) == []

    account = ["--service-account", "s3-reader", "--role-arn", "arn:aws:iam::1:role/r"]
    _, (sa, with_account) = rendered(capsys, account, FLAGS)
    assert (sa["kind"], sa["metadata"]["name"]) == ("ServiceAccount", "s3-reader")
    for group, template in pod_templates(with_account):
        assert template["spec"]["serviceAccountName"] == "s3-reader", group
        assert all("env" not in c for c in template["spec"]["containers"]), group
    assert credential_problems(with_account) == credential_problems(sa) == []
    assert schema_errors(validator, with_account) == []


def test_an_existing_cluster_gets_only_the_rayjob(
    capsys: pytest.CaptureFixture[str], validator: Draft4Validator
) -> None:
    _, (rayjob,) = rendered(capsys, ["--cluster-selector", "shared-ray", "--name", "p1"], FLAGS)
    spec = rayjob["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": "shared-ray"}
    assert "rayClusterSpec" not in spec and "deletionStrategy" not in spec
    assert (spec["submissionMode"], spec["backoffLimit"]) == ("HTTPMode", 0)
    assert shlex.split(spec["entrypoint"]) == ["python", SCRIPT, *FLAGS]
    assert rayjob["metadata"]["name"] == "p1"
    assert schema_errors(validator, rayjob) == []
    assert operator_problems(rayjob) == []


def test_the_job_name_comes_from_the_out_folder_or_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long_out = "s3://tljob-data/predictions/Every_Image.Of-the-2026-spring-collection"
    assert refusal(capsys, ["--predict", "--", *FLAGS[:4], "--out", long_out]) == (
        "tljob k8s render: the last folder of --out ('Every_Image.Of-the-2026-spring-collection') "
        "as RayJob name 'tljob-predict-every-image-of-the-2026-spring-collection' is not usable: "
        "KubeRay needs lowercase letters, digits and '-', starting with a letter, at most 47 "
        "characters; pass --name"
    )
    _, (rayjob,) = rendered(capsys, ["--name", "spring-preds"], [*FLAGS[:4], "--out", long_out])
    assert rayjob["metadata"]["name"] == "spring-preds"
    assert rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"] == {
        "app.kubernetes.io/name": "tljob",
        "app.kubernetes.io/instance": "spring-preds",
    }


def test_the_docs_excerpts_are_what_the_docs_command_renders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = (REPO / "docs" / "pages" / "kubernetes.md").read_text()
    section = page.split("## Predicting on the cluster\n", 1)[1].split("\n## ", 1)[0]
    command = section.split("```bash\n", 1)[1].split(" | kubectl apply", 1)[0]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:4] == ["tljob", "k8s", "render", "--predict"]
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out.splitlines()
    excerpts = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    assert len(excerpts) == 2
    for excerpt in excerpts:
        lines = excerpt.splitlines()
        # the excerpt's lines, contiguous in the output at one indentation
        found = [
            i
            for i, line in enumerate(out)
            if line.endswith(lines[0])
            and all(
                out[i + j : i + j + 1] == [line[: len(line) - len(lines[0])] + text]
                for j, text in enumerate(lines)
            )
        ]
        assert len(found) == 1, excerpt
