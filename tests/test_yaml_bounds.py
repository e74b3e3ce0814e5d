"""Hostile YAML: nested aliases ("billion laughs"), self-reference and deep nesting are
refused at once with exit 2 by every command that reads a config; walks are bounded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tljob.config.load import load_config, parse_override
from tljob.config.s3 import credential_keys
from tljob.config.schema import ConfigError
from tljob.config.yaml_in import MAX_VALUES, YamlInputError, check_expansion, load_yaml


def alias_bomb(levels: int, width: int = 9, under: str = "data") -> str:
    """``levels`` anchors, each a list of ``width`` aliases of the one before: a tree of
    width**levels leaves in a dozen lines, placed under ``under`` (a config section)."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    lines.append(f"{under}: {{source: /nowhere, junk: *a{levels}}}")
    return "\n".join(lines) + "\n"


def test_a_ten_level_bomb_is_refused_in_milliseconds_naming_the_file(tmp_path: Path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(10))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed  # a tree walk of 9**10 nodes takes hours
    message = str(err.value)
    assert f"config file {str(path)!r}" in message
    assert "anchors and aliases" in message
    assert f"{MAX_VALUES:,}" in message


def test_the_expansion_is_counted_exactly_with_each_node_visited_once():
    tree = yaml.safe_load(alias_bomb(4, width=3))
    # a0 = 1 list + 1 leaf = 2; a_k = 1 + 3 * a_{k-1}; a1..a4 = 7, 22, 67, 202
    # root mapping: 6 keys + a0..a4 (2+7+22+67+202) + data mapping (1 + 2 keys + source
    # leaf + a4 tree 202) = 6 + 300 + 206
    assert check_expansion(tree, "t") == 1 + 6 + 300 + 206
    assert check_expansion(yaml.safe_load(alias_bomb(4)), "t") < MAX_VALUES
    with pytest.raises(YamlInputError, match="at least"):
        check_expansion(yaml.safe_load(alias_bomb(6)), "t")


def test_a_value_that_contains_itself_is_refused():
    with pytest.raises(YamlInputError, match="contains itself"):
        load_yaml("data: &loop [1, *loop]\n", "config file 'x.yaml'")
    with pytest.raises(YamlInputError, match="contains itself"):
        load_yaml("&top {data: *top}\n", "config file 'x.yaml'")


def test_deep_nesting_is_refused_before_python_runs_out_of_stack():
    deep = "data: " + "[" * 65 + "]" * 65 + "\n"
    with pytest.raises(YamlInputError, match="deeper than 64 levels"):
        load_yaml(deep, "f")
    very_deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(YamlInputError, match="deeper than 64 levels"):
        load_yaml(very_deep, "f")


def test_a_config_with_ordinary_anchors_still_loads(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "data: {source: /images, image_size: &size 96, val_fraction: 0.25}\n"
        "train:\n"
        "  stages:\n"
        "    - {name: head, epochs: 2, learning_rate: 0.001, trainable: head, "
        "schedule: &schedule {kind: cosine, warmup_epochs: 1}}\n"
        "    - {name: tune, epochs: 2, learning_rate: 0.0001, trainable: all, "
        "schedule: *schedule}\n"
    )
    config = load_config(path)
    assert config.data.image_size == 96
    assert [s.schedule.kind for s in config.train.stages] == ["cosine", "cosine"]


def test_a_bomb_in_a_set_value_is_refused():
    value = "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], [*f,*f,*f,*f,*f,*f,*f,*f,*f]]"  # noqa: E501
    with pytest.raises(ConfigError, match="override 'data.x=.*the value expands"):
        parse_override(f"data.x={value}")


def test_the_credential_scan_visits_a_shared_node_once_and_keeps_the_file_order():
    shared = {"secret_key": "x", "nested": {"password": "y"}}
    tree = {"a": shared, "b": [shared] * 1000, "token": "t", "s3": {"api_key": "k"}}
    assert credential_keys(tree) == ["a.secret_key", "a.nested.password", "token", "s3.api_key"]


# Each command that reads a config, run as a user would; all must answer at once with
# exit 2 (a hang would take hours: the timeout is only there to fail instead of hanging).
COMMANDS = [
    ["train", "--config", "{f}"],
    ["prepare", "--config", "{f}"],
    ["config", "--config", "{f}"],
    ["augment", "preview", "--config", "{f}", "--out", "{d}/grid.png"],
    ["k8s", "render", "--config", "{f}"],
    ["tune", "--config", "{f}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]).split(" -")[0])
def test_every_command_refuses_the_bomb_with_exit_2(tmp_path: Path, command: list[str]):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(10))
    argv = [part.format(f=path, d=tmp_path) for part in command]
    result = subprocess.run(
        [sys.executable, "-m", "tljob.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "anchors and aliases" in output
    assert "Traceback" not in output
