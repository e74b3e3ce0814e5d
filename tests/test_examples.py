"""The examples in examples/ as users read them, without Ray: every job validates with
the settings its comments describe, the sweep loads, the manifest names the images of the
tree `tljob demo` writes, and examples/README.md gives each one's command. (They run end
to end in test_examples_run.py and test_examples_token_auth.py.)"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from example_checkout import DEMO_TREE, EXAMPLES

from tljob.config import load_config
from tljob.config.sweep import load_sweep
from tljob.demo import CLASS_NAMES, DEBIAN_FASHION_MNIST, load_fashion_mnist

DEMO_FOLDER = "fashion-mnist-600"
README = (EXAMPLES / "README.md").read_text()
GROUPS = {
    "tops": ["t-shirt_top", "pullover", "coat", "shirt"],
    "bottoms": ["trouser"],
    "dress": ["dress"],
    "footwear": ["sandal", "sneaker", "ankle_boot"],
    "bag": ["bag"],
}


def test_examples_holds_the_five_examples_the_readme_lists():
    assert sorted(p.name for p in EXAMPLES.iterdir()) == [
        "README.md",
        "augmented.yaml",
        "fashion-mnist-groups.csv",
        "local_folder.yaml",
        "manifest.yaml",
        "s3.yaml",
        "sweep.yaml",
    ]


# example -> (data.source, run.name, run.storage_path, augmented)
JOB_FACTS = {
    "local_folder": (DEMO_TREE, "fashion-local-folder", "tljob-runs", False),
    "manifest": (
        "examples/fashion-mnist-groups.csv",
        "fashion-manifest-groups",
        "tljob-runs",
        False,
    ),
    "augmented": (DEMO_TREE, "fashion-augmented", "tljob-runs", True),
    "s3": (
        f"s3://my-bucket/datasets/{DEMO_FOLDER}",
        "fashion-s3",
        "s3://my-bucket/tljob-runs",
        False,
    ),
}


@pytest.mark.parametrize("name", JOB_FACTS)
def test_every_example_job_validates_as_its_comments_say(name):
    source, run_name, storage_path, augmented = JOB_FACTS[name]
    job = load_config(EXAMPLES / f"{name}.yaml")
    assert (job.data.source, job.run.name, job.run.storage_path) == (source, run_name, storage_path)
    # CPU jobs for a 2-core machine: 2 workers of half a CPU, one CPU left for Ray Data
    assert (job.scaling.num_workers, job.scaling.use_gpu) == (2, False)
    assert (job.scaling.cpus_per_worker, job.scaling.data_cpus) == (0.5, 1.0)
    # torchvision's ImageNet MobileNetV2: weights from an installed package, no download
    assert (job.model.backbone, str(job.model.weights), job.image_size) == (
        "mobilenet_v2_tv",
        "imagenet",
        96,
    )
    # the classic recipe: the head on the frozen backbone, then part of the backbone with it
    assert [(s.name, s.trainable.kind) for s in job.train.stages] == [
        ("head", "head"),
        ("fine_tune", "top_blocks" if name == "local_folder" else "top"),
    ]
    assert job.augment.active is augmented


def test_the_augmented_example_is_the_light_preset_with_its_own_options():
    augment = load_config(EXAMPLES / "augmented.yaml").augment
    assert (augment.preset, augment.where, augment.horizontal_flip) == ("light", "data", True)
    crop = augment.random_resized_crop
    assert (crop.enabled, tuple(crop.scale)) == (True, (0.6, 1.0))
    assert (augment.rotation_range, tuple(augment.brightness_range)) == (10.0, (0.8, 1.2))
    stage = load_config(EXAMPLES / "augmented.yaml").train.stages[1]
    assert (stage.schedule.kind, stage.schedule.warmup_epochs, stage.epochs) == ("cosine", 1, 10)


def test_the_s3_example_names_a_store_and_no_credential():
    job = load_config(EXAMPLES / "s3.yaml")
    assert (job.s3.endpoint_url, job.s3.addressing_style, job.s3.allow_http) == (
        "http://127.0.0.1:9000",
        "path",
        True,
    )


def test_the_sweep_example_is_six_trials_two_at_a_time_on_two_cores():
    from tljob.tune.plan import max_concurrent

    sweep = load_sweep(EXAMPLES / "sweep.yaml")
    assert sweep.trial_count() == 6
    assert sweep.path_list() == [
        "train.stages.0.learning_rate",
        "train.stages.1.learning_rate",
        "model.head.dropout",
    ]
    assert [(s.kind, tuple(s.bounds)) for s in sweep.search.values()] == [
        ("loguniform", (1e-3, 1e-2)),
        ("loguniform", (5e-5, 1e-3)),
        ("uniform", (0.0, 0.5)),
    ]
    assert (sweep.tune.scheduler, sweep.tune.grace_period, sweep.mode) == ("asha", 3, "max")
    assert sweep.job.data.max_images_per_class == 300
    assert max_concurrent(sweep, {"CPU": 2.0}) == 2  # what its scaling comment promises


def test_the_manifest_names_the_first_50_images_of_every_class_of_the_demo_tree():
    """Every row is an image `tljob demo` writes (the first 600 of each class, named by
    their index in the training set), labelled with its class's group."""
    assert Path(DEBIAN_FASHION_MNIST).is_dir(), "apt-get install dataset-fashion-mnist"
    _, labels = load_fashion_mnist(DEBIAN_FASHION_MNIST)
    with open(EXAMPLES / "fashion-mnist-groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    group_of = {c: group for group, classes in GROUPS.items() for c in classes}
    expected = []
    for label, name in enumerate(CLASS_NAMES):
        first = np.flatnonzero(labels == label)[:50]
        assert len(np.flatnonzero(labels == label)[:600]) == 600  # all inside the demo tree
        expected += [
            {"uri": f"../tljob-demo/fashion-mnist-600/{name}/{i:05d}.png", "label": group_of[name]}
            for i in first
        ]
    assert sorted(rows, key=lambda r: r["uri"]) == sorted(expected, key=lambda r: r["uri"])
    assert Counter(r["label"] for r in rows) == {
        "tops": 200,
        "footwear": 150,
        "bottoms": 50,
        "dress": 50,
        "bag": 50,
    }
    job = load_config(EXAMPLES / "manifest.yaml")
    assert job.data.classes == list(GROUPS)
    assert (job.train.class_weight, job.train.best_metric) == ("balanced", "val_macro_f1")


def test_the_readme_gives_every_example_its_command():
    commands = {
        "local_folder": "tljob train --config examples/local_folder.yaml",
        "manifest": "tljob train --config examples/manifest.yaml",
        "augmented": "tljob train --config examples/augmented.yaml",
        "sweep": "tljob tune --config examples/sweep.yaml",
        "s3": "tljob train --config examples/s3.yaml",
    }
    for name, command in commands.items():
        assert f"`{command}`" in README, name
        assert f"#   {command}" in (EXAMPLES / f"{name}.yaml").read_text(), name
    assert (
        "ray job submit --address http://127.0.0.1:8265 -- python ray_jobs/tune.py "
        "--config examples/sweep.yaml" in README
    )
    # every file the README names exists
    for path in re.findall(r"examples/[\w.-]+\.(?:yaml|csv)", README):
        assert (EXAMPLES.parent / path).is_file(), path
