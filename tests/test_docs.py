"""The docs: the generated reference pages are current, the site builds with
``mkdocs build --strict`` (a broken link or a page missing from ``nav`` fails it), the
README's links resolve and its test command is the one CI runs. No Ray."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tljob import docs_gen
from tljob.config.search import SPACE_KINDS
from tljob.config.sweep import TuneSection

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def mkdocs_build(docs: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["-f", str(docs / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
    )


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
        "tljob evaluate",
        "tljob predict",
        "tljob demo",
        "tljob backbones",
        "tljob tune",
        "tljob weights import",
        "tljob augment preview",
        "tljob k8s render",
        "tljob k8s kustomize",
        "tljob config",
        "tljob export",
    ]
    assert "tljob train --config CONFIG [--set KEY=VALUE]... [--verbose] [--lock-wait SECONDS]" in (
        page
    )
    assert "| `--lock-wait SECONDS` | `0.0` | When another run holds" in page
    assert "| `NAME` | optional | Backbones to describe; or `rank` to rank candidates" in page
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


def test_the_site_builds_strict(tmp_path):
    proc = mkdocs_build(DOCS, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "reference" / "cli.html").is_file()
    assert (tmp_path / "site" / "images" / "sweep.png").is_file()


@pytest.mark.parametrize(
    ("page", "text", "named"),
    [
        ("orphan.md", "# Not in nav\n", "orphan.md"),
        ("index.md", "\nSee [nothing](no-such-page.md).\n", "no-such-page.md"),
        ("index.md", "\nSee [the lock](runs.md#no-such-heading).\n", "no-such-heading"),
    ],
)
def test_a_strict_build_fails_on_a_page_out_of_nav_or_a_broken_link(tmp_path, page, text, named):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("site"))
    with open(docs / "pages" / page, "a", encoding="utf-8") as f:
        f.write(text)
    proc = mkdocs_build(docs, tmp_path / "site")
    assert proc.returncode == 1
    assert named in proc.stdout + proc.stderr


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert len(targets) >= 10
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("sudo apt-get")]
    assert len(commands) == 2  # the demo's and the tests'
    tests = [c for c in commands if c.endswith(".venv/bin/python -m pytest -q")]
    assert len(tests) == 1
    assert tests[0] in (ROOT / ".ci" / "run").read_text().splitlines()
