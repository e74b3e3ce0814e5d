"""examples/README.md's "Submitting to a running Ray cluster", run as written: the
commands of its first block, read from the README, start a Ray head of their own with
token authentication on (Ray 2.60's default once a token exists) and submit the local
folder example with ``ray job submit``.

The commands run in a user's checkout (example_checkout.py) with a fresh HOME, so that
``ray get-auth-token --generate`` writes the test's own ``~/.ray/auth_token`` (the
developer's is left alone), and without the suite's RAY_AUTH_* settings (conftest): the
block sets its own. Only what a shared machine needs is added: the head's ports chosen
free and its temp dir (conftest.ray_head_flags), the dashboard address to match, and
``TINY``'s ``--set`` overrides for a few seconds of training.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import _stop_cluster, _wait_for_job_agent, ray_head_flags
from example_checkout import EXAMPLES, TINY, read_json, set_args, user_checkout, user_env

from tljob.demo import CLASS_NAMES

pytestmark = pytest.mark.ray
SECTION = "## Submitting to a running Ray cluster"
DOCUMENTED_DASHBOARD = "http://127.0.0.1:8265"


def documented_flow() -> list[str]:
    """The command lines of the first ```bash block of the README's section."""
    text = (EXAMPLES / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, f"no ```bash block under {SECTION!r}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_flow_starts_ray_with_a_token_and_submits_the_local_folder_example(
    tmp_path, tmp_path_factory
):
    checkout = user_checkout(tmp_path_factory)
    lines = documented_flow()
    starts = [i for i, line in enumerate(lines) if line.startswith("ray start --head")]
    submits = [i for i, line in enumerate(lines) if line.startswith("ray job submit")]
    assert len(starts) == len(submits) == 1 and starts[0] < submits[0] == len(lines) - 1, lines
    setup = [line for line in lines[: starts[0]] if not line.startswith("ray ")]
    assert any("RAY_AUTH_MODE=token" in line for line in setup), setup

    temp_dir = Path("/tmp") / f"tljob-ray-auth-{os.getpid()}"  # short: unix socket paths
    flags, _, dash_port = ray_head_flags(temp_dir)
    dashboard = f"http://127.0.0.1:{dash_port}"
    start_lines = lines[: submits[0]]
    start_lines[starts[0]] += " " + " ".join(flags)
    submit = lines[submits[0]]
    assert submit.count(DOCUMENTED_DASHBOARD) == 1, submit
    submit = submit.replace(DOCUMENTED_DASHBOARD, dashboard) + " " + " ".join(set_args(TINY))

    home = tmp_path / "home"
    home.mkdir()
    env = user_env(HOME=str(home), RAY_ADDRESS="")  # no developer's RAY_ADDRESS redirects it
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        env.pop(name, None)

    def bash(script_lines: list[str], timeout: float) -> subprocess.CompletedProcess:
        script = "set -e\n" + "\n".join(script_lines) + "\n"
        return subprocess.run(["bash", "-c", script], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    try:
        started = bash(start_lines, timeout=300)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        token = (home / ".ray" / "auth_token").read_text().strip()
        assert len(token) >= 32
        _wait_for_job_agent(dashboard, headers={"Authorization": f"Bearer {token}"})

        # authentication is on: the same submission without RAY_AUTH_MODE=token is refused
        refused = bash([line for line in setup if "RAY_AUTH_MODE" not in line] + [submit], 120)
        assert refused.returncode != 0
        assert "Unauthorized: Missing authentication token" in refused.stderr, refused.stderr

        submitted = bash([*setup, submit], timeout=900)
        out = submitted.stdout + submitted.stderr
        assert submitted.returncode == 0, out[-5000:]
        assert re.search(r"Job 'raysubmit_\w+' succeeded", out), out[-3000:]
        for output in (started, refused, submitted):
            assert token not in output.stdout + output.stderr  # the token is never shown
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)

    run_dir = checkout / "tljob-runs" / "fashion-local-folder"  # the job ran in the checkout
    summary = read_json(run_dir / "summary.json")
    classes = sorted(CLASS_NAMES)
    assert summary["classes"] == classes
    assert read_json(run_dir / "labels.json") == {str(i): c for i, c in enumerate(classes)}
    data = summary["data"]
    assert (data["listed"], data["duplicates"], data["quarantined"]) == (50, 0, 0)
    assert data["splits"]["train"]["per_class_used"] == dict.fromkeys(classes, 4)
    assert data["splits"]["val"]["per_class_used"] == dict.fromkeys(classes, 1)
    assert [(name, s["epochs"]) for name, s in summary["stages"].items()] == [
        ("head", 1),
        ("fine_tune", 1),
    ]
    assert (summary["backbone"], summary["weights"], summary["num_workers"]) == (
        "mobilenet_v2_tv",
        "imagenet",
        2,
    )
    assert summary["replica_weights_identical"] is True
    assert summary["exported_model"]["correct"] == round(summary["best"]["val_accuracy"] * 10)
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [(r["global_epoch"], r["stage"]) for r in history] == [("1", "head"), ("2", "fine_tune")]
    assert (run_dir / "model" / "model.keras").is_file()
    assert summary["checkpoint"].endswith("/fashion-local-folder/checkpoint_epoch_0002")
