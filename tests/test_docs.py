"""The docs' generated reference pages are current and say what the code says. No Ray."""

from __future__ import annotations

import re

import pytest

from tljob import docs_gen
from tljob.config.search import SPACE_KINDS
from tljob.config.sweep import TuneSection


@pytest.mark.parametrize("name", sorted(docs_gen.pages()))
def test_generated_page_is_current(name):
    written = (docs_gen.DOCS_PAGES / name).read_text(encoding="utf-8")
    assert written == docs_gen.pages()[name], (
        f"docs/pages/{name} is stale; regenerate with: {docs_gen.REGENERATE}"
    )


def test_the_cli_page_has_every_command_and_its_arguments():
    page = docs_gen.cli_page()
    commands = re.findall(r"^## (tljob .+)$", page, flags=re.M)
    assert commands == [
        "tljob train",
        "tljob prepare",
        "tljob demo",
        "tljob backbones",
        "tljob tune",
        "tljob weights import",
        "tljob augment preview",
        "tljob k8s render",
        "tljob k8s kustomize",
        "tljob config",
    ]
    assert "tljob train --config CONFIG [--set KEY=VALUE]... [--verbose] [--lock-wait SECONDS]" in (
        page
    )
    assert "| `--lock-wait SECONDS` | `0.0` | When another run holds" in page
    assert "| `NAME` | optional | Backbones to describe. |" in page
    assert "| `--gpu-toleration KEY[=VALUE]:EFFECT` | none (repeatable) |" in page


def test_the_config_page_has_the_sweep_sections():
    page = docs_gen.config_page()
    missing = [f"tune.{f}" for f in TuneSection.model_fields if f"| `tune.{f}` |" not in page]
    assert missing == []
    assert [k for k in SPACE_KINDS if f"| `{{{k}: " not in page] == []
    assert "| `data.image_size` | it changes the prepared data's fingerprint" in page


def test_docs_gen_check_and_write(tmp_path, capsys):
    pages = tmp_path / "pages"
    pages.mkdir()
    assert docs_gen.main(["--pages", str(pages)]) == 1
    out = capsys.readouterr().out
    assert out.count(f"regenerate with: {docs_gen.REGENERATE}") == 3
    assert docs_gen.main(["--pages", str(pages), "--write"]) == 0
    assert docs_gen.main(["--pages", str(pages)]) == 0
    for name, text in docs_gen.pages().items():
        assert (pages / name).read_text(encoding="utf-8") == text
    stale = pages / "reference" / "backbones.md"
    stale.write_text(stale.read_text() + "edited by hand\n")
    capsys.readouterr()
    assert docs_gen.main(["--pages", str(pages)]) == 1
    assert capsys.readouterr().out == (f"stale: {stale}; regenerate with: {docs_gen.REGENERATE}\n")
