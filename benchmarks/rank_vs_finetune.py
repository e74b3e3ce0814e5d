"""How well ``tljob backbones rank`` predicts fine-tuning: both, side by side in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/rank_vs_finetune.py [--per-class 200]
        [--subsample 800] [--head-epochs 2] [--fine-tune-epochs 3]
        [--candidates LIST] [--workdir /tmp/tljob-rankcorr]

``--candidates`` (``tljob backbones rank``'s syntax) defaults to ``CANDIDATES`` below: the
one backbone with ImageNet weights on an offline machine and four from random weights.

The demo's data (Fashion-MNIST from Debian's dataset-fashion-mnist, ``--per-class`` images
of each class, 96 px, 20 % validation, seed 0) and the demo's job (2 workers x 0.5 CPU,
batch 32 per worker, dropout 0.2) on a private local Ray (2 CPUs):

1. ``tljob backbones rank`` over the candidates (the code the CLI runs: ``parse_candidates``,
   ``rank_driver_fn``, ``write_outputs``), on a stratified subsample of ``--subsample``
   training images (and half as many validation images): each candidate's linear-probe
   validation accuracy and macro-F1, and its forward cost (ms per image per actor);
2. the same job fine-tuned once per candidate through ``run_job`` (what ``tljob train``
   runs), one recipe for all: the demo's stages, the head alone for ``--head-epochs`` at 3e-3,
   then the last 60 backbone layers for ``--fine-tune-epochs`` at 2e-4, same seeds; the
   figure kept is the run's best validation accuracy (``summary.json["best"]``).

A candidate ``NAME:none`` starts from random weights (seeded), ``NAME:imagenet`` (or a bare
NAME, the job's weights being 'imagenet') from ImageNet's. Printed: a markdown table of both
figures per candidate with both rankings, and Spearman's rank correlation and Kendall's tau
between the probe's accuracy and the fine-tuned accuracy (``scipy.stats``), n = candidates.
Everything is also written to ``<workdir>/results.json`` as it is measured;
``--report <workdir>/results.json`` prints a finished run's report again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CANDIDATES = (
    "mobilenet_v2_tv,mobilenet_v2_tv:none,mobilenet_v3_small:none,efficientnet_b0:none,"
    "mobilenet_v2:none"
)


def demo_tree(workdir: Path, per_class: int) -> Path:
    from tljob.demo import DEBIAN_FASHION_MNIST, load_fashion_mnist, write_image_tree

    root = workdir / f"fashion-mnist-{per_class}"
    write_image_tree(*load_fashion_mnist(DEBIAN_FASHION_MNIST), root, per_class)
    return root


def job_config(source: Path, workdir: Path, name: str, args, backbone: str, weights: str):
    """The demo's job on ``source``, with ``backbone`` and its ``weights``."""
    from tljob.config import load_config

    return load_config(
        None,
        [
            f"data.source={source}",
            "data.image_size=96",
            "data.val_fraction=0.2",
            "data.seed=0",
            f"model.backbone={backbone}",
            f"model.weights={weights}",
            "model.head.dropout=0.2",
            "train.batch_size=32",
            f"train.stages=[{{name: head, epochs: {args.head_epochs}, learning_rate: 3.0e-3, "
            f"trainable: head}}, {{name: fine_tune, epochs: {args.fine_tune_epochs}, "
            "learning_rate: 2.0e-4, trainable: 'top:60'}]",
            "train.reduce_lr.patience=1",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=0.5",
            f"run.name={name}",
            f"run.storage_path={workdir / 'runs'}",
        ],
    )


def rank_candidates(job, candidates_text: str, subsample: int, workdir: Path):
    """``tljob backbones rank``'s steps, as ``tljob.cli.backbones.run_rank`` takes them."""
    from tljob import storage
    from tljob.rank.choose import parse_candidates
    from tljob.rank.driver import rank_driver_fn
    from tljob.rank.outputs import format_table, write_outputs

    candidates = parse_candidates(candidates_text)
    out = storage.resolve(str(workdir / "rank"))
    rows, context = rank_driver_fn(job, candidates, subsample, out)
    written = write_outputs(out, rows, job, 3, context)
    print(format_table(rows, written), flush=True)
    return candidates, rows


def fine_tune(job) -> dict[str, float]:
    from tljob.run.job import run_job

    started = time.monotonic()
    summary = run_job(job)
    return {
        "best_val_accuracy": float(summary["best"]["val_accuracy"]),
        "final_val_accuracy": float(summary["final"]["val_accuracy"]),
        "run_wall": time.monotonic() - started,
    }


