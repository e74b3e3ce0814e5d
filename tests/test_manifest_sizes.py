"""A manifest at scale (``tljob.data.manifest``): the optional ``size`` column skips the
``HEAD`` of every row, counted at the one filesystem seam the product uses on a real
SeaweedFS (``storage.location``'s S3 filesystem, wrapped); a listing with sizes plans as one
that looked at the same objects; bad sizes are refused naming the file, row, column, value
and rule; and the driver's peak memory listing, planning, deduplicating and splitting 200,000
rows stays within the 1 GB at 1M rows aim (a subprocess's ``VmHWM``). No Ray. Speed is
measured in ``benchmarks/scale.py``, not here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import write_digits_tree

from tljob import storage
from tljob.config import load_config
from tljob.data.listing import DataError
from tljob.data.plan import plan_data
from tljob.data.sources import list_manifest
from tljob.errors import UserError
from tljob.storage import location
from tljob.storage.settings import current_settings

ROWS = 1_000_000


class _Counting(pafs.FileSystemHandler):
    """An S3 filesystem that records every path it is asked about (one HEAD each)."""

    def __init__(self, fs: pafs.FileSystem) -> None:
        self.fs, self.looked_at = fs, []

    def get_file_info(self, paths):
        self.looked_at += list(paths)
        return self.fs.get_file_info(paths)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_append_stream(self, path, metadata):
        raise NotImplementedError

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other


@pytest.fixture
def heads(s3, monkeypatch) -> _Counting:
    """Every ``s3://`` uri of this test resolves to a filesystem that counts lookups."""
    storage.resolve(s3.uri("x"))  # builds the real one
    settings = current_settings()
    counting = _Counting(location._filesystems[settings])
    monkeypatch.setitem(location._filesystems, settings, pafs.PyFileSystem(counting))
    return counting


def test_a_million_row_manifest_with_sizes_is_listed_without_a_head(s3, heads):
    rows = "".join(f"img/c{i % 10}/{i:07d}.jpg,c{i % 10},{100 + i % 1000}\n" for i in range(ROWS))
    storage.write_text(storage.resolve(s3.uri("t", "m.csv")), "uri,label,size\n" + rows)
    heads.looked_at.clear()
    listing = list_manifest(s3.uri("t", "m.csv"))
    assert heads.looked_at == [f"{s3.bucket}/t/m.csv"]  # the manifest itself, no object
    assert listing.count() == ROWS and not listing.quarantined
    assert {name: len(files) for name, files in listing.files.items()} == {
        f"c{k}": ROWS // 10 for k in range(10)
    }
    third = s3.uri("t/img/c3/0000003.jpg")
    assert listing.files["c3"][:2] == [third, s3.uri("t/img/c3/0000013.jpg")]
    assert listing.stats[third] == (103, -1)


def _job(source: str, tmp_path: Path):
    return load_config(
        None,
        [
            f"data.source={source}",
            "model.weights=none",
            "data.val_fraction=0.25",
            f"run.storage_path={tmp_path / 'runs'}",
        ],
    )


def test_a_manifest_with_sizes_plans_as_one_whose_objects_were_looked_at(s3, heads, tmp_path):
    tree = write_digits_tree(tmp_path / "digits", classes=2, per_class=4)
    lines, sizes = [], {}
    for path in sorted(tree.rglob("*.png")):
        key = f"t/{path.parent.name}/{path.name}"
        storage.write_bytes(storage.resolve(s3.uri(key)), path.read_bytes())
        lines.append(f"{path.parent.name}/{path.name},{path.parent.name}")
        sizes[lines[-1]] = path.stat().st_size
    plain = "uri,label\n" + "".join(f"{line}\n" for line in lines)
    sized = "uri,label,size\n" + "".join(f"{line},{sizes[line]}\n" for line in lines)
    # half the rows with a size: only the others are looked at
    mixed = "uri,label,size\n" + "".join(
        f"{line},{sizes[line] if i % 2 else ''}\n" for i, line in enumerate(lines)
    )
    plans, looked = {}, {}
    for name, text in [("plain", plain), ("sized", sized), ("mixed", mixed)]:
        storage.write_text(storage.resolve(s3.uri("t", f"{name}.csv")), text)
        heads.looked_at.clear()
        job = _job(s3.uri("t", f"{name}.csv"), tmp_path)
        plans[name] = plan_data(job, _listing(s3, name), batches=False)
        looked[name] = len(heads.looked_at) - 1  # the manifest itself
    assert looked == {"plain": 8, "sized": 0, "mixed": 4}
    for name in ("sized", "mixed"):
        assert plans[name].fingerprint == plans["plain"].fingerprint
        assert (plans[name].train, plans[name].val) == (plans["plain"].train, plans["plain"].val)
        assert plans[name].listing.stats == plans["plain"].listing.stats
    assert sorted(plans["plain"].listing.stats.values()) == sorted((s, -1) for s in sizes.values())


