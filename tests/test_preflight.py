"""Preflight checks: cluster resources, waiting for an autoscaler, worker memory, images per
batch. No Ray here: the checks are pure functions of the config and of plain numbers. The
backbone registry's sizes are checked against real (tiny) tf_keras models."""

from __future__ import annotations

import pytest

from tljob import preflight
from tljob.config import ConfigError, load_config
from tljob.errors import UserError
from tljob.preflight import (
    GIB,
    ClusterTooSmallError,
    Node,
    ResourceWaitTimeoutError,
    TooFewImagesError,
    WorkerMemoryError,
    check_batches,
    check_memory,
    check_resources,
    estimate_worker_memory,
    missing_resources,
    nodes_from_ray,
    resource_request,
    wait_for_resources,
)


def job(*overrides: str):
    return load_config(None, ["data.source=/x", *overrides])


def scaling(*overrides: str):
    return job(*(f"scaling.{o}" for o in overrides)).scaling


TWO_CPUS = [Node("127.0.0.1", cpus=2.0, memory_bytes=24 * GIB)]


def test_every_preflight_error_is_a_user_error():
    for cls in (ClusterTooSmallError, ResourceWaitTimeoutError, WorkerMemoryError):
        assert issubclass(cls, preflight.PreflightError)
    assert issubclass(TooFewImagesError, UserError)
    assert issubclass(ResourceWaitTimeoutError, ClusterTooSmallError)


# --- cluster resources ------------------------------------------------------------------------


def test_eight_workers_on_two_cpus_can_never_fit():
    s = scaling("num_workers=8")
    assert missing_resources(s, TWO_CPUS) == [
        "the nodes have room for 4 of the 8 workers (`scaling.num_workers`), at 0.5 CPU each "
        "on one node",
        "CPUs: 8 workers (`scaling.num_workers`) × 0.5 (`scaling.cpus_per_worker`) + 1 left "
        "for Ray Data to decode images (`scaling.data_cpus`) = 5 CPUs, the cluster has 2",
    ]
    with pytest.raises(ClusterTooSmallError) as err:
        check_resources(s, TWO_CPUS)
    message = str(err.value)
    assert message.startswith("the Ray cluster can never run this job (Ray would wait for the ")
    assert "Cluster: 1 node, 2 CPUs (127.0.0.1: 2 CPU)." in message
    assert "It fits this cluster with `scaling.num_workers: 2`, or " in message
    assert "`scaling.cpus_per_worker: 0.12`" in message  # 8 x 0.12 + 1 <= 2
    assert "set `scaling.resource_wait_seconds`" in message


def test_two_whole_cpu_workers_leave_nothing_for_ray_data():
    s = scaling("num_workers=2", "cpus_per_worker=1")
    assert missing_resources(s, TWO_CPUS) == [
        "CPUs: 2 workers (`scaling.num_workers`) × 1 (`scaling.cpus_per_worker`) + 1 left "
        "for Ray Data to decode images (`scaling.data_cpus`) = 3 CPUs, the cluster has 2"
    ]
    with pytest.raises(ClusterTooSmallError) as err:
        check_resources(s, TWO_CPUS)
    assert (
        "It fits this cluster with `scaling.num_workers: 1`, or `scaling.cpus_per_worker: 0.5`;"
        in str(err.value)
    )


def test_two_half_cpu_workers_fit_two_cpus():
    s = scaling("num_workers=2", "cpus_per_worker=0.5")
    assert missing_resources(s, TWO_CPUS) == []
    check_resources(s, TWO_CPUS)  # no error


def test_data_cpus_is_what_is_left_unreserved():
    s = scaling("num_workers=2", "cpus_per_worker=0.75")  # leaves 0.5 of 2
    assert missing_resources(s, TWO_CPUS)
    assert (
        missing_resources(
            scaling("num_workers=2", "cpus_per_worker=0.75", "data_cpus=0.5"), TWO_CPUS
        )
        == []
    )
    with pytest.raises(ClusterTooSmallError) as err:
        check_resources(s, TWO_CPUS)
    assert "`scaling.data_cpus: 0.5` (fewer CPUs to decode images: slower input)" in str(err.value)


