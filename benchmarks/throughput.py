"""Throughput of the two hot paths, on this machine, outside Ray.

1. decode + resize (tljob.images), the per-image work of the Ray Data pipeline, on one core;
2. one Keras training step per backbone, frozen ("head") and unfrozen ("all"), batch 32.

    .venv/bin/python benchmarks/throughput.py [--size 32] [--steps 8]

Prints a Markdown table; docs/pages/performance/2026-11-27-throughput.md came from this command.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image


def decode_resize_rate(size: int, seconds: float = 3.0) -> float:
    from tljob.images import decode_rgb, resize_bilinear_uint8

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(buf, "PNG")
    data = buf.getvalue()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        resize_bilinear_uint8(decode_rgb(data), size)
        done += 1
    return done / (time.perf_counter() - start)


def train_step_rate(backbone: str, trainable: str, size: int, steps: int) -> float:
    from tljob.config import Trainable, load_config
    from tljob.nn import model as nn_model

    cfg = load_config(
        None,
        [
            "data.source=x",
            f"model.backbone={backbone}",
            "model.weights=none",
            f"data.image_size={size}",
        ],
    ).model
    net = nn_model.build_model(cfg, 10, size)
    nn_model.set_trainable(net, Trainable.parse(trainable))
    nn_model.compile_for_stage(net, "adam", 1e-3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32 * steps, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, (32 * steps,))
    net.fit(x[:64], y[:64], batch_size=32, verbose=0)  # trace and warm up
    start = time.perf_counter()
    net.fit(x, y, batch_size=32, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    from tljob.zoo import BACKBONES

    print(
        f"decode + resize 28x28 PNG -> {args.size}x{args.size}: "
        f"{decode_resize_rate(args.size):,.0f} images/s on one core\n"
    )
    print(f"| backbone ({args.size}x{args.size}, batch 32) | head images/s | all images/s |")
    print("| --- | --- | --- |")
    for name in sorted(BACKBONES):
        head = train_step_rate(name, "head", args.size, args.steps)
        full = train_step_rate(name, "all", args.size, args.steps)
        print(f"| {name} | {head:,.0f} | {full:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
