"""Reading YAML a user wrote, with its size bounded (pure).

PyYAML's ``safe_load`` shares one Python object between an anchor and every alias of it, so
a few lines of nested aliases ("billion laughs") load in little memory but stand for a tree
of billions of values. Every later walk over the config (the credential-key scan, merging,
validation, error messages that repeat a value) would treat it as that tree and never end.
So the loaded graph is measured here once, each node visited once, and refused when its
expansion as a tree is larger than any real config, deeper than any real config, or refers
to itself. After that check every walk over the tree is bounded by ``MAX_VALUES``.
"""

from __future__ import annotations

from typing import Any

import yaml

from tljob.errors import UserError

# A job config, a sweep file or a --set value holds hundreds of values; 100,000 leaves room
# for long search-space lists and still walks in milliseconds.
MAX_VALUES = 100_000
MAX_DEPTH = 64


class YamlInputError(UserError, ValueError):
    """YAML text that cannot be used: not YAML, self-referring, too deep or too large."""


def load_yaml(text: str, what: str) -> Any:
    """``text`` parsed with ``yaml.safe_load`` and checked with ``check_expansion``.

    ``what`` names the input in messages (``config file 'job.yaml'``). Raises
    ``YamlInputError`` for text that is not YAML or whose value is unusable.
    """
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise YamlInputError(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise YamlInputError(
            f"{what} nests deeper than {MAX_DEPTH} levels: a config is a few levels deep; "
            "write it out flatter"
        ) from None
    check_expansion(loaded, what)
    return loaded


def check_expansion(tree: Any, what: str) -> int:
    """The number of values ``tree`` holds when its shared nodes are counted at every place
    they appear (what a tree walk visits); ``YamlInputError`` when that exceeds
    ``MAX_VALUES``, when the nesting exceeds ``MAX_DEPTH``, or when a node contains itself.

    Each distinct container is visited once (sizes are memoised by identity), so the check
    itself takes time in the number of distinct nodes, not in the expansion.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order: (node, children pushed yet?)
    stack: list[tuple[Any, bool]] = [(tree, False)]
    while stack:
        node, expanded = stack.pop()
        if not isinstance(node, dict | list):
            continue
        ident = id(node)
        if expanded:
            children = _children(node)
            sizes[ident] = 1 + sum(sizes.get(id(c), 1) for c in children)
            depths[ident] = 1 + max((depths.get(id(c), 0) for c in children), default=0)
            on_path.discard(ident)
            if depths[ident] > MAX_DEPTH:
                raise YamlInputError(
                    f"{what} nests deeper than {MAX_DEPTH} levels: a config is a few levels "
                    "deep; write it out flatter"
                )
            if sizes[ident] > MAX_VALUES:
                raise YamlInputError(
                    f"{what} expands to at least {sizes[ident]:,} values through its anchors "
                    f"and aliases (`&name` / `*name`), more than the {MAX_VALUES:,} a config "
                    "may hold: write the values out, or alias only leaves"
                )
            continue
        if ident in sizes:
            continue
        if ident in on_path:
            raise YamlInputError(
                f"{what} has an alias inside its own anchor (a value that contains itself): "
                "a config must be a finite tree"
            )
        on_path.add(ident)
        stack.append((node, True))
        for child in _children(node):
            if isinstance(child, dict | list) and id(child) not in sizes:
                if id(child) in on_path:
                    raise YamlInputError(
                        f"{what} has an alias inside its own anchor (a value that contains "
                        "itself): a config must be a finite tree"
                    )
                stack.append((child, False))
    return sizes.get(id(tree), 1)


def _children(node: dict | list) -> list[Any]:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    return list(node)