def test_fractional_cpus_add_up_exactly():
    # 3 x 0.1 + 0.7 is 1.0000000000000002 in floating point; Ray counts in 1/10000 units.
    s = scaling("num_workers=3", "cpus_per_worker=0.1", "data_cpus=0.7")
    assert missing_resources(s, [Node("n", cpus=1.0)]) == []


def test_a_worker_bigger_than_any_node():
    nodes = [Node("10.0.0.1", cpus=2.0), Node("10.0.0.2", cpus=3.0)]
    s = scaling("num_workers=1", "cpus_per_worker=4", "data_cpus=0")  # 5 CPUs in total
    assert missing_resources(s, nodes) == [
        "no node can hold one worker: a worker needs 4 CPU on one node "
        "(`scaling.cpus_per_worker` 4), the largest node has 3 CPUs"
    ]
    with pytest.raises(ClusterTooSmallError) as err:
        check_resources(s, nodes)
    assert "Cluster: 2 nodes, 5 CPUs (10.0.0.1: 2 CPU; 10.0.0.2: 3 CPU)." in str(err.value)
    assert "It fits this cluster with `scaling.cpus_per_worker: 4`" not in str(err.value)


def test_workers_do_not_span_nodes():
    # 4 CPUs in total, but each 1.5-CPU worker needs one node: 2 x 1.5 on two 2-CPU nodes.
    nodes = [Node("a", cpus=2.0), Node("b", cpus=2.0)]
    assert (
        missing_resources(scaling("num_workers=2", "cpus_per_worker=1.5", "data_cpus=0"), nodes)
        == []
    )
    assert missing_resources(
        scaling("num_workers=3", "cpus_per_worker=1.2", "data_cpus=0"), nodes
    ) == [
        "the nodes have room for 2 of the 3 workers (`scaling.num_workers`), at 1.2 CPU each "
        "on one node"
    ]


def test_gpu_asked_on_a_cpu_only_cluster():
    s = scaling("use_gpu=true")
    assert missing_resources(s, TWO_CPUS) == [
        "no node can hold one worker: a worker needs 0.5 CPU + 1 GPU on one node "
        "(`scaling.cpus_per_worker` 0.5, `scaling.gpus_per_worker` 1), the largest node has "
        "2 CPUs and 0 GPUs",
        "GPUs: 2 workers × 1 (`scaling.gpus_per_worker`) = 2 GPUs, the cluster has 0 "
        "(set `scaling.use_gpu: false` to train on CPUs)",
    ]
    with pytest.raises(ClusterTooSmallError) as err:
        check_resources(s, TWO_CPUS)
    assert "It fits this cluster with `scaling.use_gpu: false`;" in str(err.value)


def test_gpus_fit_one_worker_per_gpu():
    nodes = [Node("g1", cpus=8, gpus=1), Node("g2", cpus=8, gpus=1)]
    assert missing_resources(scaling("use_gpu=true", "cpus_per_worker=2"), nodes) == []
    assert missing_resources(scaling("use_gpu=true", "num_workers=3"), nodes) == [
        "the nodes have room for 2 of the 3 workers (`scaling.num_workers`), at 0.5 CPU + "
        "1 GPU each on one node",
        "GPUs: 3 workers × 1 (`scaling.gpus_per_worker`) = 3 GPUs, the cluster has 2",
    ]


def test_no_alive_nodes():
    assert missing_resources(scaling(), []) == ["the cluster has no alive nodes"]