def ranks(values: list[float]) -> list[float]:
    """1 for the highest value; tied values share the mean of their places (as Spearman's
    rho ranks them)."""
    from scipy.stats import rankdata

    return [float(r) for r in rankdata([-v for v in values], method="average")]


def report(record: dict) -> None:
    """Print a run's ``results.json``: the settings, the table, the two correlations."""
    from scipy.stats import kendalltau, spearmanr

    results = record["rows"]
    labels = list(results)
    probe = [results[k]["probe_val_accuracy"] for k in labels]
    tuned = [results[k]["best_val_accuracy"] for k in labels]
    rho, rho_p = spearmanr(probe, tuned)
    tau, tau_p = kendalltau(probe, tuned)  # tau-b: ties counted
    settings = record.get("settings")  # absent from a results.json of an earlier version
    if settings:
        print(
            f"\n{settings['per_class']} images per class at 96 px; probe on "
            f"{settings['subsample']} training images; fine-tuning {settings['head_epochs']} "
            f"head + {settings['fine_tune_epochs']} top:60 epochs; rank "
            f"{record['rank_seconds']:.0f} s, all {record['total_seconds']:.0f} s\n"
        )
    print(
        "| candidate | weights | probe val_accuracy | probe macro-F1 | ms per image "
        "| probe rank | fine-tuned best val_accuracy | fine-tuned rank | fine-tune run, s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, p_rank, t_rank in zip(labels, ranks(probe), ranks(tuned), strict=True):
        r = results[label]
        print(
            f"| {label} | {r['weights']} | {r['probe_val_accuracy']:.4f} | "
            f"{r['probe_val_macro_f1']:.4f} | {r['ms_per_image']:.2f} | {p_rank:g} | "
            f"{r['best_val_accuracy']:.4f} | {t_rank:g} | {r['run_wall']:.0f} |"
        )
    print(
        f"\nn = {len(labels)}: Spearman's rho {rho:.3f} (p {rho_p:.3f}), "
        f"Kendall's tau-b {tau:.3f} (p {tau_p:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--subsample", type=int, default=800)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--fine-tune-epochs", type=int, default=3)
    parser.add_argument("--candidates", default=CANDIDATES)
    parser.add_argument("--workdir", default="/tmp/tljob-rankcorr")
    parser.add_argument(
        "--report", metavar="RESULTS_JSON", help="Only print an earlier run's report."
    )
    args = parser.parse_args()
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return
    workdir = Path(args.workdir).resolve()
    source = demo_tree(workdir, args.per_class)
    stamp = time.strftime("%H%M%S")
    began = time.monotonic()

    import ray

    from tljob import output

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(workdir / "ray"),
        runtime_env={"env_vars": output.worker_env(False)},
    )
    results: dict[str, dict] = {}
    record = workdir / "results.json"
    try:
        base = job_config(source, workdir, f"rank-{stamp}", args, "mobilenet_v2_tv", "imagenet")
        rank_began = time.monotonic()
        candidates, rows = rank_candidates(base, args.candidates, args.subsample, workdir)
        rank_seconds = time.monotonic() - rank_began
        for candidate, row in zip(candidates, rows, strict=True):
            assert not row.skipped, f"{row.candidate}: {row.skipped}"
            results[candidate.label] = {
                "weights": row.weights,
                "probe_val_accuracy": row.val_accuracy,
                "probe_val_macro_f1": row.val_macro_f1,
                "ms_per_image": row.ms_per_image,
            }
        record.write_text(json.dumps({"rank_seconds": rank_seconds, "rows": results}, indent=1))
        for index, candidate in enumerate(candidates):
            name = f"ft{index}-{candidate.backbone}-{row_weights(results, candidate)}-{stamp}"
            job = job_config(
                source, workdir, name, args, candidate.backbone, row_weights(results, candidate)
            )
            results[candidate.label].update(fine_tune(job))
            print(candidate.label, json.dumps(results[candidate.label]), flush=True)
            record.write_text(json.dumps({"rank_seconds": rank_seconds, "rows": results}, indent=1))
    finally:
        ray.shutdown()

    record.write_text(
        json.dumps(
            {
                "settings": vars(args),
                "rank_seconds": rank_seconds,
                "rows": results,
                "total_seconds": time.monotonic() - began,
            },
            indent=1,
        )
    )
    report(json.loads(record.read_text()))


def row_weights(results: dict[str, dict], candidate) -> str:
    """The weights the candidate was ranked with ('imagenet' or 'none'), for its fine-tune."""
    return results[candidate.label]["weights"]


if __name__ == "__main__":
    main()
