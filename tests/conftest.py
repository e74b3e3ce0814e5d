"""Shared fixtures: real image trees on disk, a real local Ray cluster and a real S3 server.

The Ray cluster is a real ``ray start --head`` (with the job server, so ``ray job submit``
works against it, and token authentication on, the suite's own token), started once per
session and always stopped at the end.

The S3 server is SeaweedFS (``tljob.storage.seaweed``) on 127.0.0.1, started once per
session and always stopped: ``s3_server`` is the server, ``s3`` gives a test its own empty
bucket, this process's AWS variables set to the server's admin keys, and tljob's storage
configured for it (and reset afterwards).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _suite_ray_token() -> str:
    """A random Ray token in a private file, removed when the session ends."""
    folder = Path(tempfile.mkdtemp(prefix="tljob-ray-token-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "auth_token"
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    return str(path)


# Why each variable differs from a user's shell, in one line each:
# tljob sets it in every process it runs (tljob.output); here also for tests importing TF.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's clusters send no usage report to Ray's servers (tests run offline).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tests never download weights: tljob's offline mode (a test that wants otherwise says so).
os.environ["TLJOB_OFFLINE"] = "1"
# Token authentication on, as examples/README.md runs Ray (`ray start` turns it on anyway
# once ~/.ray/auth_token exists, which any local ray.init writes), so clients send the token.
os.environ["RAY_AUTH_MODE"] = "token"
# The suite's own token: the developer's ~/.ray/auth_token is neither read nor written.
os.environ["RAY_AUTH_TOKEN_PATH"] = _suite_ray_token()
os.environ.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_digits_tree(root: Path, classes: int, per_class: int, scale: int = 1) -> Path:
    """scikit-learn's 8x8 digits as greyscale PNGs in ``root/<digit>/<index>.png``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(classes):
        folder = root / f"digit_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(digits.target == c)[:per_class]:
            img = (digits.images[i] * (255 / 16)).astype(np.uint8)
            if scale > 1:
                img = np.kron(img, np.ones((scale, scale), dtype=np.uint8))
            Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def digits_tree(tmp_path: Path) -> Path:
    return write_digits_tree(tmp_path / "digits", classes=3, per_class=10)


def ray_head_flags(temp_dir: Path) -> tuple[list[str], int, int]:
    """``ray start --head`` flags for a cluster of its own on a shared machine: loopback,
    ``temp_dir`` (every process of the cluster names it), and every port Ray would
    otherwise take at a fixed default chosen free, so other Ray clusters (another test
    session) cannot block its job agent ("No available agent to submit job"). Returns the
    flags, the GCS port and the dashboard port."""
    gcs_port, dash_port = _free_port(), _free_port()
    other_ports = (
        "ray-client-server-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    )
    flags = [
        f"--port={gcs_port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}",
        f"--temp-dir={temp_dir}",
        *(f"--{name}={_free_port()}" for name in other_ports),
    ]
    return flags, gcs_port, dash_port


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real local Ray head (2 CPUs, job server on). Yields the GCS and dashboard addresses
    and its temp dir (every process of the cluster descends from one that names it)."""
    temp_dir = Path("/tmp") / f"tljob-ray-{os.getpid()}"  # short: unix socket paths
    own_flags, gcs_port, dash_port = ray_head_flags(temp_dir)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # The cluster's processes have no AWS credentials of their own (none of the developer's
    # either): a job that needs some passes them in its runtime_env, as the S3 tests do.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        RAY_ADDRESS="",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_EC2_METADATA_DISABLED="true",
    )
    subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=true",
            "--disable-usage-stats",
            *own_flags,
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    addresses = {
        "gcs": f"127.0.0.1:{gcs_port}",
        "dashboard": f"http://127.0.0.1:{dash_port}",
        "temp_dir": str(temp_dir),
    }
    try:
        _wait_for_dashboard(addresses["dashboard"])
        _wait_for_job_agent(addresses["dashboard"])
        yield addresses
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_agent(
    url: str, timeout: float = 180.0, headers: dict[str, str] | None = None
) -> None:
    """Submit a no-op job until the job server takes it: right after start-up it answers
    "No available agent to submit job" for a while, longer on a loaded machine. ``headers``:
    for a cluster whose token is not this process's."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(url, headers=headers)
    deadline = time.monotonic() + timeout
    while True:
        try:
            job_id = client.submit_job(entrypoint="true")
            break
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the warm-up job {job_id} did not finish")
        time.sleep(1)


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process visible in /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes())
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return found


def cluster_processes(temp_dir: str | Path) -> dict[int, bytes]:
    """pid -> command line of every process of the cluster with this ``temp_dir``: those
    that name it on their command line and their descendants (its workers). Other Ray
    clusters on the machine (another test session) are not included."""
    procs = _processes()
    ours = {pid for pid, (_, cmd) in procs.items() if str(temp_dir).encode() in cmd}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in ours} - ours
        ours |= children
        grew = bool(children)
    ours.discard(os.getpid())
    return {pid: procs[pid][1] for pid in ours}


def _stop_cluster(temp_dir: Path, grace_s: float = 20.0) -> None:
    """Stop this cluster only: its processes name ``temp_dir`` on their command line, and
    their workers descend from them. (``ray stop`` would stop every Ray on the machine.)"""
    ours = set(cluster_processes(temp_dir))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in ours):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's bookkeeping remains