def test_nodes_from_ray_keeps_alive_nodes_and_their_totals():
    ray_nodes = [
        {
            "NodeID": "aa11",
            "Alive": True,
            "NodeManagerAddress": "10.0.0.1",
            "Resources": {
                "CPU": 2.0,
                "memory": 17179869184.0,
                "object_store_memory": 2147483648.0,
                "node:10.0.0.1": 1.0,
            },
        },
        {"NodeID": "bb22", "Alive": False, "NodeManagerAddress": "10.0.0.2", "Resources": {}},
        {
            "NodeID": "cc33",
            "Alive": True,
            "NodeManagerAddress": "10.0.0.3",
            "Resources": {"CPU": 8.0, "GPU": 1.0},
        },
    ]
    assert nodes_from_ray(ray_nodes) == [
        Node("10.0.0.1", cpus=2.0, gpus=0.0, memory_bytes=16 * GIB),
        Node("10.0.0.3", cpus=8.0, gpus=1.0, memory_bytes=None),
    ]


def test_resource_request_for_the_autoscaler():
    assert resource_request(scaling("num_workers=2", "cpus_per_worker=0.5")) == [
        {"CPU": 0.5},
        {"CPU": 0.5},
        {"CPU": 1.0},
    ]
    assert resource_request(scaling("use_gpu=true", "num_workers=1", "data_cpus=0")) == [
        {"CPU": 0.5, "GPU": 1.0}
    ]


# --- waiting for nodes ------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_returns_once_the_cluster_has_grown():
    time = FakeTime()
    grown = [Node("head", cpus=2.0), Node("worker", cpus=4.0)]
    snapshots = iter([[Node("head", cpus=2.0)], [Node("head", cpus=2.0)], grown])
    said: list[str] = []
    nodes = wait_for_resources(
        scaling("num_workers=4", "cpus_per_worker=1", "resource_wait_seconds=300"),
        lambda: next(snapshots),
        clock=time.clock,
        sleep=time.sleep,
        poll_seconds=10,
        say=said.append,
    )
    assert nodes == grown
    assert time.sleeps == [10, 10]  # fitted on the third look, after 2 polls
    assert len(said) == 1 and said[0].startswith("waiting up to 300 s for the cluster to grow:")


def test_wait_gives_up_after_the_timeout_naming_what_is_missing():
    time = FakeTime()
    looks = []

    def snapshot():
        looks.append(time.now)
        return TWO_CPUS

    with pytest.raises(ResourceWaitTimeoutError) as err:
        wait_for_resources(
            scaling("num_workers=8", "resource_wait_seconds=45"),
            snapshot,
            clock=time.clock,
            sleep=time.sleep,
            poll_seconds=10,
        )
    assert time.sleeps == [10, 10, 10, 10, 5]  # never past the deadline
    assert time.now == 1045.0 and len(looks) == 6
    message = str(err.value)
    assert message.startswith(
        "waited 45 s (`scaling.resource_wait_seconds`) for the Ray cluster to grow, but it "
        "still cannot run this job: the nodes have room for 4 of the 8 workers"
    )
    assert "= 5 CPUs, the cluster has 2" in message
    assert "It fits this cluster with `scaling.num_workers: 2`" in message


def test_no_wait_on_a_fixed_cluster():
    time = FakeTime()
    with pytest.raises(ClusterTooSmallError) as err:
        wait_for_resources(
            scaling("num_workers=8"), lambda: TWO_CPUS, clock=time.clock, sleep=time.sleep
        )
    assert not isinstance(err.value, ResourceWaitTimeoutError)
    assert str(err.value).startswith("the Ray cluster can never run this job")
    assert time.sleeps == []
    assert wait_for_resources(scaling(), lambda: TWO_CPUS, sleep=time.sleep) == TWO_CPUS


# --- memory --------------------------------------------------------------------------------


