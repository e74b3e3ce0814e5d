"""A job config (or a sweep file) as the KubeRay objects that run it (pure).

``render(config_path, options)`` loads the config exactly as ``tljob train`` (or ``tljob
tune``) would, with the ``--workers`` / ``--gpus-per-worker`` overrides applied to its
``scaling`` section (and ``scaling.resource_wait_seconds`` written in when the config
leaves it out: the wait its worker pods need), refuses what cannot run on KubeRay (exit 2),
and returns the documents: a ServiceAccount (with ``--service-account``), the ConfigMap
holding the config, and the RayJob whose worker groups are sized from that same config (a
sweep's training group for its ``tune.max_concurrent_trials``), so the two never drift.
"""

from __future__ import annotations

import copy
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tljob.config import ConfigError, JobConfig, load_config
from tljob.config.load import apply_override, parse_override, read_config_file
from tljob.config.sweep import Sweep, load_sweep
from tljob.deploy import pods
from tljob.deploy.options import SUBMITTERS, RenderOptions
from tljob.deploy.refusals import refuse
from tljob.deploy.yaml_out import dump_documents, note, plain
from tljob.errors import UserError

# The image's Ray: rayVersion of the cluster (tests check it against the Dockerfile).
RAY_VERSION = "2.60.0"
# Where the image installs the entry points (Dockerfile).
ENTRYPOINTS = "/home/ray/tljob/ray_jobs"
# RayJob names: DNS-1035 labels of at most 47 characters (KubeRay appends a suffix for the
# RayCluster it creates, which must stay within 53).
MAX_NAME = 47
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CLUSTER_SELECTOR_KEY = "ray.io/cluster"


@dataclass
class Rendered:
    """The rendered objects, in apply order, with their field comments (``Note``)."""

    documents: list[dict[str, Any]] = field(default_factory=list)

    def plain(self) -> list[dict[str, Any]]:
        """The documents as plain dicts, as the API server would receive them."""
        return [plain(d) for d in self.documents]

    def text(self, header: str = "") -> str:
        """The documents as commented YAML (what ``tljob k8s render`` prints)."""
        return dump_documents(self.documents, header)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The plain documents of ``kind``."""
        return [d for d in self.plain() if d["kind"] == kind]


WAIT_KEY = "scaling.resource_wait_seconds"


def wait_override(path: Path, options: RenderOptions) -> list[str]:
    """``scaling.resource_wait_seconds=<--resource-wait-seconds>`` when neither the config
    file nor a ``--set`` gives it (on KubeRay the driver starts with the head, before its
    worker pods), else nothing: a value given is kept, and checked by ``refuse``."""
    scaling = read_config_file(path).get("scaling")
    given = (isinstance(scaling, dict) and "resource_wait_seconds" in scaling) or any(
        parse_override(text)[0] == WAIT_KEY.split(".") for text in options.overrides
    )
    return [] if given else [f"{WAIT_KEY}={options.resource_wait_seconds}"]


def config_overrides(options: RenderOptions, wait: list[str] | None = None) -> list[str]:
    """The ``--set`` overrides of the config: ``wait`` (``wait_override``), then
    ``options.overrides``, then those that ``--workers`` and ``--gpus-per-worker`` stand
    for."""
    overrides = [*(wait or []), *options.overrides]
    if options.workers is not None:
        overrides.append(f"scaling.num_workers={options.workers}")
    if options.gpus_per_worker == 0:
        overrides.append("scaling.use_gpu=false")
    elif options.gpus_per_worker is not None:
        overrides += ["scaling.use_gpu=true", f"scaling.gpus_per_worker={options.gpus_per_worker}"]
    return overrides


def _config_tree(path: Path, overrides: list[str]) -> dict[str, Any]:
    """The config file's own mapping with ``overrides`` written in: what the ConfigMap
    holds (the defaults stay implicit, as in the file)."""
    tree = copy.deepcopy(read_config_file(path))
    for text in overrides:
        keys, value = parse_override(text)
        try:
            apply_override(tree, keys, value)
        except ConfigError as e:
            # The job accepted it against the defaults: a list entry the file leaves out.
            raise ConfigError(
                f"--set {text}: the ConfigMap holds the file's settings, and {e}; write "
                "that list in the file first"
            ) from None
    return tree


def _check_reloads(text: str, file_name: str, loaded: Any, overrides: list[str]) -> None:
    """``ConfigError`` unless ``text`` (the ConfigMap's config) loads as ``loaded`` (the
    file with ``overrides``): what the driver reads must be what was rendered."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(text)
        try:
            again = (load_sweep if isinstance(loaded, Sweep) else load_config)(path)
        except ConfigError:
            again = None
    if again != loaded:
        raise ConfigError(
            f"the overrides ({', '.join(overrides)}) cannot be written into the config file's "
            "own settings without changing the job (a list entry the file leaves out?); "
            "write them in the file"
        )


