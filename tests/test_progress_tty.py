"""The live progress display, end to end: a tiny job run under a pseudo-terminal, read back
the way a person's terminal would receive it. (Without a terminal the output is the plain
line-per-event text that ``test_train_integration`` checks.) Also, without Ray: when the
display is wanted, and what rank 0's end of the channel does when the channel is broken."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import write_digits_tree
from test_train_integration import driver_env, job_yaml

from tljob import output

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_a_terminal(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on a new pseudo-terminal (160 columns);
    return its exit code and everything it wrote there."""
    leader, follower = os.openpty()
    os.set_blocking(leader, True)
    proc = subprocess.Popen(
        command,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**env, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("".join(c.decode(errors="replace") for c in chunks)[-4000:])
            try:
                data = os.read(leader, 65536)
            except OSError as e:  # EIO: every writer closed the terminal
                if e.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_display_with_a_line_per_epoch(tmp_path, ray_cluster):
    data = write_digits_tree(tmp_path / "digits", classes=4, per_class=20)
    stages = [
        {"name": "head", "epochs": 1, "learning_rate": 1e-3, "trainable": "head"},
        {"name": "fine_tune", "epochs": 1, "learning_rate": 1e-4, "trainable": "all"},
    ]
    # a plain progress line after every step, were this not a terminal
    config = job_yaml(tmp_path, data, "tty", stages, run={"progress_seconds": 0.001})
    code, raw = run_in_a_terminal(
        [sys.executable, "-m", "tljob.cli", "train", "--config", str(config)],
        driver_env(ray_cluster),
        timeout=900,
    )
    screen = ANSI.sub("", raw).replace("\r\n", "\n")
    assert code == 0, screen[-4000:]
    lines = [segment for line in screen.split("\n") for segment in line.split("\r")]

    # the live row was drawn: stage, epoch, step n/N, running figures, speed and ETA
    live = [ln for ln in lines if re.match(r"stage 2/2 fine_tune epoch 1/1 .*step \d+/8", ln)]
    assert live, screen[-4000:]
    assert any(
        re.search(r"step \d+/8 loss=\d\.\d{4} accuracy=\d\.\d{4} \d+ images/s ETA \d+:\d\d", ln)
        for ln in live
    ), live
    # one finished line per epoch, with its validation figures, stays on screen
    for tag in ("stage 1/2 'head' epoch 1/1", "stage 2/2 'fine_tune' epoch 1/1"):
        finished = [ln for ln in lines if ln.startswith(f"[tljob] {tag}: loss=")]
        assert len(finished) == 1, finished
        assert re.search(
            r"val_loss=\d\.\d{4} val_accuracy=\d\.\d{4} val_macro_f1=\d\.\d{4} lr=", finished[0]
        )
    # rank 0's other lines arrive through the same channel, in order
    stage_lines = [ln for ln in lines if re.match(r"\[tljob\] stage \d/2 '\w+': trainable=", ln)]
    assert [ln.split(":")[0] for ln in stage_lines] == [
        "[tljob] stage 1/2 'head'",
        "[tljob] stage 2/2 'fine_tune'",
    ]
    assert any(ln.startswith("[tljob] exported the best epoch (") for ln in lines)
    # the live row replaced the per-step lines; and no TensorFlow start-up lines
    assert not any(re.match(r"\[tljob\] .*: step \d+/8 ", ln) for ln in lines)
    assert not any(output.is_native_log_line(ln) for ln in lines)
    # the final summary comes after the display has gone
    assert "tljob run 'tty'" in screen
    summary = screen[screen.index("tljob run 'tty'") :]
    assert "best epoch        " in summary and "val_acc best" in summary
    assert "images/s" not in summary
    assert (Path(tmp_path) / "runs" / "tty" / "summary.json").exists()


class _Push:
    def __init__(self, fail: bool) -> None:
        self.fail, self.sent = fail, []

    def remote(self, event):
        if self.fail:
            raise RuntimeError("the board actor is gone")
        self.sent.append(event)


class _Board:
    def __init__(self, fail: bool) -> None:
        self.push = _Push(fail)


def test_the_sink_hands_events_over_or_says_it_could_not():
    from tljob.progress import Line
    from tljob.run.progress import BoardSink

    board = _Board(fail=False)
    assert BoardSink(board).send(Line("a")) is True
    assert board.push.sent == [Line("a")]
    # a broken channel never stops training: the caller logs the line instead
    assert BoardSink(_Board(fail=True)).send(Line("b")) is False


class _Stdout:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_live_display_is_for_terminals_without_verbose(monkeypatch):
    from tljob.run.progress import live_display_wanted

    monkeypatch.setattr(sys, "stdout", _Stdout(tty=True))
    assert live_display_wanted(verbose=False) is True
    assert live_display_wanted(verbose=True) is False
    monkeypatch.setattr(sys, "stdout", _Stdout(tty=False))
    assert live_display_wanted(verbose=False) is False
