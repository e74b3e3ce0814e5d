"""A Dockerfile read into stages and instructions, for the image's static tests.

Enough of the Dockerfile syntax for this repository's Dockerfile: comments, line
continuations (with comment lines inside them), heredocs (``<<'PY'`` ... ``PY``), global ARGs
before the first FROM, and FROM ... AS name. Instruction keywords are upper-cased.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``keyword`` (upper case), ``arguments`` (its logical line after the
    keyword, continuations joined by spaces) and ``heredoc`` (the body of its heredoc, "" when
    it has none)."""

    keyword: str
    arguments: str
    heredoc: str = ""

    def flags(self) -> dict[str, str]:
        """The leading ``--name=value`` options (``--chown``, ``--from``, ``--mount``)."""
        flags = {}
        for word in shlex.split(self.arguments):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            flags[name] = value
        return flags

    def operands(self) -> list[str]:
        """The words after the leading options (for COPY: the sources, then the
        destination)."""
        words = shlex.split(self.arguments)
        while words and words[0].startswith("--"):
            words.pop(0)
        return words


@dataclass
class Stage:
    """A build stage: its base image, its name (``AS name``; "" when unnamed) and its
    instructions after the FROM."""

    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        """This stage's instructions with ``keyword``, in order."""
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """The global instructions (before the first FROM) and the stages, in order."""

    global_instructions: list[Instruction]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The last stage: what ``docker build`` tags."""
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        """The stage named ``name``; KeyError when there is none."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")


def instructions(text: str) -> list[Instruction]:
    """Every instruction of a Dockerfile's text, in order."""
    lines = text.splitlines()
    found = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        parts = [line]
        # Docker drops comment and empty lines inside a continuation before joining it.
        continued = line.endswith("\\")
        while continued and index < len(lines):
            parts[-1] = parts[-1].removesuffix("\\").rstrip()
            continuation = lines[index].strip()
            index += 1
            if continuation and not continuation.startswith("#"):
                parts.append(continuation)
                continued = continuation.endswith("\\")
        parts[-1] = parts[-1].removesuffix("\\").rstrip()
        keyword, _, arguments = " ".join(parts).partition(" ")
        body = []
        heredoc = _HEREDOC.search(arguments)
        if heredoc:
            strip_tabs, delimiter = heredoc.group(1) == "-", heredoc.group(3)
            while index < len(lines):
                raw = lines[index]
                index += 1
                if (raw.lstrip("\t") if strip_tabs else raw) == delimiter:
                    break
                body.append(raw)
        found.append(Instruction(keyword.upper(), arguments.strip(), "\n".join(body)))
    return found


def parse(text: str) -> Dockerfile:
    """``text`` as global instructions and stages."""
    parsed = Dockerfile([], [])
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            parsed.stages.append(Stage(words[0], name))
        elif parsed.stages:
            parsed.stages[-1].instructions.append(instruction)
        else:
            parsed.global_instructions.append(instruction)
    return parsed


def arg_default(stage: Stage, name: str) -> str | None:
    """The default of ``ARG name[=default]`` in ``stage``, unquoted; None when the stage
    declares no such ARG, "" when it declares it without a default."""
    for instruction in stage.of("ARG"):
        declared, has_default, default = instruction.arguments.partition("=")
        if declared.strip() == name:
            return shlex.split(default)[0] if has_default and shlex.split(default) else ""
    return None
