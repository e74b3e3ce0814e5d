"""Object-store problems are refused before anything runs (exit 2), in one paragraph that
says what was tried and what to check, and never shows a credential; on the real S3 server
(SeaweedFS on loopback), without Ray."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tljob import preflight, storage
from tljob.config import ConfigError, load_config
from tljob.storage import s3api


def job_for(s3, source: str, storage_path: str, **s3_section):
    return load_config(
        None,
        [
            f"data.source={source}",
            f"run.storage_path={storage_path}",
            "run.name=r1",
            f"s3.endpoint_url={s3_section.get('endpoint_url', s3.server.endpoint_url)}",
            "s3.allow_http=true",
        ],
    )


def use_keys(monkeypatch, access_key_id: str, secret: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    storage.reset()


def refusal(job) -> str:
    storage.configure(storage.S3Settings.from_config(job.s3))
    with pytest.raises(preflight.StorageAccessError) as e:
        preflight.check_storage(job)
    return str(e.value)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_usable_store_passes_and_the_probe_leaves_nothing_behind(s3):
    job = job_for(s3, s3.uri("src"), s3.uri("runs"))
    preflight.check_storage(job)
    assert s3.objects() == []


def test_wrong_secret_key_is_refused_without_showing_any_key(s3, monkeypatch):
    secret = "wrong-secret-Zq81xPa"
    use_keys(monkeypatch, s3.server.admin.access_key_id, secret)
    message = refusal(job_for(s3, s3.uri("src"), s3.uri("runs")))
    assert message == (
        "the S3 endpoint refused the credentials: this process tried ListObjectsV2 on "
        f"{s3.uri('src')} (`data.source`) at {s3.server.endpoint_url} (region us-east-1) "
        "with credentials from the environment variables AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY, and the store answered SignatureDoesNotMatch: the secret "
        "access key does not match the access key id. Check the access key id, secret key "
        "and session token there (they are not shown here), and that they belong to this "
        f"store ({s3.server.endpoint_url} (region us-east-1))."
    )
    assert secret not in message and s3.server.admin.access_key_id not in message


def test_unknown_access_key_id_is_refused(s3, monkeypatch):
    use_keys(monkeypatch, "TLJOBNOSUCHKEY000", "whatever-secret")
    message = refusal(job_for(s3, s3.uri("src"), s3.uri("runs")))
    assert "the store answered InvalidAccessKeyId: the access key id is not known" in message
    assert "TLJOBNOSUCHKEY000" not in message and "whatever-secret" not in message


def test_missing_bucket_names_the_bucket(s3):
    message = refusal(job_for(s3, "s3://no-such-bucket-here/src", s3.uri("runs")))
    assert message == (
        "the bucket 'no-such-bucket-here' does not exist: this process tried ListObjectsV2 "
        "on s3://no-such-bucket-here/src (`data.source`) at "
        f"{s3.server.endpoint_url} (region us-east-1) and the store answered NoSuchBucket. "
        "Check the bucket name, and that `s3.endpoint_url` and `s3.region` point at the "
        "store that holds it; tljob never creates buckets."
    )


def test_unreachable_endpoint_names_the_endpoint(s3):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    message = refusal(job_for(s3, s3.uri("src"), s3.uri("runs"), endpoint_url=endpoint))
    assert message.startswith(
        f"cannot reach the S3 endpoint: this process tried ListObjectsV2 on {s3.uri('src')} "
        f"(`data.source`) at {endpoint} (region us-east-1) and got no answer "
        f'(Could not connect to the endpoint URL: "{endpoint}/{s3.bucket}?'
    )
    assert message.endswith(
        "Check the endpoint URL and port (`s3.endpoint_url` or AWS_ENDPOINT_URL), that the "
        "server is running, and that it can be reached from here (DNS, proxy, firewall)."
    )


def test_no_credentials_at_all(s3, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    storage.reset()
    message = refusal(job_for(s3, s3.uri("src"), s3.uri("runs")))
    assert message.startswith(
        f"no S3 credentials: this process tried ListObjectsV2 on {s3.uri('src')} (`data.source`)"
    )
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


def test_read_only_credentials_may_read_the_source_but_not_write_the_run_dir(s3, monkeypatch):
    reader = s3.server.reader
    use_keys(monkeypatch, reader.access_key_id, reader.secret_access_key)
    message = refusal(job_for(s3, s3.uri("src"), s3.uri("runs")))
    assert message == (
        f"no permission: this process tried PutObject on {s3.uri('runs', 'r1')} "
        f"(`run.storage_path` + `run.name`) at {s3.server.endpoint_url} (region us-east-1) "
        "with credentials from the environment variables AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY, and the store answered AccessDenied. Grant those credentials "
        "s3:ListBucket on the bucket and s3:PutObject, s3:GetObject and s3:DeleteObject "
        f"under {s3.uri('runs', 'r1')}/, or choose a `run.storage_path` they may write to."
    )
    assert reader.secret_access_key not in message


def test_worker_probe_failures_name_the_nodes_and_the_driver_credentials(s3, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage.reset()
    storage.configure(s3.settings)
    job = job_for(s3, s3.uri("src"), s3.uri("runs"))
    found = preflight.probe_targets(preflight.targets(job))  # what a worker without keys sees
    assert [(t.field, p.kind) for t, p in found] == [
        ("`data.source`", "no_credentials"),
        ("`run.storage_path` + `run.name`", "no_credentials"),
    ]
    preflight.check_worker_probes({"10.0.0.1": [], "10.0.0.2": []}, "env")  # all fine
    with pytest.raises(preflight.StorageAccessError) as e:
        preflight.check_worker_probes({"10.0.0.1": [], "10.0.0.2": found}, "env")
    message = str(e.value)
    assert message.startswith(
        "the Ray workers cannot use the object store as the driver can (the driver found its "
        "credentials in the environment variables AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY):"
        f" no S3 credentials: a Ray task on node 10.0.0.2 tried ListObjectsV2 on {s3.uri('src')}"
    )
    assert "On KubeRay give the worker pods the same AWS variables from the Secret" in message


def test_credentials_in_the_config_are_refused_without_repeating_them():
    secret = "cfg-secret-81hQ"
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"s3.secret_access_key={secret}", f"data.aws_session_token={secret}"])
    message = str(e.value)
    assert message.startswith(
        "invalid config:\n  credentials are never read from the config: "
        "`data.aws_session_token`, `s3.secret_access_key` (the config is saved"
    )
    assert secret not in message
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"s3.endpoint_url=https://user:{secret}@store.example"])
    assert "`s3.endpoint_url` (user:password@ in the URL)" in str(e.value)
    assert secret not in str(e.value)


# --- the same refusals through the command line ------------------------------------------------


def write_job(tmp_path: Path, source: str, storage_path: str, endpoint: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"source": source, "image_size": 32},
                "model": {"backbone": "vgg16", "weights": "none"},
                "run": {"name": "refused", "storage_path": storage_path},
                "s3": {"endpoint_url": endpoint, "allow_http": True},
            }
        )
    )
    return path


def files_text(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", ["wrong keys", "missing bucket", "unreachable endpoint"])
def test_cli_refuses_with_exit_2_and_no_secret_anywhere(s3, tmp_path, case):
    secret = "cli-secret-Kx93mW0z"
    env = s3.env()
    env["AWS_SECRET_ACCESS_KEY"] = secret if case == "wrong keys" else env["AWS_SECRET_ACCESS_KEY"]
    endpoint = s3.server.endpoint_url
    source, runs = s3.uri("src"), s3.uri("runs")
    expected = "tljob: error: the S3 endpoint refused the credentials: this process tried "
    if case == "missing bucket":
        source, expected = "s3://no-such-bucket-here/src", "tljob: error: the bucket 'no-such"
    if case == "unreachable endpoint":
        endpoint = f"http://127.0.0.1:{closed_port()}"
        runs = str(tmp_path / "runs")  # a local run directory, to look into afterwards
        expected = "tljob: error: cannot reach the S3 endpoint: this process tried "
    config = write_job(tmp_path, source, runs, endpoint)
    proc = subprocess.run(
        [sys.executable, "-m", "tljob.cli", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.startswith(expected), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one paragraph, no traceback
    known = [secret, env["AWS_SECRET_ACCESS_KEY"], env["AWS_ACCESS_KEY_ID"]]
    for value in known:
        assert value not in proc.stdout + proc.stderr
        assert value not in files_text(tmp_path)
    # nothing was written to the store for this run
    assert s3.objects("runs") == []
    if case == "unreachable endpoint":
        assert not (tmp_path / "runs").exists()  # refused before the run directory


def test_conditional_put_support_is_probed_once_per_bucket(s3):
    loc = storage.resolve(s3.uri("a", "run.lock"))
    assert s3api.conditional_put_supported(loc) is True
    assert (s3.settings, s3.bucket) in s3api._conditional
    assert s3.objects() == []
