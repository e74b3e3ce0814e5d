"""tljob's output: its own lines through logging, and Ray's forwarded chatter filtered."""

from __future__ import annotations

import os

import pytest

from tljob import output


def test_package_loggers_write_prefixed_lines_to_stdout(capsys):
    output.setup()
    output.setup()  # idempotent: one handler, one line per event
    output.logger("run").info("resuming after stage 'head' epoch 1")
    output.logger("run").debug("not shown")
    assert capsys.readouterr().out == "[tljob] resuming after stage 'head' epoch 1\n"


def test_forwarded_worker_output_keeps_only_tljob_lines(capsys):
    from ray._private import worker as ray_worker

    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    assert output.forward_only_tljob_lines(verbose=False) is False  # no driver: left alone
    dispatcher.add_handler("ray_print_logs", lambda data: None)
    try:
        assert output.forward_only_tljob_lines(verbose=True) is False
        assert output.forward_only_tljob_lines(verbose=False) is True
        dispatcher.emit(
            {
                "ip": "127.0.0.1",
                "pid": 42,
                "task_name": None,
                "actor_name": "RayTrainWorker",
                "is_err": False,
                "job": "01000000",
                "lines": [
                    "Dataset train_1 execution finished in 2.22 seconds",
                    "[tljob] stage 1/2 'head' epoch 1/1: loss=1.1078",
                    "Reporting training result 1: TrainingReport(...)",
                ],
            }
        )
    finally:
        dispatcher.remove_handler("ray_print_logs")
    out = capsys.readouterr().out
    assert "[tljob] stage 1/2 'head' epoch 1/1: loss=1.1078" in out
    assert "Dataset train_1" not in out and "Reporting training result" not in out


# TensorFlow 2.21's start-up lines, as the driver printed them before they were hidden
TF_STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795831388.420093   17274 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.\n",
    "I0000 00:00:1795831388.460164   17274 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.\n",
    "E0000 00:00:1712345678.123456    1234 cuda_dnn.cc:8310] Unable to register cuDNN factory\n",
    "W1128 02:01:03.123456    1234 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n",
]
KEPT = [
    "Traceback (most recent call last):\n",
    "UserWarning: something the user should see\n",
    "[tljob] a line\n",
    "I0000 is not a log line without its source location\n",
]


@pytest.mark.parametrize("line", TF_STARTUP)
def test_tensorflow_startup_lines_are_recognised(line):
    assert output.is_native_log_line(line)


@pytest.mark.parametrize("line", KEPT)
def test_other_lines_are_not(line):
    assert not output.is_native_log_line(line)


def test_native_logs_are_hidden_at_the_file_descriptor_unless_verbose(capfd):
    # C++ code writes to descriptor 2 directly, beneath sys.stderr: so does os.write
    kept = KEPT + KEPT[:2]  # as many as there are TensorFlow lines, interleaved with them
    everything = "".join(line for pair in zip(TF_STARTUP, kept, strict=True) for line in pair)
    with output.native_logs_hidden(verbose=False):
        os.write(2, everything.encode())
    assert capfd.readouterr().err == "".join(kept)
    with output.native_logs_hidden(verbose=True):
        os.write(2, everything.encode())
    assert capfd.readouterr().err == everything
    os.write(2, b"after\n")  # descriptor 2 is the real stderr again
    assert capfd.readouterr().err == "after\n"


def test_native_logs_captured_before_an_error_keep_the_rest(capfd):
    with pytest.raises(ImportError), output.native_logs_hidden(verbose=False):
        os.write(2, (TF_STARTUP[1] + "a real complaint\n").encode())
        raise ImportError("no tensorflow")
    assert capfd.readouterr().err == "a real complaint\n"
