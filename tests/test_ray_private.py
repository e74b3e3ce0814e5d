"""Each use of a Ray private API (``tljob.ray_private``), tested against the installed Ray
for the behaviour tljob relies on; and no such use anywhere else in tljob."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tljob import ray_private
from tljob.ray_private import UntestedRayError, check_ray_version

REPO = Path(__file__).resolve().parents[1]


def test_the_installed_ray_is_a_verified_one():
    import ray

    assert ray_private.installed_ray_version() == ray.__version__
    assert ray.__version__ in ray_private.VERIFIED_RAY_VERSIONS
    check_ray_version()


def test_an_untested_ray_is_refused_naming_both_versions_and_the_way_out(monkeypatch):
    monkeypatch.delenv(ray_private.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(UntestedRayError) as err:
        check_ray_version("2.61.0")
    message = str(err.value)
    assert message.startswith("Ray 2.61.0 is installed, but tljob relies on Ray internals")
    assert "verified only on Ray 2.60.0" in message
    assert "TLJOB_ALLOW_UNTESTED_RAY=1" in message
    monkeypatch.setenv(ray_private.ALLOW_UNTESTED_ENV, "1")
    check_ray_version("2.61.0")  # only a warning


def test_an_untested_ray_stops_a_command_with_exit_2(tmp_path, digits_tree):
    # the real CLI, with the installed Ray's version seen as an untested one
    config = tmp_path / "job.yaml"
    config.write_text(
        f"data: {{source: {digits_tree}, image_size: 32}}\n"
        f"model: {{weights: none}}\nrun: {{storage_path: {tmp_path / 'runs'}}}\n"
    )
    code = textwrap.dedent(
        f"""
        import sys
        from tljob import ray_private
        ray_private.installed_ray_version = lambda: "9.9.9"
        from tljob.cli import main
        sys.exit(main(["train", "--config", "{config}"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Ray 9.9.9 is installed, but tljob relies on Ray internals" in result.stderr


PRIVATE_ATTRIBUTES = {
    "_internal_kv_put",
    "_internal_kv_get",
    "_internal_kv_del",
    "_execution_idx",
    "_local_tuner",
    "global_worker_stdstream_dispatcher",
    "print_to_stdstream",
}


def _private_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "ray" and any(p.startswith("_") for p in parts[1:])


def test_no_private_ray_api_is_used_outside_its_room():
    users = []
    for path in sorted((REPO / "tljob").rglob("*.py")):
        if path.name == "ray_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            found = (
                (isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES)
                or (isinstance(node, ast.ImportFrom) and _private_module(node.module or ""))
                or (
                    isinstance(node, ast.Import)
                    and any(_private_module(a.name) for a in node.names)
                )
                or (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and _private_module(node.value.split()[0] if node.value.split() else "")
                )
            )
            if found:
                users.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert users == []


def test_the_auth_notice_comes_from_the_logger_silenced():
    spec = importlib.util.find_spec(ray_private.AUTH_NOTICE_LOGGER)
    assert spec is not None and spec.origin
    source = Path(spec.origin).read_text()
    assert "logger = logging.getLogger(__name__)" in source
    assert re.search(r"logger\.(info|warning)\(", source)


def test_stdstream_prints_are_filtered_where_ray_calls_them(capsys):
    from ray._private import worker as ray_worker

    # a driver run earlier in this process may have installed tljob's filter: start from Ray's
    installed = ray_worker.print_to_stdstream
    ray_worker.print_to_stdstream = inspect.unwrap(installed)
    # Ray prints raylet warnings by calling the module's function by name at call time,
    # with this signature: wrapping the module attribute reaches them.
    assert str(inspect.signature(ray_worker.print_to_stdstream)) == "(data, ignore_prefix: bool)"
    assert re.search(r"\n\s+print_to_stdstream\(", inspect.getsource(ray_worker))
    try:
        assert ray_private.filter_stdstream_prints(lambda line: "housekeeping" in line)
        assert ray_private.filter_stdstream_prints(lambda line: False)  # idempotent
        data = {
            "pid": "raylet",
            "ip": "127.0.0.1",
            "is_err": False,
            "actor_name": "",
            "task_name": "",
            "lines": ["some housekeeping", "a worker was killed"],
        }
        ray_worker.print_to_stdstream(data, ignore_prefix=True)
        out = capsys.readouterr().out
        assert "a worker was killed" in out and "housekeeping" not in out
    finally:
        ray_worker.print_to_stdstream = installed


# The rest starts Ray.


@pytest.mark.ray
def test_forwarded_worker_output_is_printed_clean_by_the_replaced_printer(tmp_path):
    # As a Train worker's lines reach `ray job logs` or a file: an actor's stdout and
    # stderr, through a driver whose own output is not a terminal.
    script = textwrap.dedent(
        """
        import sys, time, ray
        from tljob import ray_private
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=True)
        seen = []

        def select(line):
            seen.append(line)
            return line.upper() if "[keep]" in line else None

        replaced = ray_private.replace_worker_output_printer(select)

        @ray.remote
        class RayTrainWorker:
            def speak(self):
                print("[keep] to stdout", flush=True)
                print("ray internals nobody asked for", flush=True)
                print("[keep] to stderr", file=sys.stderr, flush=True)

        worker = RayTrainWorker.remote()
        ray.get(worker.speak.remote())
        deadline = time.monotonic() + 90  # forwarded output arrives from the log monitor
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        print("replaced:", replaced, flush=True)
        ray.shutdown()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "replaced: True" in result.stdout
    assert "[KEEP] TO STDOUT\n" in result.stdout.splitlines(keepends=True)
    assert "[KEEP] TO STDERR\n" in result.stderr.splitlines(keepends=True)
    both = result.stdout + result.stderr
    assert "ray internals nobody asked for" not in both
    assert "pid=" not in both and "\x1b[" not in both


def test_a_forwarded_tljob_line_loses_its_colour_codes_and_others_are_dropped():
    from tljob.output import tljob_line

    assert tljob_line("\x1b[36m[tljob] epoch 1/5\x1b[0m loss 0.5") == "[tljob] epoch 1/5 loss 0.5"
    assert tljob_line("\x1b[33m(RayTrainWorker pid=12) TF start-up\x1b[0m") is None


def _indices_seen(dataset) -> list[int]:
    return sorted({int(v) for batch in dataset.iter_batches() for v in batch["index"]})


@pytest.mark.ray
def test_the_execution_index_counts_executions_in_tasks_and_can_be_set(ray_connected):
    import numpy as np
    import ray
    from ray.data import DataContext

    def stamp(batch):
        index = ray_private.execution_index(DataContext.get_current())
        return {"index": np.full(len(batch["id"]), index)}

    dataset = ray.data.range(8, override_num_blocks=4).map_batches(stamp)
    first = ray_private.execution_index(dataset.context)
    assert _indices_seen(dataset) == [first]
    assert _indices_seen(dataset) == [first + 1]
    assert ray_private.execution_index(dataset.context) == first + 2
    ray_private.set_execution_index(dataset.context, first + 7)
    assert _indices_seen(dataset) == [first + 7]


@pytest.mark.ray
def test_a_restored_tuner_takes_the_verbosity_set_on_it(ray_connected, tmp_path):
    from ray import tune

    def trainable(config):
        tune.report({"score": config["x"]})

    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1])},
        run_config=tune.RunConfig(name="sweep", storage_path=str(tmp_path), verbose=3),
    )
    tuner.fit()
    restored = tune.Tuner.restore(str(tmp_path / "sweep"), trainable)
    # restore keeps the first run's verbosity and has no parameter for it
    assert "verbose" not in inspect.signature(tune.Tuner.restore).parameters
    assert ray_private.tuner_verbosity(restored) == 3
    ray_private.set_restored_tuner_verbosity(restored, 0)
    assert ray_private.tuner_verbosity(restored) == 0


@pytest.mark.ray
def test_the_key_value_store_keeps_a_note_across_processes(ray_connected):
    import ray

    ray_private.kv_put("probe", "checkpoint_epoch_0003", namespace="tljob-test")

    @ray.remote
    def read_and_overwrite():
        seen = ray_private.kv_get("probe", namespace="tljob-test")
        ray_private.kv_put("probe", "checkpoint_epoch_0004", namespace="tljob-test")
        return seen

    assert ray.get(read_and_overwrite.remote()) == b"checkpoint_epoch_0003"
    assert ray_private.kv_get("probe", namespace="tljob-test") == b"checkpoint_epoch_0004"
    ray_private.kv_del("probe", namespace="tljob-test")
    assert ray_private.kv_get("probe", namespace="tljob-test") is None


@pytest.mark.ray
def test_a_streaming_splits_rate_per_cpu_second_is_its_rows_over_its_tasks_cpu_time(
    ray_connected,
):
    import time

    import numpy as np
    import ray

    def burn(batch):  # 40 ms of CPU for every 8 rows: 200 rows per CPU-second
        end = time.process_time() + 0.04
        while time.process_time() < end:
            pass
        return {"id": np.asarray(batch["id"])}

    dataset = ray.data.range(64, override_num_blocks=8).map_batches(burn, batch_size=8)
    (shard,) = dataset.streaming_split(1, equal=True)
    assert sum(len(b["id"]) for b in shard.iter_batches(batch_size=16)) == 64
    rate = ray_private.stream_images_per_cpu_s(shard)
    assert 150 <= rate <= 200  # Ray's task overhead adds CPU time, never removes it
    assert ray_private.stream_images_per_cpu_s(object()) is None
