"""``tljob backbones``: the registry as a readable table, and one entry in detail."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tljob.zoo.spec import BackboneSpec

_COLUMNS = ("name", "family", "default", "min", "parameters", "preprocessing", "imagenet", "blocks")


def backbone_record(spec: BackboneSpec) -> dict[str, Any]:
    """The table's columns of one backbone as plain values (``tljob backbones --json``):
    sizes in pixels, ``parameters`` the exact count (no top), ``imagenet`` whether ImageNet
    weights are published, ``blocks`` how many blocks ``trainable: top_blocks:K`` counts."""
    return {
        "name": spec.name,
        "family": spec.family,
        "default_image_size": spec.default_image_size,
        "min_image_size": spec.min_image_size,
        "parameters": spec.parameters,
        "preprocessing": spec.preprocessing,
        "imagenet": bool(spec.imagenet),
        "blocks": len(spec.blocks),
    }


def _row(spec: BackboneSpec) -> tuple[str, ...]:
    record = backbone_record(spec)  # the table shows what --json gives
    return (
        record["name"],
        record["family"],
        f"{record['default_image_size']} px",
        f"{record['min_image_size']} px",
        f"{record['parameters'] / 1e6:.1f}M",
        record["preprocessing"],
        "yes" if record["imagenet"] else "no",
        str(record["blocks"]),
    )


def format_backbones(specs: Iterable[BackboneSpec]) -> str:
    """One line per backbone under a header, columns aligned (numbers to the right)."""
    rows = [_COLUMNS, *(_row(spec) for spec in specs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    right = {"default", "min", "parameters", "blocks"}
    lines = [
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, cell, width in zip(_COLUMNS, row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def describe_backbone(spec: BackboneSpec) -> str:
    """Everything the registry says about one backbone."""
    builder = (
        f"tljob builder {spec.builder!r}"
        if spec.builder
        else (f"tf_keras.applications.{spec.keras_class}")
    )
    lines = [
        f"{spec.name}: {spec.description}",
        f"  family          {spec.family}",
        f"  built by        {builder}",
        f"  input size      default {spec.default_image_size} px, minimum {spec.min_image_size} px",
        f"  preprocessing   {spec.preprocessing}",
        f"  parameters      {spec.parameters:,} (no top); {spec.feature_channels} feature "
        f"channels; {spec.activations_per_pixel} activations per pixel",
        f"  blocks          {len(spec.blocks)} (for top_blocks:K), first "
        f"{spec.blocks[0]!r}, last {spec.blocks[-1]!r}"
        if spec.blocks
        else "  blocks          none registered",
    ]
    if not spec.imagenet:
        lines.append("  imagenet        none published (weights: none, or a weights file)")
    for i, weights in enumerate(spec.imagenet):
        at = f" (for {spec.imagenet_sizes[i]} px inputs)" if spec.imagenet_sizes else ""
        digest = (
            f"{weights.hash_algorithm} {weights.published_hash}"
            if weights.hash_algorithm
            else "no published hash"
        )
        lines.append(f"  imagenet        {weights.name}{at}")
        lines.append(f"                  {weights.url}")
        lines.append(f"                  {digest}")
    return "\n".join(lines)
