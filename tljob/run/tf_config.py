"""tljob's Ray Train backend: ``TF_CONFIG`` on every worker, for MultiWorkerMirroredStrategy.

Why not Ray's ``TensorflowTrainer``/``TensorflowConfig``: the package that holds them,
``ray.train.tensorflow``, imports TensorFlow in its ``__init__``. The driver builds the
trainer and Ray Train's controller actor unpickles its backend config, so both paid a
TensorFlow import (several CPU-seconds and hundreds of MB each) for nothing: only the
workers train. ``tljob.run.driver`` launches Ray Train's ``DataParallelTrainer`` with
``MultiWorkerTFConfig`` instead, and neither this module nor the train function's
(``train_fn_per_worker`` below) imports TensorFlow; the workers import it when they run.

The effect on the workers is that of Ray's TensorFlow backend: before the train function
runs, worker ``i`` of ``n`` gets ``TF_CONFIG`` naming all ``n`` workers' ``host:port`` in
rank order with itself as task ``i``, and ``TF_USE_LEGACY_KERAS=1``. A restarted worker
group gets it anew (``on_start`` runs at every group start).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig
from ray.util import get_node_ip_address

TF_CONFIG_ENV = "TF_CONFIG"


def tf_config(worker_addresses: list[str], index: int) -> dict[str, Any]:
    """The ``TF_CONFIG`` of worker ``index``: every worker's address, in rank order."""
    return {
        "cluster": {"worker": list(worker_addresses)},
        "task": {"type": "worker", "index": index},
    }


def _worker_address() -> str:
    """``host:port`` of this worker for TensorFlow's collectives: its node's IP and a port
    free right now (TensorFlow binds it when the strategy is made, moments later)."""
    host = get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    os.environ[TF_CONFIG_ENV] = json.dumps(tf_config(worker_addresses, index))
    # tf.keras is Keras 2 (tf_keras) on the workers, as under Ray's own backend
    os.environ["TF_USE_LEGACY_KERAS"] = "1"


class _MultiWorkerTFBackend(Backend):
    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        addresses = worker_group.execute(_worker_address)
        ray.get(
            [
                worker_group.execute_single_async(i, _set_tf_config, addresses, i)
                for i in range(len(worker_group))
            ]
        )


@dataclass
class MultiWorkerTFConfig(BackendConfig):
    """The ``backend_config`` of tljob's ``DataParallelTrainer``: sets ``TF_CONFIG`` (and
    ``TF_USE_LEGACY_KERAS=1``) on every worker of each worker group before training."""

    @property
    def backend_cls(self) -> type[Backend]:
        return _MultiWorkerTFBackend


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """The trainer's train function: ``tljob.run.worker.train_fn_per_worker``, imported
    here on the worker so that pickling a reference to it imports no TensorFlow."""
    from tljob.run import worker

    worker.train_fn_per_worker(config)