def test_default_worker_memory_estimate_exactly():
    # mobilenet_v2 at 224, batch 32, 2 workers, a 2-class head
    estimate = estimate_worker_memory("mobilenet_v2", 224, 32, 2, num_classes=2)
    assert estimate.parameters == (2_257_984 + 1281 * 2) * 4 * 4
    assert estimate.activations == round(32 * 224 * 224 * 434.7) * 4
    assert estimate.input_batches == 64 * 224 * 224 * 3 * (1 + 4)
    assert estimate.runtime == GIB // 2
    assert check_memory(job(), TWO_CPUS) == estimate  # fits 24 GiB, twice
    assert 2 * estimate.total < 24 * GIB


def test_the_worker_cache_holds_its_share_of_the_images_up_to_its_size():
    # 10,000 images at 224 px over 2 workers: 5,000 * 150,528 bytes = 0.70 GiB < 1 GiB
    cached = estimate_worker_memory("mobilenet_v2", 224, 32, 2, images=10_000, cache_mib=1024)
    plain = estimate_worker_memory("mobilenet_v2", 224, 32, 2)
    assert cached.data_cache == 5_000 * 224 * 224 * 3
    assert cached.total - plain.total == cached.data_cache
    assert "its images held in memory 0.70 GiB" in cached.describe()
    big = estimate_worker_memory("mobilenet_v2", 224, 32, 2, images=100_000, cache_mib=1024)
    assert big.data_cache == 1024 * 2**20  # the cache's limit
    none = estimate_worker_memory("mobilenet_v2", 224, 32, 2, images=100_000, cache_mib=0)
    assert none.data_cache == 0
    # the job's setting is what the preflight uses: 16 GiB nodes hold 2 workers without
    # the cache and refuse them once each may hold 8 GiB of images
    node = [Node("n", cpus=2.0, memory_bytes=16 * GIB)]
    check_memory(job(), node, images=1_000_000)
    with pytest.raises(WorkerMemoryError, match="its images held in memory 8.00 GiB"):
        check_memory(job("scaling.worker_cache_mib=8192"), node, images=1_000_000)


def test_head_and_gpu_change_the_estimate():
    base = estimate_worker_memory("resnet50", 224, 16, 1, num_classes=10)
    hidden = estimate_worker_memory("resnet50", 224, 16, 1, num_classes=10, dense_units=[256])
    assert hidden.parameters - base.parameters == ((2049 * 256 + 257 * 10) - 2049 * 10) * 16
    on_gpu = estimate_worker_memory("resnet50", 224, 16, 1, num_classes=10, use_gpu=True)
    assert on_gpu.activations == 0 and on_gpu.parameters == base.parameters


def test_image_size_10000_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match=r"`data.image_size` \(10000\)"):
        job("data.image_size=10000")


def test_a_size_within_the_schema_that_a_small_node_cannot_hold():
    small = [Node("small", cpus=2.0, memory_bytes=8 * GIB)]
    with pytest.raises(WorkerMemoryError) as err:
        check_memory(job("data.image_size=512"), small)
    message = str(err.value)
    assert message.startswith(
        "the workers would run out of memory: at `data.image_size` 512, `train.batch_size` 32 "
        "and `scaling.num_workers` 2, a mobilenet_v2 worker needs about 14.4 GiB "
        "(model parameters 0.03 GiB, activations for backprop 13.58 GiB, input batches "
        "0.23 GiB, TensorFlow runtime 0.50 GiB). Ray can place 2 workers on node small (by "
        "its CPUs), which has 8.0 GiB of Ray `memory`: 28.7 GiB needed"
    )
    assert message.endswith(
        "Lower `data.image_size`, `train.batch_size` or `scaling.num_workers`. Any one of "
        "these fits: `data.image_size` <= 256, or `train.batch_size` <= 8."
    )
    # ...and the suggestions are right at the edge
    check_memory(job("data.image_size=256"), small)
    check_memory(job("data.image_size=512", "train.batch_size=8"), small)
    with pytest.raises(WorkerMemoryError):
        check_memory(job("data.image_size=257"), small)
    with pytest.raises(WorkerMemoryError):
        check_memory(job("data.image_size=512", "train.batch_size=9"), small)


