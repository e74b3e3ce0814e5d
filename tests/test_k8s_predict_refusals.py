"""``tljob k8s render --predict`` refuses, exit 2 and before any pod starts, what would
fail on the cluster: a predict flag its own parser or rules refuse, a place the pods cannot
reach, a render flag a predict job has no use for, more model actors than the cluster
holds, a credential. Each message is checked whole.
"""

from __future__ import annotations

import pytest
from k8s_predict_cli import FLAGS, refusal

HELP = " (the words after `--` are tljob predict's flags: see tljob predict --help)"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--model", "runs/flowers-resnet50"),
        ("--source", "/data/new-images"),
        ("--out", "file:///tmp/predictions"),
    ],
)
def test_a_local_path_is_refused_naming_its_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    flags = list(FLAGS)
    flags[flags.index(flag) + 1] = value
    assert refusal(capsys, ["--predict", "--", *flags]) == (
        f"tljob k8s render --predict: {flag} {value!r} is a local path, which the pods cannot "
        "see: copy it to the object store and give its s3:// URI"
    )


@pytest.mark.parametrize(
    ("words", "message"),
    [
        pytest.param(
            [*FLAGS, "--top-k", "0"],
            "argument --top-k: '0' is not a whole number of 1 or more" + HELP,
            id="top-k",
        ),
        pytest.param(
            [*FLAGS, "--format", "json"],
            "argument --format: invalid choice: 'json' (choose from 'parquet', 'csv')" + HELP,
            id="format",
        ),
        pytest.param(FLAGS[:4], "the following arguments are required: --out" + HELP, id="no-out"),
        pytest.param(
            [*FLAGS, "--workers", "3"], "unrecognized arguments: --workers 3" + HELP, id="render"
        ),
        pytest.param(
            [*FLAGS, "--min-confidence", "1.5", "--as-manifest", "s3://tljob-data/p.csv"],
            "argument --min-confidence: '1.5' is not a probability between 0 and 1" + HELP,
            id="confidence",
        ),
        pytest.param(
            [*FLAGS, "--min-confidence", "0.9"],
            "--min-confidence and --as-manifest go together: give both (e.g. --min-confidence "
            "0.9 --as-manifest pseudo.csv) or neither",
            id="pair",
        ),
        pytest.param(
            [*FLAGS, "--min-confidence", "0.9", "--as-manifest", "pseudo.csv"],
            "--as-manifest 'pseudo.csv' is a local path, which the pods cannot see: copy it "
            "to the object store and give its s3:// URI",
            id="manifest",
        ),
        pytest.param(
            [*FLAGS, "--set", "train.batch_size=8"],
            "--set 'train.batch_size=8': predict takes only `s3.*` settings (e.g. --set "
            "s3.endpoint_url=https://host:port)",
            id="set",
        ),
        pytest.param(
            ["--model", "gs://tljob-runs/m", *FLAGS[2:]],
            "--model 'gs://tljob-runs/m': the pods reach storage through S3 only, and gs:// is "
            "not supported; give an s3:// URI",
            id="scheme",
        ),
        pytest.param(
            ["--model", "s3://Runs/m", *FLAGS[2:]],
            "--model: 's3://Runs/m': 'Runs' is not a valid bucket name (3 to 63 lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit); write "
            "s3://bucket/prefix",
            id="bucket",
        ),
        pytest.param(
            [*FLAGS, "--actors", "9"],
            "--actors 9: the rendered cluster has room for 8 model actors (one per CPU: 1 "
            "pod(s) of --worker-cpus 8); ask for at most 8, or render more pods (--workers)",
            id="actors",
        ),
    ],
)
def test_a_predict_flag_that_would_fail_on_the_cluster_fails_now(
    capsys: pytest.CaptureFixture[str], words: list[str], message: str
) -> None:
    assert refusal(capsys, ["--predict", "--", *words]) == f"tljob k8s render --predict: {message}"


@pytest.mark.parametrize(
    ("render_flags", "message"),
    [
        pytest.param(
            ["--cpu-workers", "2"],
            "--cpu-workers sizes the Ray Data group, which a predict job does not have (its "
            "images are decoded on the predict pods)",
            id="cpu-workers",
        ),
        pytest.param(
            ["--set", "train.batch_size=8"],
            "--set before `--` overrides a job config; predict's own --set s3.KEY=VALUE goes "
            "after `--`",
            id="set-before",
        ),
        pytest.param(["--tune"], "--tune renders a sweep", id="tune"),
        pytest.param(
            ["--gpu-node-selector", "pool=l4"],
            "--gpu-node-selector: the predict pods have no GPUs (--gpus-per-worker 0)",
            id="node-selector",
        ),
        pytest.param(
            ["--gpus-per-worker", "4", "--worker-cpus", "4"],
            "--worker-cpus (4) must exceed --gpus-per-worker (4): each GPU model actor takes "
            "one CPU, and the images are decoded on the CPUs beside them",
            id="cpus-per-gpu",
        ),
        pytest.param(
            ["--cluster-selector", "shared-ray", "--workers", "2", "--gpus-per-worker", "1"],
            "--cluster-selector runs on an existing RayCluster, so --gpus-per-worker, --workers "
            "would have no effect",
            id="selector",
        ),
    ],
)
def test_a_render_flag_predict_cannot_use_is_refused(
    capsys: pytest.CaptureFixture[str], render_flags: list[str], message: str
) -> None:
    argv = ["--predict", *render_flags, "--", *FLAGS]
    assert refusal(capsys, argv) == f"tljob k8s render --predict: {message}"


def test_the_gpu_room_bounds_actors_and_every_problem_is_named_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--predict", "--workers", "2", "--gpus-per-worker", "1", "--cpu-workers", "1",
            "--", "--model", "./model.keras", *FLAGS[2:], "--actors", "3"]  # fmt: skip
    assert refusal(capsys, argv) == (
        "tljob k8s render --predict: --cpu-workers sizes the Ray Data group, which a predict "
        "job does not have (its images are decoded on the predict pods); --model "
        "'./model.keras' is a local path, which the pods cannot see: copy it to the object "
        "store and give its s3:// URI; --actors 3: the rendered cluster has room for 2 model "
        "actors (one per GPU: 2 pod(s) of --gpus-per-worker 1); ask for at most 2, or render "
        "more pods (--workers)"
    )


def test_a_credential_in_the_flags_is_refused_without_echoing_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = [*FLAGS, "--set", "s3.secret_access_key=wJalrXUtnFEMI"]
    error = refusal(capsys, ["--predict", "--", *words])
    assert error.startswith(
        "tljob k8s render --predict: invalid config:\n  credentials are never read from the "
        "config: `s3.secret_access_key`"
    )
    assert "wJalrXUtnFEMI" not in error


def test_config_and_predict_words_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert refusal(capsys, ["--predict", "--config", "job.yaml", "--", *FLAGS]) == (
        "tljob k8s render: --predict runs tljob predict with the flags after `--`, not a job "
        "config: drop --config"
    )
    assert refusal(capsys, ["--config", "job.yaml", "--", "--model", "s3://a b/m"]) == (
        "tljob k8s render: unexpected words \"--model 's3://a b/m'\": only --predict takes "
        "words (tljob predict's flags, after `--`)"
    )
    assert refusal(capsys, []) == (
        "tljob k8s render: --config is required (a job config, or a sweep file with --tune), "
        "or --predict with tljob predict's flags after `--`"
    )