def job_name(options: RenderOptions, config_name: str, source: str, prefix: str = "tljob-") -> str:
    """``--name``, or ``prefix + config_name`` made a DNS-1035 label; ``UserError`` naming
    the ``source`` of ``config_name`` when the result is not one."""
    name = options.name or prefix + re.sub(r"[._]", "-", config_name.lower())
    if len(name) > MAX_NAME or not _DNS_1035.match(name):
        source = "--name" if options.name else f"{source} ({config_name!r}) as"
        raise UserError(
            f"tljob k8s render: {source} RayJob name {name!r} is not usable: KubeRay needs "
            f"lowercase letters, digits and '-', starting with a letter, at most {MAX_NAME} "
            "characters; pass --name"
        )
    return name


def deletion_rules(autoscaling: bool, grace: int, keep: int) -> Any:
    """What KubeRay deletes when the job ends. Without an autoscaler the workers (the GPUs)
    go as soon as the job succeeds (KubeRay refuses that rule with autoscaling, where the
    autoscaler removes idle workers). The cluster (head logs, dashboard) is kept ``grace``
    seconds after success, failure or a deployment failure (a deadline), and the RayJob
    (its status) ``keep`` seconds, then it deletes itself: KubeRay never runs a finished
    RayJob again, so only then does applying the same manifest start a new run
    (``validate.rerun_problems``). KubeRay requires ``grace`` <= ``keep``."""
    rules = []
    if not autoscaling:
        rules.append(
            note(
                {
                    "policy": "DeleteWorkers",
                    "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 0},
                },
                "free the GPUs the moment the job succeeds",
            )
        )
    ends = (
        ({"jobStatus": "SUCCEEDED"}, "the head stays for its logs, then all goes"),
        ({"jobStatus": "FAILED"}, "the same after a failed run (after the last retry)"),
        ({"jobDeploymentStatus": "Failed"}, "and after a deadline or a submission failure"),
    )
    for condition, why in ends:
        rules.append(
            note({"policy": "DeleteCluster", "condition": {**condition, "ttlSeconds": grace}}, why)
        )
    for i, (condition, _) in enumerate(ends):
        rule = {"policy": "DeleteSelf", "condition": {**condition, "ttlSeconds": keep}}
        why = "then the RayJob itself, in each case: the same manifest applied again reruns"
        rules.append(note(rule, why) if i == 0 else rule)
    return note({"deletionRules": rules}, "no shutdownAfterJobFinishes: the rules decide")


# A retry's driver waits this long for the crashed driver's run lock to go stale (no
# heartbeat for 300 s, tljob.run.lock) instead of spending the retry on a refusal.
RETRY_LOCK_WAIT_S = 360


def _entrypoint(options: RenderOptions, config_path: str) -> str:
    script = f"{ENTRYPOINTS}/{'tune' if options.tune else 'train'}.py"
    argv = ["python", script, "--config", config_path]
    if options.resume:
        argv.append("--resume")
    if not options.tune and options.effective_backoff_limit() > 0:
        argv += ["--lock-wait", str(RETRY_LOCK_WAIT_S)]
    return shlex.join(argv)


def render(config_path: str | Path, options: RenderOptions) -> Rendered:
    """The objects that run ``config_path`` (a job config, or a sweep file with
    ``options.tune``) on KubeRay. ``UserError`` (``ConfigError`` included) for a config
    that does not load or cannot run as asked."""
    path = Path(config_path)
    own_cluster = options.cluster_selector is None
    wait = wait_override(path, options) if own_cluster else []
    overrides = config_overrides(options, wait)
    load = load_sweep if options.tune else load_config
    loaded = load(path, overrides)
    job = loaded.job if isinstance(loaded, Sweep) else loaded
    trials = 1
    if isinstance(loaded, Sweep):
        config_name, field_name = loaded.tune.name, "`tune.name`"
        trials = loaded.tune.max_concurrent_trials or 1
    else:
        config_name, field_name = job.run.name, "`run.name`"
    refuse(job, options, trials)
    name = job_name(options, config_name, field_name)
    config_file = "sweep.yaml" if options.tune else "job.yaml"
    config_text = yaml.safe_dump(_config_tree(path, overrides), sort_keys=False)
    _check_reloads(config_text, config_file, loaded, overrides[len(wait) :])
    if options.cluster_selector is not None:
        return Rendered([_selector_rayjob(name, options, config_text, config_file)])

    configmap_name = f"{name}-config"
    documents = []
    if options.service_account is not None:
        documents.append(service_account(name, options))
    documents.append(_configmap(name, configmap_name, options, config_file, config_text))
    documents.append(_rayjob(name, job, options, configmap_name, config_file, trials))
    return Rendered(documents)