def _wait_for_dashboard(url: str, timeout: float = 90.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # the server answers (401 when Ray's token authentication is on)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture
def ray_connected(ray_cluster):
    """This test process connected to the session's Ray cluster as a driver."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster["gcs"], log_to_driver=False)
    yield ray_cluster


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS on loopback, with an admin and a read-only identity (random keys)."""
    from tljob.storage.seaweed import LocalS3Server

    server = LocalS3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class S3Test:
    """What the ``s3`` fixture gives a test: the server, its own bucket, the settings."""

    def __init__(self, server, bucket: str, settings) -> None:
        self.server, self.bucket, self.settings = server, bucket, settings

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def objects(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under ``prefix``, sorted, straight from the server;
        folder markers (keys ending in "/", which pyarrow and SeaweedFS make) left out."""
        pages = self.server.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        )

    def env(self, keys=None) -> dict[str, str]:
        """Environment for a subprocess: the server's keys (admin by default), its
        endpoint, and no AWS profile or metadata lookups."""
        keys = keys or self.server.admin
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {
            **clean,
            **keys.env(),
            "AWS_ENDPOINT_URL": self.server.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


_bucket_counter = iter(range(1, 10**6))


@pytest.fixture
def s3(s3_server, monkeypatch):
    from tljob import storage

    bucket = f"t{os.getpid()}-{next(_bucket_counter)}"
    s3_server.create_bucket(bucket)
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_server.admin.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = storage.S3Settings(endpoint_url=s3_server.endpoint_url, allow_http=True)
    storage.reset()
    storage.configure(settings)
    try:
        yield S3Test(s3_server, bucket, settings)
    finally:
        storage.reset()


# The files whose Ray runs take longest (`pytest --durations`, 2026-12-05), in that order.
LONGEST_FILES = (
    "test_s3_integration.py",
    "test_examples_run.py",
    "test_tune_integration.py",
    "test_trust_integration.py",
    "test_train_integration.py",
    "test_demo.py",
    "test_fault_tolerance.py",
    "test_examples_token_auth.py",
)


def pytest_collection_modifyitems(config, items):
    """Every test that starts (or joins) the session's Ray cluster is marked ``ray``, so
    ``pytest -m "not ray"`` runs the fast suite. Then the longest files come first, the
    other files with Ray tests next, the rest last (in their order): the two processes
    take files in this order (``pytest_xdist_make_scheduler``), so the many short tests
    fill the end instead of one long file running alone there."""
    ray_files = set()
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
            ray_files.add(item.path.name)

    def rank(item) -> tuple[int, int]:
        name = item.path.name
        if name in LONGEST_FILES:
            return 0, LONGEST_FILES.index(name)
        return (1, 0) if name in ray_files else (2, 0)

    items.sort(key=rank)  # stable: each file's tests keep their order


# The zoo's tests, one group of tests per backbone (its module fixture's value): in one
# process, as a file would be, they were the quick suite's tail.
SHARED_BY_BACKBONE = "tests/test_zoo.py"


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (addopts), except that the zoo's backbones are shared between
    the processes: each file's tests run in one process (its module fixtures once), and
    each backbone's tests in one. (xdist's own ``loadgroup`` would do it with marks, but
    its marks are lost under pytest 9: the tests spread one by one.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    # in collection order (pytest_collection_modifyitems), not xdist's default of the
    # files with the most tests first, which left the long single-test Ray files for last
    config.option.loadscopereorder = False

    class FilesAndBackbones(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            if file == SHARED_BY_BACKBONE and nodeid.endswith("]"):
                return file + nodeid[nodeid.rindex("[") :]  # the backbone's id
            return file

    return FilesAndBackbones(config, log)


def scan_file(path: str, max_image_pixels: int = 100_000_000):
    """Read one file, hash its bytes and check it decodes, as preparation does (the
    pixels are not kept): an ``ImageScan``."""
    from tljob.data.prepared import StoreSettings
    from tljob.data.shards import scan_object

    return scan_object(path, StoreSettings(1, 1, "raw", 0, max_image_pixels, 1))


def write_truncated_jpeg(path: Path, seed: int = 0) -> Path:
    """A 64x64 JPEG cut after 600 bytes: its header reads, its pixels do not
    (``corrupt_image: OSError: Truncated File Read``)."""
    import io

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[:600])
    return path


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A manifest CSV at ``path``: the header ``uri,label``, then ``rows``."""
    import csv

    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("uri", "label"), *rows])
    return path


# --- tljob k8s render (tests/k8s_manifests.py) ---------------------------------------------


@pytest.fixture(scope="module")
def rayjob_schema() -> dict[str, Any]:
    """KubeRay's RayJob schema; skips, naming the folder, without the CRDs."""
    from kuberay_crds import CRD_DIR

    from tljob.deploy.validate import crd_schema

    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found: {CRD_DIR} is absent, so no RayJob is checked")
    return crd_schema(CRD_DIR, "RayJob")


@pytest.fixture(scope="module")
def closed_validator(rayjob_schema: dict[str, Any]) -> Any:
    """A validator of the RayJob schema with every object closed."""
    from jsonschema import Draft4Validator

    from tljob.deploy.validate import close_schema

    return Draft4Validator(close_schema(rayjob_schema))


@pytest.fixture
def cpu_job(tmp_path: Path) -> Path:
    """A small CPU-only job config (``k8s_manifests.CPU_JOB``)."""
    from k8s_manifests import CPU_JOB

    path = tmp_path / "cpu.yaml"
    path.write_text(CPU_JOB)
    return path
