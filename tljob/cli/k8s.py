"""``tljob k8s render`` and ``tljob k8s kustomize``: KubeRay manifests from a job config.

    tljob k8s render --config job.yaml [--image IMG] [--namespace NS] [--workers N]
        [--gpus-per-worker G] [--cpu-workers M] [--cluster-selector NAME] [--tune] ...
        | kubectl apply -f -

prints the ConfigMap holding the job config and the RayJob that runs it, sized from the
config's ``scaling`` section (``--workers`` / ``--gpus-per-worker`` override it in both).
``tljob k8s kustomize`` rewrites the ``k8s/`` tree (base and overlays) from
``k8s/examples/job.yaml``. Pure: neither Ray nor TensorFlow is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tljob.cli._args import add_overrides
from tljob.deploy.kustomize import write_tree
from tljob.deploy.options import (
    DEFAULT_IMAGE,
    RenderOptions,
    parse_node_selector,
    parse_toleration,
    render_options,
)
from tljob.deploy.render import render
from tljob.errors import UserError

NAME = "k8s"
HELP = "KubeRay manifests: render a job, or the k8s/ tree."


def add_arguments(k8s: argparse.ArgumentParser) -> None:
    commands = k8s.add_subparsers(dest="k8s_command", required=True)
    p = commands.add_parser(
        "render",
        help="Print the ConfigMap and RayJob (and ServiceAccount) that run a job config on "
        "KubeRay, for `kubectl apply -f -`.",
    )
    p.add_argument("--config", required=True, help="Job config (or sweep file with --tune).")
    p.add_argument("--tune", action="store_true", help="The config is a sweep: run tune.py.")
    add_overrides(p, "Override one setting of the config, written into the ConfigMap (repeatable).")
    p.add_argument("--resume", action="store_true", help="With --tune: continue the sweep.")
    p.add_argument("--image", help=f"Image of every Ray pod (default {DEFAULT_IMAGE}).")
    p.add_argument("--namespace", help="Namespace of every object (default: kubectl's).")
    p.add_argument("--name", help="RayJob name (default: tljob-<run.name or tune.name>).")
    p.add_argument("--workers", type=int, help="Training pods = scaling.num_workers.")
    p.add_argument(
        "--gpus-per-worker",
        type=int,
        help="GPUs per training pod = scaling.gpus_per_worker; 0 trains on CPUs.",
    )
    p.add_argument(
        "--cpu-workers",
        type=int,
        help="Most autoscaled Ray Data pods (default: enough for scaling.data_cpus); 0: "
        "no Ray Data group and no autoscaler.",
    )
    p.add_argument("--worker-cpus", type=int, help="CPUs of a training pod (default 8).")
    p.add_argument("--worker-memory", help="Memory of a training pod (default 32Gi).")
    p.add_argument("--data-worker-cpus", type=int, help="CPUs of a Ray Data pod (default 4).")
    p.add_argument("--data-worker-memory", help="Memory of a Ray Data pod (default 16Gi).")
    p.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="nodeSelector label of the training pods (repeatable).",
    )
    p.add_argument(
        "--gpu-toleration",
        action="append",
        default=[],
        metavar="KEY[=VALUE]:EFFECT",
        help="Toleration of the training pods, besides nvidia.com/gpu:NoSchedule (repeatable).",
    )
    p.add_argument(
        "--service-account",
        help="Run the pods as this ServiceAccount (rendered too) for IRSA / EKS Pod Identity, "
        "instead of S3 keys from Secret tljob-s3.",
    )
    p.add_argument("--role-arn", help="IRSA: the IAM role to annotate the ServiceAccount with.")
    p.add_argument(
        "--cluster-selector",
        metavar="NAME",
        help="Run on the existing RayCluster NAME instead of creating one.",
    )
    p.add_argument(
        "--backoff-limit",
        type=int,
        help="Reruns of a failed job on a new cluster (default 2: a rerun resumes; 0 for a "
        "sweep and with --cluster-selector).",
    )
    p.add_argument(
        "--pre-running-deadline",
        type=int,
        help="Seconds for every pod to be up, else the job fails (default 900).",
    )
    p.add_argument(
        "--active-deadline", type=int, help="Seconds the job may run in all (default 86400)."
    )
    p.add_argument(
        "--grace-seconds",
        type=int,
        help="Seconds the cluster is kept after the job ends, for its logs (default 120).",
    )
    tree = commands.add_parser(
        "kustomize",
        help="Rewrite the k8s/ kustomize tree (base, overlays gpu and cpu-dev) from "
        "k8s/examples/job.yaml.",
    )
    tree.add_argument("--dir", default="k8s", help="The k8s/ folder (default ./k8s).")


_OPTION_ARGS = (
    "image",
    "namespace",
    "name",
    "tune",
    "resume",
    "workers",
    "gpus_per_worker",
    "cpu_workers",
    "worker_cpus",
    "worker_memory",
    "data_worker_cpus",
    "data_worker_memory",
    "service_account",
    "role_arn",
    "cluster_selector",
    "backoff_limit",
    "pre_running_deadline",
    "active_deadline",
    "grace_seconds",
)


def options_from_args(args: argparse.Namespace) -> RenderOptions:
    """The ``RenderOptions`` of parsed ``render`` arguments (only the flags given)."""
    # `is not`: a flag given as 0 (--workers 0) is a value to check, not an absent flag.
    values = {
        name: getattr(args, name)
        for name in _OPTION_ARGS
        if getattr(args, name) is not None and getattr(args, name) is not False
    }
    if args.overrides:
        values["overrides"] = tuple(args.overrides)
    if args.gpu_node_selector:
        values["gpu_node_selector"] = parse_node_selector(args.gpu_node_selector)
    if args.gpu_toleration:
        values["gpu_tolerations"] = tuple(parse_toleration(w) for w in args.gpu_toleration)
    return render_options(**values)


def run(args: argparse.Namespace) -> int:
    if args.k8s_command == "kustomize":
        k8s_dir = Path(args.dir)
        if not (k8s_dir / "examples" / "job.yaml").is_file():
            raise UserError(f"tljob k8s kustomize: --dir {args.dir!r} has no examples/job.yaml")
        for path in write_tree(k8s_dir):
            print(path)
        return 0
    options = options_from_args(args)
    if options.service_account is not None:
        credentials = (
            f"S3 credentials: the IAM role of ServiceAccount {options.service_account} (its "
            "IRSA annotation, or an EKS Pod Identity association)."
        )
    else:
        credentials = (
            "S3 keys, once per namespace: kubectl create secret generic tljob-s3 "
            "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..."
        )
    header = f"tljob k8s render --config {args.config} | kubectl apply -f -\n{credentials}"
    print(render(args.config, options).text(header), end="")
    return 0
