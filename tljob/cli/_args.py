"""Command-line arguments that several ``tljob`` commands share (pure: argparse only).

``--set`` is one contract everywhere: repeatable ``KEY=VALUE`` words collected in
``args.overrides``, in order, for ``tljob.config.load``'s override path.
"""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``; ``help`` says what it
    overrides, with an example for that command."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def seconds(text: str) -> float:
    """argparse type: a number of seconds, 0 or more (not infinite, not NaN)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def positive(text: str) -> int:
    """argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def add_config_args(parser: argparse.ArgumentParser, file: bool, required: bool = False) -> None:
    """``--config FILE`` (when ``file``) and ``--set``, as ``train``, ``prepare``, ``demo``
    and ``config`` take them."""
    if file:
        parser.add_argument("--config", required=required, help="YAML config file.")
    add_overrides(
        parser,
        "Override one setting, e.g. --set train.batch_size=64 or "
        "--set train.stages.1.epochs=3 (repeatable; values are YAML; applied after "
        "the file, in order).",
    )


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: Ray's own logs on the console too."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Also show Ray's own logs (Ray Data plans and progress bars, Ray Train "
        "records, TensorFlow's C++ logs); by default they go only to Ray's session logs.",
    )


# Distributions that provide the ``tensorflow`` module, the first installed one is named.
_TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly")


def version_line() -> str:
    """``tljob 0.1.0 (ray 2.60.0, tensorflow-cpu 2.21.0, python 3.11.7)``: from the
    installed packages' metadata; Ray and TensorFlow are not imported (seconds each)."""
    import importlib.metadata
    import platform

    def installed(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    tljob = installed("tljob") or "unknown (not installed as a package)"
    ray = installed("ray")
    tensorflow = next(
        (f"{d} {v}" for d in _TENSORFLOW_DISTRIBUTIONS if (v := installed(d))),
        "tensorflow not installed",
    )
    parts = [f"ray {ray}" if ray else "ray not installed", tensorflow]
    return f"tljob {tljob} ({', '.join(parts)}, python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """``--version``: print ``version_line()`` and exit 0 (computed only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_line())
        parser.exit(0)


def add_version(parser: argparse.ArgumentParser) -> None:
    """``tljob --version``."""
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="Print tljob's version and the Ray, TensorFlow and Python versions installed, "
        "then exit.",
    )
