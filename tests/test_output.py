"""tljob's output: its own lines through logging, and Ray's forwarded chatter filtered."""

from __future__ import annotations

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
