"""Measure the registry's preflight figures on the real no-top networks.

For every registered backbone (or those named), builds the network with random weights at
its ``default_image_size`` (or ``--size``) and prints, beside the registry's values:
``parameters`` (all weights), ``feature_channels`` (channels of the last feature map) and
``activations_per_pixel`` (output elements of every layer, the input's 3 channels
included, for one image, divided by side x side). Building is graph construction and
weight initialisation only, so the default sizes cost no more than small ones (the whole
registry took 3 to 8 minutes on 2 shared cores). Exit status 1 when a figure differs.

    PYTHONPATH=. python benchmarks/measure_backbones.py [NAME ...] [--size S]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def activations_per_pixel(net, side: int) -> float:
    values = 0
    for layer in net.layers:
        shapes = layer.output_shape
        shapes = shapes if isinstance(shapes, list) else [shapes]
        values += sum(int(np.prod(shape[1:])) for shape in shapes)
    return values / (side * side)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="backbones to measure (default: all)")
    parser.add_argument("--size", type=int, default=None, help="input side (default: each's)")
    args = parser.parse_args(argv)

    from tljob.nn.keras import tf_keras
    from tljob.nn.model import build_backbone
    from tljob.zoo import BACKBONES, WeightsSource

    differs = 0
    print(f"{'name':22} {'side':>4} {'parameters':>12} {'channels':>8} {'act/px':>8}  seconds")
    for name in args.names or list(BACKBONES):
        spec = BACKBONES[name]
        side = args.size or spec.default_image_size
        start = time.perf_counter()
        net = build_backbone(spec, side, WeightsSource("none"))
        seconds = time.perf_counter() - start
        measured = (net.count_params(), net.output_shape[-1], activations_per_pixel(net, side))
        registered = (spec.parameters, spec.feature_channels, spec.activations_per_pixel)
        same = measured[:2] == registered[:2] and round(measured[2], 1) == registered[2]
        differs += not same
        print(
            f"{name:22} {side:4} {measured[0]:12_} {measured[1]:8} {measured[2]:8.1f}  "
            f"{seconds:5.1f}" + ("" if same else f"  registry: {registered}"),
            flush=True,
        )
        tf_keras.backend.clear_session()
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
