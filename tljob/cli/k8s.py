"""``tljob k8s render`` and ``tljob k8s kustomize``: KubeRay manifests from a job config.

    tljob k8s render --config job.yaml [--image IMG] [--namespace NS] [--workers N]
        [--gpus-per-worker G] [--cpu-workers M] [--cluster-selector NAME] [--tune] ...
        | kubectl apply -f -

prints the ConfigMap holding the job config and the RayJob that runs it, sized from the
config's ``scaling`` section (``--workers`` / ``--gpus-per-worker`` override it in both).

    tljob k8s render --predict [--workers N] [--gpus-per-worker G] ... -- --model s3://...
        --source s3://... --out s3://... [any other tljob predict flag]

prints the RayJob that runs ``ray_jobs/predict.py`` with the words after ``--``, checked
here by ``tljob predict``'s own parser and rules, so a bad flag fails now, not on the
cluster. ``tljob k8s kustomize`` rewrites the ``k8s/`` tree (base and overlays) from
``k8s/examples/job.yaml``. Pure: neither Ray nor TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import NoReturn

from tljob.cli import predict
from tljob.cli._args import add_overrides
from tljob.deploy.kustomize import write_tree
from tljob.deploy.options import (
    DEFAULT_IMAGE,
    RenderOptions,
    parse_node_selector,
    parse_toleration,
    render_options,
)
from tljob.deploy.predict import PredictCommand, render_predict
from tljob.deploy.render import render
from tljob.errors import UserError

NAME = "k8s"
HELP = "KubeRay manifests: render a job, or the k8s/ tree."


def add_arguments(k8s: argparse.ArgumentParser) -> None:
    commands = k8s.add_subparsers(dest="k8s_command", required=True)
    p = commands.add_parser(
        "render",
        help="Print the ConfigMap and RayJob (and ServiceAccount) that run a job config on "
        "KubeRay, or with --predict the RayJob that runs tljob predict, for `kubectl apply -f -`.",
    )
    p.add_argument("--config", help="Job config (or sweep file with --tune); not with --predict.")
    p.add_argument(
        "--predict",
        action="store_true",
        help="Render a RayJob that runs `tljob predict` (ray_jobs/predict.py) with the flags "
        "after `--` instead of a job config: one group of --workers pods (default 1) with "
        "--gpus-per-worker GPUs each (default 0: CPU model actors).",
    )
    p.add_argument("--tune", action="store_true", help="The config is a sweep: run tune.py.")
    add_overrides(p, "Override one setting of the config, written into the ConfigMap (repeatable).")
    p.add_argument("--resume", action="store_true", help="With --tune: continue the sweep.")
    p.add_argument("--image", help=f"Image of every Ray pod (default {DEFAULT_IMAGE}).")
    p.add_argument("--namespace", help="Namespace of every object (default: kubectl's).")
    p.add_argument(
        "--name",
        help="RayJob name (default: tljob-<run.name or tune.name>; with --predict: "
        "tljob-predict-<the last folder of --out>).",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="Training pods = scaling.num_workers (with --predict: predict pods, default 1).",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=int,
        help="GPUs per training pod = scaling.gpus_per_worker; 0 trains on CPUs (with "
        "--predict: GPUs per predict pod, one model actor each; default 0).",
    )
    p.add_argument(
        "--cpu-workers",
        type=int,
        help="Most autoscaled Ray Data pods (default: enough for scaling.data_cpus of each "
        "trial running at once); 0: no Ray Data group.",
    )
    p.add_argument(
        "--max-train-pods",
        type=int,
        help="Most pods the training group may grow to, e.g. the GPU node pool's size: a job "
        "needing more (scaling.num_workers x tune.max_concurrent_trials) is refused "
        "(default: no cap).",
    )
    p.add_argument(
        "--train-idle-seconds",
        type=int,
        help="Seconds an idle training pod (its GPUs) is kept before the autoscaler removes "
        "it (default 30).",
    )
    p.add_argument("--worker-cpus", type=int, help="CPUs of a training pod (default 8).")
    p.add_argument("--worker-memory", help="Memory of a training pod (default 32Gi).")
    p.add_argument("--data-worker-cpus", type=int, help="CPUs of a Ray Data pod (default 4).")
    p.add_argument("--data-worker-memory", help="Memory of a Ray Data pod (default 16Gi).")
    p.add_argument(
        "--head-cpus",
        help="CPUs of the head pod, e.g. 1 or 500m (default 2); it runs the driver, no Ray tasks.",
    )
    p.add_argument("--head-memory", help="Memory of the head pod (default 8Gi).")
    p.add_argument(
        "--submitter",
        choices=("sidecar", "k8s-job"),
        help="Who runs `ray job submit`: a container of the head pod (sidecar, the default) "
        "or a Kubernetes Job of its own (k8s-job).",
    )
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
    p.add_argument(
        "--keep-job-seconds",
        type=int,
        help="Seconds the finished RayJob is kept, then it deletes itself so that applying "
        "the same manifest runs it again (default 600; at least --grace-seconds).",
    )
    p.add_argument(
        "--resource-wait-seconds",
        type=int,
        help="Seconds the driver waits for its worker pods, written into the ConfigMap as "
        "scaling.resource_wait_seconds when the config leaves it out (default 1200: a new GPU "
        "node, then a first image pull); a shorter value in the config is refused.",
    )
    # Last: the words after `--`, after every render flag (the usage line says so).
    p.add_argument(
        "predict_flags",
        nargs="*",
        metavar="-- PREDICT_FLAG",
        help="With --predict: tljob predict's flags, checked now (--model, --source and --out "
        "must be s3:// URIs; S3 settings as --set s3.KEY=VALUE, keys from Secret tljob-s3).",
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
    "head_cpus",
    "head_memory",
    "submitter",
    "max_train_pods",
    "train_idle_seconds",
    "service_account",
    "role_arn",
    "cluster_selector",
    "backoff_limit",
    "pre_running_deadline",
    "active_deadline",
    "grace_seconds",
    "keep_job_seconds",
    "resource_wait_seconds",
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


class _PredictFlagParser(argparse.ArgumentParser):
    """``tljob predict``'s parser whose errors are ``UserError`` (exit 2, one line) naming
    where the flags were given."""

    def error(self, message: str) -> NoReturn:
        raise UserError(
            f"tljob k8s render --predict: {message} (the words after `--` are tljob "
            "predict's flags: see tljob predict --help)"
        )


def predict_command(words: list[str]) -> PredictCommand:
    """``words`` checked as ``tljob predict`` checks its command line (its parser, its
    rules between flags, its ``--set s3.*`` settings); ``UserError`` otherwise."""
    parser = _PredictFlagParser(prog="tljob k8s render --predict --")
    predict.add_arguments(parser)
    args = parser.parse_args(words)
    try:
        predict.check_flags(args)
        predict.s3_settings(args.overrides)
    except UserError as e:
        raise UserError(f"tljob k8s render --predict: {e}") from None
    return PredictCommand(
        words=tuple(words),
        model=args.model,
        source=args.source,
        out=args.out,
        as_manifest=args.as_manifest,
        actors=args.actors,
    )


def run(args: argparse.Namespace) -> int:
    if args.k8s_command == "kustomize":
        k8s_dir = Path(args.dir)
        if not (k8s_dir / "examples" / "job.yaml").is_file():
            raise UserError(f"tljob k8s kustomize: --dir {args.dir!r} has no examples/job.yaml")
        for path in write_tree(k8s_dir):
            print(path)
        return 0
    if args.predict and args.config is not None:
        raise UserError(
            "tljob k8s render: --predict runs tljob predict with the flags after `--`, not a "
            "job config: drop --config"
        )
    if not args.predict and args.predict_flags:
        raise UserError(
            f"tljob k8s render: unexpected words {shlex.join(args.predict_flags)!r}: only "
            "--predict takes words (tljob predict's flags, after `--`)"
        )
    if not args.predict and args.config is None:
        raise UserError(
            "tljob k8s render: --config is required (a job config, or a sweep file with "
            "--tune), or --predict with tljob predict's flags after `--`"
        )
    command = predict_command(args.predict_flags) if args.predict else None
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
    if command is not None:
        rendered = render_predict(command, options)
        what = f"--predict -- {shlex.join(command.words)}"
    else:
        rendered = render(args.config, options)
        what = f"--config {args.config}"
    header = f"tljob k8s render {what} | kubectl apply -f -\n{credentials}"
    print(rendered.text(header), end="")
    return 0
