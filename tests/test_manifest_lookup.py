"""A big manifest without a ``size`` column has its objects looked at in Ray tasks, not on
the driver (``tljob.data.lookup``, plugged in by ``tljob.run.job.plan_checked``), with the
listing and the plan the driver would have made itself; on the session's Ray, with the
thresholds lowered to test size."""

from __future__ import annotations

from conftest import write_digits_tree

from tljob.config import load_config
from tljob.data import lookup, sources
from tljob.run.job import plan_checked


def test_a_big_unsized_manifests_objects_are_looked_at_in_ray_tasks(
    tmp_path, ray_connected, monkeypatch
):
    images = write_digits_tree(tmp_path / "img", classes=3, per_class=10)
    rows = [f"{p},{p.parent.name}" for p in sorted(images.rglob("*.png"))]
    rows += [f"{images / 'digit_0' / 'gone.png'},digit_0", f"{images / 'digit_1'},digit_1"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\n" + "\n".join(rows) + "\n")  # 32 rows, no size
    job = load_config(None, [f"data.source={manifest}", "model.weights=none", "train.batch_size=2"])

    looked_here: list[str] = []
    stat_objects = sources.stat_objects

    def counted(uris):
        uris = list(uris)
        looked_here.extend(uris)
        return stat_objects(uris)

    monkeypatch.setattr(sources, "stat_objects", counted)  # this process only
    on_driver = plan_checked(job)  # 32 rows to look at: under the threshold, here
    assert len(looked_here) == 32
    looked_here.clear()

    monkeypatch.setattr(sources, "CLUSTER_LOOKUP_ROWS", 10)
    monkeypatch.setattr(lookup, "TASK_ROWS", 8)  # 4 tasks
    on_ray = plan_checked(job)
    assert looked_here == []  # every HEAD (here: stat) made in the Ray tasks
    listing, expected = on_ray.listing, on_driver.listing
    assert listing.files == expected.files and listing.count() == 30
    assert dict(listing.stats) == dict(expected.stats)
    assert [f["reason"].split(":")[0] for f in listing.quarantined] == [
        "missing_object",
        "is_a_directory",
    ]
    assert listing.quarantined == expected.quarantined
    assert on_ray.fingerprint == on_driver.fingerprint
