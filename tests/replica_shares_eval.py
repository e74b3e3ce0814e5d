"""Validation of one model on 2 replicas and on 1, as a worker feeds it; run by
``test_replica_shares.py`` in a process of its own (logical devices must be set up before
TensorFlow starts). Prints one JSON line per row count given on the command line.

The model is tljob's ``mobilenet_v2_tv`` for 3 classes at 64 px (random weights, the
same on both). Each dataset is ``tljob.run.feed.in_memory_val`` with global batches of
``BATCH`` x 2; a replica's share of each batch is recorded as Keras' distribution splits it.
The labels make the 1-replica prediction right exactly for the rows ``i % 3 == 0`` and
the last row, wrong for every other row.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SIZE, CLASSES, BATCH = 64, 3, 4


def two_cpu_replicas() -> tf.distribute.Strategy:
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def main(row_counts: list[int]) -> None:
    strategy = two_cpu_replicas()

    from tljob.config import StageSection, load_config
    from tljob.nn import model as nn_model
    from tljob.run import feed

    cfg = load_config(
        None,
        [
            "data.source=x",
            "model.backbone=mobilenet_v2_tv",
            "model.weights=imagenet",
            f"data.image_size={SIZE}",
        ],
    )
    stage = StageSection(name="head", epochs=1, learning_rate=1e-3)
    with strategy.scope():
        two = nn_model.build_model(cfg.model, CLASSES, SIZE)
        nn_model.compile_stage(two, stage, steps_per_epoch=1)
    one = nn_model.build_model(cfg.model, CLASSES, SIZE)
    one.set_weights(two.get_weights())
    nn_model.compile_stage(one, stage, steps_per_epoch=1)

    rng = np.random.default_rng(0)
    for rows in row_counts:
        images = rng.integers(0, 256, (rows, SIZE, SIZE, 3), dtype=np.uint8)
        predicted = one.predict_on_batch(images).argmax(axis=1)
        right = (np.arange(rows) % 3 == 0) | (np.arange(rows) == rows - 1)
        labels = np.where(right, predicted, (predicted + 1) % CLASSES).astype(np.int64)
        arrays = (images, labels)
        shares = [
            [int(t.shape[0]) for t in strategy.experimental_local_results(batch_images)]
            for batch_images, _ in strategy.experimental_distribute_dataset(
                feed.in_memory_val(arrays, BATCH * 2)
            )
        ]
        metrics = {
            name: net.evaluate(feed.in_memory_val(arrays, BATCH * 2), verbose=0, return_dict=True)
            for name, net in (("two", two), ("one", one))
        }
        print(
            json.dumps(
                {
                    "rows": rows,
                    "right": int(right.sum()),
                    "shares": shares,
                    **{
                        name: {k: np.asarray(v).tolist() for k, v in m.items()}
                        for name, m in metrics.items()
                    },
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]])