def _listing(s3, name: str):
    return list_manifest(s3.uri("t", f"{name}.csv"))


@pytest.mark.parametrize(
    ("value", "row"),
    [("1.5", 2), ("-3", 2), ("12kB", 2), ("1e3", 2), ("99999999999999999999", 2)],
)
def test_a_size_that_is_not_a_whole_number_of_bytes_is_refused_naming_the_row(tmp_path, value, row):
    (tmp_path / "a.png").write_bytes(b"x")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,label,size\na.png,a,1\nb.png,b,{value}\nc.png,c,\n")
    with pytest.raises(DataError) as err:
        list_manifest(str(manifest))
    assert isinstance(err.value, UserError)  # exit 2
    assert str(err.value) == (
        f"`data.source` ({str(manifest)!r}): row {row}, column `size`: {value!r} is not a size "
        "in bytes: write the object's size as a whole number >= 0 (what a HEAD request or an "
        "object listing gives), or leave it empty to have the object looked at"
    )


def test_a_parquet_manifests_integer_sizes_are_checked_and_counted(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"xyz")
    manifest = tmp_path / "m.parquet"
    table = {"uri": ["a.png", "b.png", "c.png", "gone.png"], "label": ["a", "b", "b", "a"]}
    pq.write_table(pa.table({**table, "size": pa.array([3, -1, 3, 5])}), manifest)
    with pytest.raises(DataError, match=r"row 2, column `size`: '-1' is not a size in bytes"):
        list_manifest(str(manifest))
    pq.write_table(pa.table({**table, "size": pa.array([3, None, 3, 5])}), manifest)
    listing = list_manifest(str(manifest))
    # in = out + set aside: the row with a size is trusted (its read will tell), the row
    # without one was looked at
    assert listing.listed() == 4 and listing.count() == 4 and not listing.quarantined
    assert listing.stats[str(tmp_path / "b.png")] == (3, -1)
    assert listing.stats[str(tmp_path / "gone.png")] == (5, -1)


# The driver's peak memory: 1 GiB at 1M rows, less what does not grow with the rows (the
# interpreter, imports and pyarrow's start: measured after listing a 1,000-row manifest,
# 160 MiB on the development machine), scales to this at 200k rows.
PEAK_ROWS = 200_000
PEAK_GROWTH_MB = (1024 - 160) * PEAK_ROWS / ROWS

_PEAK_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from tljob.config import load_config
    from tljob.data.listing import ImageScan, check_listing
    from tljob.data.plan import plan_data
    from tljob.data.sources import list_source

    def peak_mb():
        return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024

    small = load_config(None, [f"data.source={sys.argv[2]}", "model.weights=none"])
    plan_data(small, list_source(small.data), batches=False)
    job = load_config(None, [f"data.source={sys.argv[1]}", "model.weights=none"])
    base = peak_mb()
    listing = list_source(job.data)
    plan = plan_data(job, listing, batches=False)
    uris = [u for name in listing.classes for u in listing.files[name]]
    scans = {u: ImageScan(f"{i:064x}", "") for i, u in enumerate(uris)}
    del uris
    usable = check_listing(listing, scans).usable
    first = usable.classes[0]
    usable.files[first] = usable.files[first][1:]  # so the split is made again
    split = plan.split_for(usable)
    print(json.dumps({"base": base, "peak": peak_mb(), "train": len(split.train)}))
    """
)


def test_the_drivers_peak_memory_on_200k_rows_fits_1_gb_at_1m(tmp_path):
    rows = "".join(
        f"s3://scale/img/c{i % 100:02d}/{i:07d}.jpg,c{i % 100},{1000 + i % 5000}\n"
        for i in range(PEAK_ROWS)
    )
    manifest, small = tmp_path / "m.csv", tmp_path / "small.csv"
    manifest.write_text("uri,label,size\n" + rows)
    small.write_text("uri,label,size\n" + "".join(rows.splitlines(keepends=True)[:1000]))
    child = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, str(manifest), str(small)],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(child.stdout)
    assert got["train"] == PEAK_ROWS - 1 - int(0.2 * PEAK_ROWS)  # val 20%, one image less
    assert got["peak"] - got["base"] <= PEAK_GROWTH_MB, got
