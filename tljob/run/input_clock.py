"""The Keras end of the input wait (``tljob.run.input_wait``): a callback that times every
training step and opens the streamed training epochs' gate."""

from __future__ import annotations

from typing import Any

from tljob.nn.keras import tf_keras
from tljob.run.input_wait import InputClock


class InputWaitCallback(tf_keras.callbacks.Callback):
    """Drives ``clock`` from ``fit``: a new ``fit`` (new iterator), each epoch's start (the
    streamed epoch may start), each step's start and end (the logs are read at every step's
    end, so it ends when its work is done), and the ``fit``'s end (the stream ends)."""

    def __init__(self, clock: InputClock) -> None:
        super().__init__()
        self.clock = clock

    def on_train_begin(self, logs: Any = None) -> None:
        self.clock.fit_begins()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.clock.epoch_begins()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.clock.step_begins()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.clock.step_ends()

    def on_train_end(self, logs: Any = None) -> None:
        self.clock.gate.close()
