"""Manifests as YAML text with one-line comments on the fields that need them (pure).

PyYAML cannot write comments, so this is a small block-style writer for what manifests
hold: mappings, lists, scalars, and multi-line strings (as literal blocks). A value wrapped
in ``Note`` gets its comment on the line above its key. Scalars and keys are formatted by
PyYAML itself, so quoting is PyYAML's; and every text is parsed back and compared with the
documents before it is returned, so the writer can never change what a manifest says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class Note:
    """``value`` with the comment written above its key (a single line)."""

    value: Any
    comment: str


def note(value: Any, comment: str) -> Note:
    """``value`` annotated with ``comment``; ``ValueError`` for a comment on several lines."""
    if "\n" in comment:
        raise ValueError(f"a field comment is one line: {comment!r}")
    return Note(value, comment)


def plain(tree: Any) -> Any:
    """``tree`` without its ``Note`` wrappers: plain dicts, lists and scalars."""
    if isinstance(tree, Note):
        return plain(tree.value)
    if isinstance(tree, dict):
        return {key: plain(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [plain(item) for item in tree]
    return tree


def _scalar(value: Any) -> str:
    # Text with line breaks is double-quoted, with escapes, so it stays on one line.
    style = '"' if isinstance(value, str) and "\n" in value else None
    text = yaml.safe_dump(
        value, default_flow_style=True, default_style=style, width=math.inf, allow_unicode=True
    )
    return text.removesuffix("\n").removesuffix("\n...")


def _is_block_text(value: Any) -> bool:
    """Multi-line text a literal block can hold as it is: lines that neither end in blanks
    nor (the first) start with one; other text is written as a quoted scalar."""
    if not isinstance(value, str) or "\n" not in value.rstrip("\n"):
        return False
    lines = value.split("\n")
    return value[:1] not in (" ", "\t") and all(line == line.rstrip() for line in lines)


def _literal(text: str, indent: int) -> list[str]:
    # '|' keeps one final newline, '|-' none.
    chomp = "" if text.endswith("\n") and not text.endswith("\n\n") else "-"
    body = text[:-1] if chomp == "" else text
    pad = " " * indent
    return [f"|{chomp}"] + [f"{pad}{line}" if line else "" for line in body.split("\n")]


def _value_lines(key_text: str, value: Any, indent: int) -> list[str]:
    """Lines for ``key_text: value`` at ``indent`` (``key_text`` already formatted)."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        return [f"{pad}{key_text}:", *_mapping(value, indent + 2)]
    if isinstance(value, list | tuple) and value:
        return [f"{pad}{key_text}:", *_sequence(list(value), indent + 2)]
    if _is_block_text(value):
        first, *rest = _literal(value, indent + 2)
        return [f"{pad}{key_text}: {first}", *rest]
    empty = "{}" if isinstance(value, dict) else "[]" if isinstance(value, list | tuple) else None
    return [f"{pad}{key_text}: {empty if empty is not None else _scalar(value)}"]


def _mapping(tree: dict[str, Any], indent: int) -> list[str]:
    lines = []
    for key, value in tree.items():
        if isinstance(value, Note):
            lines.append(f"{' ' * indent}# {value.comment}")
            value = value.value
        lines += _value_lines(_scalar(key), value, indent)
    return lines


def _sequence(items: list[Any], indent: int) -> list[str]:
    lines = []
    pad = " " * indent
    for item in items:
        if isinstance(item, Note):
            lines.append(f"{pad}# {item.comment}")
            item = item.value
        if isinstance(item, dict) and item:
            body = _mapping(item, indent + 2)
            # The item's first line (its first key, or that key's comment) goes after "- ".
            lines.append(f"{pad}- {body[0][indent + 2 :]}")
            lines += body[1:]
        elif isinstance(item, list | tuple) and item:
            body = _sequence(list(item), indent + 2)
            lines.append(f"{pad}- {body[0][indent + 2 :]}")
            lines += body[1:]
        elif _is_block_text(item):
            first, *rest = _literal(item, indent + 2)
            lines += [f"{pad}- {first}", *rest]
        else:
            lines.append(f"{pad}- {_value_lines('x', item, 0)[0][3:]}")
    return lines


def dump_documents(documents: list[Any], header: str = "") -> str:
    """``documents`` as one multi-document YAML text: ``header`` (comment lines, each
    prefixed with '# ') first, then each document after a '---' line. ``RuntimeError`` if
    the text would not load back as exactly ``plain(documents)``."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for document in documents:
        lines.append("---")
        lines += _mapping(document, 0)
    text = "\n".join(lines) + "\n"
    if list(yaml.safe_load_all(text)) != [plain(d) for d in documents]:
        raise RuntimeError("the YAML writer changed a manifest; this is a bug in tljob")
    return text
