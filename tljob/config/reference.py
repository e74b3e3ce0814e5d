"""The configuration reference: every setting with its default and description, walked from
the schema. ``tljob config --reference`` prints it; ``tljob.docs_gen`` writes it, with the
sweep file's ``tune`` section, into the docs' reference page (a test keeps that page current)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from tljob.config.schema import JobConfig


def config_reference() -> str:
    """Every setting of a job config with its default and description, as a Markdown table."""
    return settings_table(JobConfig)


def settings_table(model: type[BaseModel], prefix: str = "") -> str:
    """Every setting of the schema section ``model`` (nested sections and list entries
    walked, each name written as ``<prefix><dotted path>``), with its default and
    description, as a Markdown table."""
    rows = ["| setting | default | description |", "| --- | --- | --- |"]

    def cell(text: str) -> str:
        return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")

    def walk(model: type[BaseModel], prefix: str, defaults: Any) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            default = getattr(defaults, name, None) if defaults is not None else None
            if defaults is None and not field.is_required():
                default = field.get_default(call_default_factory=True)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.", default)
                continue
            args = typing.get_args(annotation)
            item = args[0] if typing.get_origin(annotation) is list and args else None
            if isinstance(item, type) and issubclass(item, BaseModel):
                names = ", ".join(getattr(d, "name", "?") for d in default or [])
                shown = f"{len(default or [])} entries: {names}"
                rows.append(f"| `{prefix}{name}` | {shown} | {cell(field.description)} |")
                walk(item, f"{prefix}{name}[].", None)
                continue
            if field.is_required():
                shown = "required"
            elif default in (None, ""):
                shown = "empty"
            else:
                shown = f"`{default}`"
            rows.append(f"| `{prefix}{name}` | {shown} | {cell(field.description)} |")

    walk(model, prefix, model.model_construct())
    return "\n".join(rows)