def test_the_largest_size_in_the_schema_does_not_fit_24_gib():
    with pytest.raises(WorkerMemoryError) as err:
        check_memory(job("data.image_size=1024"), TWO_CPUS)
    assert "needs about 55.8 GiB" in str(err.value)
    assert "111.6 GiB needed" in str(err.value)


def test_memory_is_shared_by_the_workers_placed_on_a_node():
    one_node = [Node("big", cpus=2.0, memory_bytes=4 * GIB)]
    two_nodes = [
        Node("a", cpus=1.0, memory_bytes=4 * GIB),
        Node("b", cpus=1.0, memory_bytes=4 * GIB),
    ]
    config = job("scaling.cpus_per_worker=1", "scaling.data_cpus=0")
    check_memory(config, two_nodes)  # one ~3.2 GiB worker per 4 GiB node
    with pytest.raises(WorkerMemoryError) as err:
        check_memory(config, one_node)
    assert "Ray can place 2 workers on node big (by its CPUs), which has 4.0 GiB" in str(err.value)
    assert "`scaling.num_workers` <= 1" in str(err.value)
    check_memory(config, [Node("unknown", cpus=2.0)])  # no `memory` figure: not judged


# The backbone registry's sizes are checked against the real networks, one test per
# backbone, in test_zoo.py (test_registry_figures_equal_the_real_network).


# --- images per batch ----------------------------------------------------------------------


def test_24_images_cannot_fill_a_batch_of_32():
    with pytest.raises(TooFewImagesError) as err:
        check_batches(24, 6, 32, 1)
    assert str(err.value) == (
        "too few training images for one step: 24 training images over 1 worker "
        "(`scaling.num_workers`) give each worker 24, fewer than one batch of "
        "`train.batch_size` (32) images (the last partial batch is dropped), so an epoch "
        "would have no steps. Use `train.batch_size` <= 24, or more training images."
    )
    check_batches(24, 6, 24, 1)  # the suggestion works


@pytest.mark.parametrize(
    ("train_images", "fits"),
    [(64, True), (65, True), (63, False), (40, False)],
)
def test_two_workers_need_a_batch_each(train_images, fits):
    # 2 workers, batch 32: each worker's train_images // 2 must reach 32 (batches are per
    # replica: no longer 32 x 2 = 64, tljob.run.feed)
    if fits:
        check_batches(train_images, 2, 32, 2)
        return
    with pytest.raises(TooFewImagesError) as err:
        check_batches(train_images, 2, 32, 2)
    per_worker = train_images // 2
    assert (
        f"{train_images} training images over 2 workers (`scaling.num_workers`) give each "
        f"worker {per_worker}, fewer than one batch of `train.batch_size` (32) images"
        in str(err.value)
    )
    assert f"Use `train.batch_size` <= {per_worker}, or `scaling.num_workers` <= 1" in str(
        err.value
    )
    check_batches(train_images, 2, per_worker, 2)  # the largest batch that works


def test_when_no_batch_size_works():
    with pytest.raises(TooFewImagesError) as err:
        check_batches(1, 6, 32, 2)
    assert str(err.value).endswith(
        "so an epoch would have no steps. No `train.batch_size` works with 2 workers. "
        "Use more training images."
    )


def test_every_worker_needs_a_validation_image():
    check_batches(128, 2, 32, 2)
    with pytest.raises(TooFewImagesError) as err:
        check_batches(128, 1, 32, 2)
    assert str(err.value) == (
        "too few validation images: 1 for 2 workers (`scaling.num_workers`); the validation "
        "set is split evenly, so each worker gets 0 and would validate on nothing. Use "
        "`scaling.num_workers` <= 1, or a larger `data.val_fraction`, or more images."
    )
    with pytest.raises(TooFewImagesError, match="too few validation images: 0 for 1 worker "):
        check_batches(64, 0, 32, 1)
