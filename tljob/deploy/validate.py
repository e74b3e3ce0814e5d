"""Static checks of KubeRay manifests (pure): the CRD schema with closed objects, the
operator's own rules that a schema cannot express, and credentials.

- ``crd_validator(crd_dir, kind)``: the ``ray.io/v1`` OpenAPI schema of a KubeRay CRD
  (``ray.io_rayjobs.yaml`` ...) with every object closed (``close_schema``), as the API
  server's strict field validation treats a custom resource: a misspelt field is an error.
- ``operator_problems(rayjob)``: the checks of the KubeRay operator (``ValidateRayJobSpec``,
  v1.7.0-rc.0) on the fields tljob renders, which it applies only once the object exists.
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

_POLICY_ORDER = {"DeleteWorkers": 0, "DeleteCluster": 1, "DeleteSelf": 2}


def operator_problems(rayjob: Manifest) -> list[str]:
    """What the KubeRay operator would refuse in ``rayjob`` (its ``ValidateRayJobSpec`` and
    ``ValidateRayJobMetadata`` rules for the fields tljob uses); empty when none."""
    problems = []
    name = rayjob.get("metadata", {}).get("name", "")
    if len(name) > MAX_RAYJOB_NAME or not _DNS_1035.match(name):
        problems.append(f"metadata.name {name!r}: a DNS-1035 label of <= {MAX_RAYJOB_NAME}")
    spec = rayjob.get("spec", {})
    cluster = spec.get("rayClusterSpec")
    selector = spec.get("clusterSelector") or {}
    mode = spec.get("submissionMode", "K8sJobMode")
    backoff = spec.get("backoffLimit", 0)
    autoscaling = bool(cluster and cluster.get("enableInTreeAutoscaling"))
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
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        problems.append("spec.ttlSecondsAfterFinished: needs shutdownAfterJobFinishes")
    rules = (spec.get("deletionStrategy") or {}).get("deletionRules") or []
    if rules and spec.get("shutdownAfterJobFinishes"):
        problems.append(
            "spec.deletionStrategy.deletionRules: exclusive with shutdownAfterJobFinishes"
        )
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        policy, condition = rule["policy"], rule["condition"]
        where = f"spec.deletionStrategy.deletionRules[{i}]"
        if selector and policy in ("DeleteCluster", "DeleteWorkers"):
            problems.append(f"{where}: {policy} is not supported with clusterSelector")
        if autoscaling and policy == "DeleteWorkers":
            problems.append(f"{where}: DeleteWorkers is not supported with autoscaling enabled")
        status = (
            ("jobStatus", condition["jobStatus"])
            if "jobStatus" in condition
            else (
                "jobDeploymentStatus",
                condition.get("jobDeploymentStatus", ""),
            )
        )
        if policy in ttls.setdefault(status, {}):
            problems.append(f"{where}: a second {policy} rule for {status[1]}")
        ttls[status][policy] = condition.get("ttlSeconds", 0)
    for (_, status), by_policy in sorted(ttls.items()):
        ordered = sorted(
            (p for p in by_policy if p in _POLICY_ORDER), key=_POLICY_ORDER.__getitem__
        )
        for first, second in zip(ordered, ordered[1:], strict=False):
            if by_policy[first] > by_policy[second]:
                problems.append(
                    f"deletion rules for {status}: {first} ttl {by_policy[first]} must be <= "
                    f"{second} ttl {by_policy[second]}"
                )
    if cluster is not None:
        v2 = (cluster.get("autoscalerOptions") or {}).get("version") == "v2"
        for group in cluster.get("workerGroupSpecs", []):
            if "idleTimeoutSeconds" in group and not (autoscaling and v2):
                problems.append(
                    f"worker group {group['groupName']}: idleTimeoutSeconds needs autoscaler v2"
                )
    return problems


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