def object_metadata(name: str, options: RenderOptions, job: str | None = None) -> dict[str, Any]:
    """``name`` in the namespace asked for, labelled as part of RayJob ``job`` (or
    ``name``)."""
    metadata: dict[str, Any] = {"name": name}
    if options.namespace is not None:
        metadata["namespace"] = options.namespace
    metadata["labels"] = pods.labels(job or name)
    return metadata


def service_account(name: str, options: RenderOptions) -> dict[str, Any]:
    assert options.service_account is not None
    metadata = object_metadata(options.service_account, options, name)
    if options.role_arn:
        metadata["annotations"] = note(
            {"eks.amazonaws.com/role-arn": options.role_arn},
            "IRSA: pods of this account get the role's temporary credentials",
        )
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def _configmap(
    name: str, configmap: str, options: RenderOptions, config_file: str, text: str
) -> dict[str, Any]:
    metadata = object_metadata(configmap, options, name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": note({config_file: text}, "the job config (no credentials: tljob refuses them)"),
    }


def _rayjob(
    name: str,
    job: JobConfig,
    options: RenderOptions,
    configmap: str,
    config_file: str,
    trials: int,
) -> dict[str, Any]:
    max_data_pods = pods.data_pods(job, options, trials)
    entry = _entrypoint(options, f"{pods.CONFIG_DIR}/{config_file}")
    groups = [pods.train_group(name, job, options, trials)]
    cluster: dict[str, Any] = {
        "rayVersion": note(RAY_VERSION, "the image's Ray"),
        "enableInTreeAutoscaling": note(
            True, "the groups grow from 0 for the job's resource request and shrink when idle"
        ),
        "autoscalerOptions": pods.autoscaler_options(options),
    }
    if max_data_pods > 0:
        groups.append(pods.data_group(name, max_data_pods, options))
    cluster["headGroupSpec"] = pods.head_group(name, options, configmap, config_file)
    cluster["workerGroupSpecs"] = groups
    spec = {
        "entrypoint": note(
            entry,
            "absolute path: the driver runs wherever the submitter starts it"
            + (
                "; a retry waits out the crashed driver's run lock"
                if "--lock-wait" in entry
                else ""
            ),
        ),
        **submission(name, options),
        "backoffLimit": note(
            options.effective_backoff_limit(),
            "retries on a new cluster; a rerun resumes from the newest checkpoint"
            if not options.tune
            else "a sweep is rerun with --resume, not retried",
        ),
        "preRunningDeadlineSeconds": note(
            options.pre_running_deadline, "fail if the pods (GPUs) are not all up by then"
        ),
        "activeDeadlineSeconds": note(options.active_deadline, "fail a job running longer"),
        "deletionStrategy": deletion_rules(True, options.grace_seconds, options.keep_job_seconds),
        "rayClusterSpec": cluster,
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": object_metadata(name, options),
        "spec": spec,
    }


def submission(name: str, options: RenderOptions) -> dict[str, Any]:
    """``submissionMode`` of ``--submitter``, and in K8sJobMode the submitter Job's pod
    (restricted, as every pod tljob writes) and retries (KubeRay refuses both fields in
    SidecarMode)."""
    mode = SUBMITTERS[options.submitter]
    if mode == "SidecarMode":
        why = "the submitter is a container of the head pod: no extra pod or image pull"
        return {"submissionMode": note(mode, why)}
    return {
        "submissionMode": note(mode, "the submitter is a Job of its own (--submitter k8s-job)"),
        "submitterPodTemplate": pods.submitter_template(name, options),
        "submitterConfig": note(
            {"backoffLimit": pods.SUBMITTER_BACKOFF_LIMIT},
            "a retried submitter only follows the already submitted job's logs",
        ),
    }


def _selector_rayjob(
    name: str, options: RenderOptions, config_text: str, config_file: str
) -> dict[str, Any]:
    # An existing cluster has no ConfigMap of this job mounted, so the config travels in
    # the entrypoint and is written on the head before the driver reads it.
    path = f"/tmp/tljob/{name}/{config_file}"
    write = f"mkdir -p /tmp/tljob/{name} && printf '%s' {shlex.quote(config_text)} > {path}"
    spec = {
        "clusterSelector": note(
            {CLUSTER_SELECTOR_KEY: options.cluster_selector}, "an existing RayCluster"
        ),
        "entrypoint": note(
            f"{write} && {_entrypoint(options, path)}", "writes the job config, then runs it"
        ),
        "submissionMode": note(
            "HTTPMode",
            "the operator submits over HTTP: no submitter pod (SidecarMode needs its own cluster)",
        ),
        "backoffLimit": note(0, "KubeRay does not retry on an existing cluster"),
        "preRunningDeadlineSeconds": options.pre_running_deadline,
        "activeDeadlineSeconds": options.active_deadline,
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": object_metadata(name, options),
        "spec": spec,
    }
