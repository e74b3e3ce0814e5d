"""Microseconds per 224x224 image of each photometric option, of the `randaugment` preset's
photometric part (RandAugment N=2 M=9, random erasing 0.25) and of MixUp / CutMix, on one
core (``cv2.setNumThreads(1)``, one process), in batches of ``--batch`` images. Not a test:
no asserts; prints the best of ``--repeats`` runs.

    .venv/bin/python benchmarks/photometric.py [--batch 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np


def _images(n: int, size: int) -> np.ndarray:
    """Smooth random colour images (noise blurred up from 28 px), not flat noise."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
    return np.stack([cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC) for s in small])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    from tljob.augment.ops.mixing import mix_batch
    from tljob.augment.photometric import Photometric
    from tljob.config.augment import AugmentSection

    images = _images(args.batch, args.size)
    keys = np.arange(args.batch, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    labels = np.arange(args.batch) % 10
    cases = {
        "brightness_range [0.5, 1.5]": {"brightness_range": (0.5, 1.5)},
        "channel_shift_range 50": {"channel_shift_range": 50.0},
        "color_jitter.contrast 0.4": {"color_jitter": {"contrast": 0.4}},
        "color_jitter.saturation 0.4": {"color_jitter": {"saturation": 0.4}},
        "color_jitter.hue 0.1": {"color_jitter": {"hue": 0.1}},
        "randaugment N=2 M=9": {"randaugment": {"num_ops": 2, "magnitude": 9}},
        "random_erasing 0.25 (random fill)": {"random_erasing": {"probability": 0.25}},
        "random_erasing 1.0 (random fill)": {"random_erasing": {"probability": 1.0}},
        "preset randaugment (photometric part)": {"preset": "randaugment"},
    }

    def best(run) -> float:
        times = []
        for epoch in range(args.repeats):
            start = time.perf_counter()
            run(epoch)
            times.append(time.perf_counter() - start)
        return min(times) / args.batch * 1e6

    print(f"{args.batch} images of {args.size}x{args.size}, 1 thread, best of {args.repeats}")
    for name, options in cases.items():
        photometric = Photometric(AugmentSection(**options))
        us = best(lambda epoch, p=photometric: p(images, keys, epoch, 0))
        print(f"  {name:40s} {us:8.0f} us/image")
    for name, (mixup, cutmix) in {"mixup 0.2": (0.2, 0.0), "cutmix 1.0": (0.0, 1.0)}.items():
        us = best(lambda epoch, m=mixup, c=cutmix: mix_batch(images, labels, 10, m, c, 0, epoch, 1))
        print(f"  {name:40s} {us:8.0f} us/image")


if __name__ == "__main__":
    main()
