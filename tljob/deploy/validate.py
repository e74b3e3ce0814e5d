"""Static checks of KubeRay manifests (pure): the CRD schema with closed objects, the
operator's own rules that a schema cannot express, and credentials.

- ``crd_validator(crd_dir, kind)``: the ``ray.io/v1`` OpenAPI schema of a KubeRay CRD
  (``ray.io_rayjobs.yaml`` ...) with every object closed (``close_schema``), as the API
  server's strict field validation treats a custom resource: a misspelt field is an error.
- ``operator_problems(rayjob)``: the checks of the KubeRay operator (``ValidateRayJobSpec``,
  v1.7.0) on the fields tljob renders, which it applies only once the object exists; the
  deletion rules among them are ``deletion_problems(spec)``.
- ``rerun_problems(rayjob)``: tljob's own rule that a finished RayJob deletes itself, so the
  same manifest applied again is a new run.
- ``credential_problems(document)``: a literal credential, a Secret, or a Ray container
  that gets its S3 credentials neither from Secret ``tljob-s3`` nor from a ServiceAccount.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator

from tljob.config.s3 import CREDENTIAL_KEY, credential_keys
from tljob.deploy.pods import S3_SECRET, S3_SECRET_KEYS

Manifest = dict[str, Any]
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
_SUBSCHEMA_KEYWORDS = ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")
MAX_RAYJOB_NAME = 47  # KubeRay's MaxRayJobNameLength
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


# --- the CRD schema, closed ----------------------------------------------------------------


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


def crd_schema(crd_dir: Path, kind: str) -> Manifest:
    """The published (open) ``v1`` OpenAPI schema of the KubeRay CRD of ``kind``."""
    # 1.4 MB of YAML: libyaml's safe loader reads it in a fraction of the pure-Python time.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((crd_dir / CRD_FILES[kind]).read_text(), Loader=loader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def crd_validator(crd_dir: Path, kind: str) -> Draft4Validator:
    """A validator for ``kind`` with unknown fields rejected (``close_schema``)."""
    return Draft4Validator(close_schema(crd_schema(crd_dir, kind)))


def schema_errors(validator: Draft4Validator, document: Manifest) -> list[str]:
    """Every violation as ``<field path>: <message>``; empty when ``document`` is valid."""
    return sorted(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    )


# --- the operator's rules ------------------------------------------------------------------

# KubeRay's deletion order (validateTTLConsistency): for one condition, workers go no later
# than the cluster, and the cluster no later than the RayJob itself.
DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")
# Every state a deletion rule can name (the CRD's enums): together, every way a RayJob that
# creates its cluster ends, except a job stopped with `ray job stop` (Complete, STOPPED).
TERMINAL_CONDITIONS = (
    ("jobStatus", "SUCCEEDED"),
    ("jobStatus", "FAILED"),
    ("jobDeploymentStatus", "Failed"),
)


def operator_problems(rayjob: Manifest) -> list[str]:
    """What the KubeRay operator would refuse in ``rayjob`` (its ``ValidateRayJobSpec`` and
    ``ValidateRayJobMetadata`` rules for the fields tljob uses, the deletion rules in full:
    ``deletion_problems``); empty when none."""
    problems = []
    name = rayjob.get("metadata", {}).get("name", "")
    if len(name) > MAX_RAYJOB_NAME or not _DNS_1035.match(name):
        problems.append(f"metadata.name {name!r}: a DNS-1035 label of <= {MAX_RAYJOB_NAME}")
    spec = rayjob.get("spec", {})
    cluster = spec.get("rayClusterSpec")
    selector = spec.get("clusterSelector") or {}
    mode = spec.get("submissionMode", "K8sJobMode")
    backoff = spec.get("backoffLimit", 0)
    if cluster is None and not selector:
        problems.append("spec: one of rayClusterSpec or clusterSelector must be set")
    if selector:
        if not selector.get("ray.io/cluster"):
            problems.append("spec.clusterSelector: needs the cluster name under ray.io/cluster")
        if mode == "SidecarMode":
            problems.append("spec.submissionMode: SidecarMode does not support clusterSelector")
        if backoff > 0:
            problems.append(f"spec.backoffLimit ({backoff}): incompatible with clusterSelector")
    if mode == "SidecarMode":
        for key in ("submitterPodTemplate", "submitterConfig"):
            if key in spec:
                problems.append(f"spec.{key}: not supported in SidecarMode")
        if cluster is not None:
            policy = cluster["headGroupSpec"]["template"]["spec"].get("restartPolicy", "Never")
            if policy != "Never":
                problems.append(f"head restartPolicy {policy!r}: Never or unset in SidecarMode")
    for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if key in spec and spec[key] <= 0:
            problems.append(f"spec.{key} ({spec[key]}): must be a positive integer")
    problems += deletion_problems(spec)
    if cluster is not None:
        autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
        v2 = (cluster.get("autoscalerOptions") or {}).get("version") == "v2"
        idle = (cluster.get("autoscalerOptions") or {}).get("idleTimeoutSeconds", 0)
        if idle < 0:
            problems.append(f"autoscalerOptions.idleTimeoutSeconds ({idle}): must be >= 0")
        for group in cluster.get("workerGroupSpecs", []):
            name, low, high = group["groupName"], group.get("minReplicas"), group.get("maxReplicas")
            if "idleTimeoutSeconds" in group and not (autoscaling and v2):
                problems.append(f"worker group {name}: idleTimeoutSeconds needs autoscaler v2")
            if not autoscaling and (low is None or high is None):
                problems.append(
                    f"worker group {name}: minReplicas and maxReplicas without autoscaling"
                )
            if low is not None and high is not None and low > high:
                problems.append(f"worker group {name}: minReplicas {low} > maxReplicas {high}")
    return problems


def deletion_problems(spec: Manifest) -> list[str]:
    """KubeRay's ``validateDeletionConfiguration`` (v1.7.0) on a RayJob ``spec``, with its
    RayJobDeletionPolicy feature gate on (its default): TTL only with
    ``shutdownAfterJobFinishes``; ``deletionRules`` exclusive with that and with the legacy
    ``onSuccess`` / ``onFailure``; each rule on exactly one condition with a TTL >= 0; no
    DeleteCluster / DeleteWorkers with a ``clusterSelector``, no DeleteWorkers with
    autoscaling; one rule per (condition, policy); and per condition the TTLs in
    ``DELETION_ORDER`` never decreasing. Empty when KubeRay accepts it."""
    problems = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    ttl_after = spec.get("ttlSecondsAfterFinished", 0)
    if ttl_after < 0:
        problems.append(f"spec.ttlSecondsAfterFinished ({ttl_after}): must be >= 0")
    if ttl_after > 0 and not shutdown:
        problems.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes")
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return problems
    rules = strategy.get("deletionRules") or []
    legacy = "onSuccess" in strategy or "onFailure" in strategy
    if rules and shutdown:
        problems.append(
            "spec.deletionStrategy.deletionRules: exclusive with shutdownAfterJobFinishes"
        )
    if rules and legacy:
        problems.append(
            "spec.deletionStrategy: deletionRules and onSuccess/onFailure are exclusive"
        )
    if not rules and not ("onSuccess" in strategy and "onFailure" in strategy):
        problems.append(
            "spec.deletionStrategy: needs deletionRules, or both onSuccess and onFailure"
        )
    cluster = spec.get("rayClusterSpec") or {}
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    selector = bool(spec.get("clusterSelector"))
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        where = f"spec.deletionStrategy.deletionRules[{i}]"
        policy, condition = rule.get("policy"), rule.get("condition") or {}
        keys = [key for key in ("jobStatus", "jobDeploymentStatus") if key in condition]
        ttl = condition.get("ttlSeconds", 0)
        if len(keys) != 1:
            problems.append(f"{where}: exactly one of jobStatus and jobDeploymentStatus")
            continue
        if ttl < 0:
            problems.append(f"{where}: ttlSeconds ({ttl}) must be >= 0")
            continue
        if selector and policy in ("DeleteCluster", "DeleteWorkers"):
            problems.append(f"{where}: {policy} is not supported with clusterSelector")
            continue
        if autoscaling and policy == "DeleteWorkers":
            problems.append(f"{where}: DeleteWorkers is not supported with autoscaling enabled")
            continue
        status = (keys[0], condition[keys[0]])
        if policy in ttls.setdefault(status, {}):
            problems.append(f"{where}: a second {policy} rule for {status[0]} {status[1]!r}")
            continue
        ttls[status][policy] = ttl
    for (key, value), by_policy in ttls.items():
        ordered = [(p, by_policy[p]) for p in DELETION_ORDER if p in by_policy]
        for (before, earlier), (policy, ttl) in zip(ordered, ordered[1:], strict=False):
            if ttl < earlier:
                problems.append(
                    f"deletion rules for {key} {value!r}: {policy} TTL ({ttl}) must be >= "
                    f"{before} TTL ({earlier})"
                )
    return problems


def rerun_problems(rayjob: Manifest) -> list[str]:
    """tljob's rule for a RayJob that creates its cluster: it deletes itself (DeleteSelf)
    after every outcome a rule can name (``TERMINAL_CONDITIONS``). KubeRay never starts a
    finished RayJob again, and ``kubectl apply`` of the same manifest onto it changes
    nothing; once it is gone, the same apply is a new run. Empty when that holds."""
    spec = rayjob.get("spec", {})
    if "rayClusterSpec" not in spec:
        return []
    rules = (spec.get("deletionStrategy") or {}).get("deletionRules") or []
    deleting = {
        (key, rule["condition"][key])
        for rule in rules
        if rule.get("policy") == "DeleteSelf"
        for key in ("jobStatus", "jobDeploymentStatus")
        if key in rule.get("condition", {})
    }
    return [
        f"no DeleteSelf rule for {key} {value!r}: the finished RayJob would stay, and "
        "applying the same manifest again would not run it"
        for key, value in TERMINAL_CONDITIONS
        if (key, value) not in deleting
    ]


# --- credentials ---------------------------------------------------------------------------


def _env_entries(node: Any) -> Iterator[Manifest]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from value
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)


def pod_templates(rayjob: Manifest) -> Iterator[tuple[str, Manifest]]:
    """(group, pod template) for the head group and every worker group of ``rayjob``."""
    cluster = rayjob.get("spec", {}).get("rayClusterSpec")
    if cluster is None:
        return
    yield "head", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]


def _secret_keys(container: Manifest) -> set[str]:
    names = set()
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("name") == S3_SECRET and ref.get("key") == entry["name"]:
            names.add(entry["name"])
    for source in container.get("envFrom", []):
        if source.get("secretRef", {}).get("name") == S3_SECRET and not source.get("prefix"):
            names.update(S3_SECRET_KEYS)
    return names


def _config_credentials(text: str) -> list[str]:
    """Keys of a config text that the config loader would refuse as credentials, and the
    AWS key variables' names anywhere in it."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        tree = None
    names = [name for name in (*S3_SECRET_KEYS, "AWS_SESSION_TOKEN") if name in text]
    return credential_keys(tree) + names


def credential_problems(document: Manifest) -> list[str]:
    """Credentials where they do not belong in ``document``: a Secret object, a variable
    with a credential's name and a literal value, a ConfigMap that names one; and, for a
    RayJob that creates its cluster, a Ray container that gets its S3 keys neither from
    Secret ``tljob-s3`` nor from a ServiceAccount of its pod. Empty when none."""
    kind = document.get("kind")
    problems = []
    if kind == "Secret":
        problems.append("a Secret: create it out of band (kubectl create secret), not in git")
    for entry in _env_entries(document):
        if CREDENTIAL_KEY.search(entry.get("name", "")) and "value" in entry:
            problems.append(f"env {entry['name']} has a literal value; use a secretKeyRef")
    if kind == "ConfigMap":
        for key, text in (document.get("data") or {}).items():
            found = _config_credentials(str(text))
            if found:
                problems.append(f"ConfigMap key {key} holds credentials ({', '.join(found)})")
    if kind == "RayJob":
        for group, template in pod_templates(document):
            spec = template.get("spec", {})
            if spec.get("serviceAccountName", "default") != "default":
                continue
            for container in spec.get("containers", []):
                missing = set(S3_SECRET_KEYS) - _secret_keys(container)
                if missing:
                    problems.append(
                        f"group {group}, container {container.get('name')}: "
                        f"{', '.join(sorted(missing))} neither from Secret {S3_SECRET} nor "
                        "from a ServiceAccount"
                    )
    return problems
