"""The .pth reader against crafted files: every tensor's extent checked against its storage
before any view (no process memory read out, no crash), sizes checked before anything is
inflated or allocated (zip entries, legacy counts, the pickle itself), and every malformed
or truncated file refused with one clear ``CheckpointError`` line, exit 2 from the CLI.
The files are written here with the standard library (tests/pth_files.py); no torch."""

from __future__ import annotations

import ast
import collections
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from pth_files import (
    Call,
    Global,
    RawEntry,
    deflated_zeros,
    dumps,
    storage,
    tensor,
    write_legacy,
    write_raw_zip,
    write_zip,
)

from tljob.cli import main
from tljob.zoo.convert.pth import CheckpointError, read_state_dict

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
VALUES = np.arange(20, dtype=np.float32) * 0.5


def one_tensor_zip(path: Path, offset, size, stride, numel: int = 20, raw: bytes = b"") -> Path:
    state = collections.OrderedDict(w=tensor(storage("0", numel), offset, size, stride))
    return write_zip(path, state, {"0": raw or VALUES[:numel].tobytes()})


def small_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """A valid zip and legacy .pth: a tensor, its strided view at an offset, an int64 scalar."""
    files = {}
    for fmt in ("zip", "legacy"):
        floats = storage("0", 20, legacy=fmt == "legacy")
        count = storage("1", 1, "LongStorage", legacy=fmt == "legacy")
        state = collections.OrderedDict(
            w=tensor(floats, 0, (3, 4), (4, 1)),
            w_t=tensor(floats, 8, (3, 4), (1, 3)),
            steps=tensor(count, 0, (), ()),
        )
        steps = np.array([1431430], dtype=np.int64).tobytes()
        path = tmp_path / f"small_{fmt}.pth"
        if fmt == "zip":
            write_zip(path, state, {"0": VALUES.tobytes(), "1": steps})
        else:
            write_legacy(path, state, [("0", 20, VALUES.tobytes()), ("1", 1, steps)])
        files[fmt] = path
    return files


def test_the_crafted_files_helper_writes_readable_checkpoints(tmp_path):
    for path in small_checkpoints(tmp_path).values():
        got = read_state_dict(path)
        assert list(got) == ["w", "w_t", "steps"]
        assert np.array_equal(got["w"], VALUES[:12].reshape(3, 4))
        assert np.array_equal(got["w_t"], VALUES[8:20].reshape(4, 3).T)
        assert got["steps"] == 1431430 and got["steps"].dtype == np.int64


# --- item 2: a tensor's extent against its storage -------------------------------------------


def test_a_tensor_reaching_past_its_storage_is_refused_naming_it(tmp_path, capsys):
    # 409,600 floats claimed over a storage of one float: the old reader returned the
    # process's heap as the kernel, exit 0
    path = one_tensor_zip(tmp_path / "oob.pth", 0, (640, 640), (640, 1), numel=1)
    expected = (
        f"{path}: tensor 'w' (offset 0, sizes (640, 640), strides (640, 1)): it reaches "
        "element 409599 of storage '0', which holds 1 elements;"
    )
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(expected)
    out = tmp_path / "oob.weights.h5"
    rc = main(["weights", "import", "mobilenet_v2_tv", str(path), "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert capsys.readouterr().err.startswith(f"tljob: error: {expected}")


BIG = 2**62
OUT_OF_BOUNDS = {
    # name: (offset, size, stride, storage elements, what the message says)
    "one past the end": (
        8,
        (3, 4),
        (4, 1),
        19,
        "it reaches element 19 of storage '0', which holds 19",
    ),
    "offset past the end": (
        20,
        (1,),
        (1,),
        20,
        "it reaches element 20 of storage '0', which holds 20",
    ),
    "strided past the end": (
        0,
        (4, 4),
        (1, 5),
        18,
        "it reaches element 18 of storage '0', which holds 18",
    ),
    "huge stride": (0, (2,), (BIG,), 20, f"it reaches element {BIG} of storage '0'"),
    "sizes whose product overflows int64": (
        0,
        (2**32, 2**32, 2),
        (0, 0, 0),
        20,
        "36893488147419103232 elements from a storage of 20",
    ),
    "negative size": (0, (-1, 4), (4, 1), 20, "negative size, stride or offset"),
    "negative stride": (19, (4,), (-1,), 20, "negative size, stride or offset"),
    "negative offset": (-4, (4,), (1,), 20, "negative size, stride or offset"),
    "a value beyond int64": (0, (2**64,), (0,), 20, "a value beyond int64"),
    "float offset": (1.5, (4,), (1,), 20, "a size, stride or offset that is not an integer"),
    "string size": (0, ("4",), (1,), 20, "a size, stride or offset that is not an integer"),
    "size is not a sequence": (0, 4, (1,), 20, "sizes and strides must be tuples"),
    "fewer strides than sizes": (0, (2, 2), (1,), 20, "2 sizes but 1 strides"),
    "40 dimensions": (0, (1,) * 40, (1,) * 40, 20, "40 dimensions, more than 32"),
    "empty tensor past the end": (
        21,
        (0,),
        (1,),
        20,
        "an empty tensor at offset 21 of storage '0', which holds 20",
    ),
    "zero stride repeating one element": (
        0,
        (1000,),
        (0,),
        20,
        "1000 elements from a storage of 20",
    ),
}


@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS))
def test_every_tensor_extent_is_checked_before_any_view(tmp_path, case):
    offset, size, stride, numel, message = OUT_OF_BOUNDS[case]
    path = one_tensor_zip(tmp_path / "t.pth", offset, size, stride, numel=numel)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(f"{path}: tensor 'w' ("), str(err.value)
    assert message in str(err.value)


def test_the_last_element_of_a_storage_and_an_empty_tensor_at_its_end_are_read(tmp_path):
    state = collections.OrderedDict(
        tail=tensor(storage("0", 20), 19, (1,), (1,)),
        empty=tensor(storage("0", 20), 20, (0, 3), (3, 1)),
        column=tensor(storage("0", 20), 3, (4,), (4,)),
    )
    got = read_state_dict(write_zip(tmp_path / "edge.pth", state, {"0": VALUES.tobytes()}))
    assert got["tail"].tolist() == [9.5]
    assert got["empty"].shape == (0, 3) and got["empty"].dtype == np.float32
    assert got["column"].tolist() == [1.5, 3.5, 5.5, 7.5]


def test_random_extents_read_exactly_their_elements_or_are_refused(tmp_path):
    """Offsets, sizes and strides drawn at random over 20 floats: what reads gives the
    elements torch would (storage[offset + sum(index * stride)]); what reaches past the
    storage, or repeats more elements than it holds, is refused."""
    rng = np.random.default_rng(18)
    read = refused = 0
    for i in range(300):
        ndim = int(rng.integers(0, 4))
        size = tuple(int(n) for n in rng.integers(0, 6, ndim))
        stride = tuple(int(s) for s in rng.integers(0, 8, ndim))
        offset = int(rng.integers(0, 22))
        grids = np.meshgrid(*(np.arange(n) for n in size), indexing="ij") if ndim else []
        index = offset + sum(
            (g * s for g, s in zip(grids, stride, strict=True)), np.zeros(size, int)
        )
        # an empty tensor may sit at the storage's end; others must not repeat elements
        fits = offset <= 20 if index.size == 0 else index.max() < 20 and index.size <= 20
        path = one_tensor_zip(tmp_path / f"r{i}.pth", offset, size, stride)
        if fits:
            got = read_state_dict(path)["w"]
            assert got.shape == size and np.array_equal(got, VALUES[index]), (offset, size, stride)
            read += 1
        else:
            with pytest.raises(CheckpointError, match=r": tensor 'w' \(offset "):
                read_state_dict(path)
            refused += 1
    assert read > 60 and refused > 60, (read, refused)


def test_a_storage_declared_with_two_types_or_sizes_is_refused(tmp_path):
    as_float, as_long = storage("0", 4), storage("0", 4, "LongStorage")
    state = collections.OrderedDict(
        a=tensor(as_float, 0, (4,), (1,)), b=tensor(as_long, 0, (2,), (1,))
    )
    path = write_zip(tmp_path / "types.pth", state, {"0": VALUES[:4].tobytes()})
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(
        f"{path}: storage '0' is declared as FloatStorage of 4 elements and again as "
        "LongStorage of 4 elements;"
    )


def test_a_storage_entry_sized_for_another_dtype_is_refused(tmp_path):
    # the pickle says 4 int64 (32 bytes), the entry holds 4 floats (16 bytes)
    state = collections.OrderedDict(n=tensor(storage("0", 4, "LongStorage"), 0, (4,), (1,)))
    path = write_zip(tmp_path / "dtype.pth", state, {"0": VALUES[:4].tobytes()})
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(
        f"{path}: storage '0' (tensor 'n'): its zip entry archive/data/0 holds 16 bytes, but "
        "4 LongStorage elements take 32;"
    )


def test_a_pickle_cannot_change_a_storage_after_it_is_declared(tmp_path):
    # BUILD on the storage object (a dict state) would set its size past what was checked
    pid = storage("0", 1)
    body = bytearray(b"\x80\x02")
    body += dumps(collections.OrderedDict(w=tensor(pid, 0, (1,), (1,))))[2:-1]  # the dict
    body += dumps(pid)[2:-1] + dumps({"numel": 10**6})[2:-1] + b"b0."  # BUILD, POP, STOP
    path = write_zip(tmp_path / "build.pth", None, {"0": VALUES[:1].tobytes()}, bytes(body))
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert "sets the state of a tensor, storage or function object" in str(err.value)


# --- item 3: sizes checked before anything is inflated or allocated ---------------------------

MEMORY_PROBE = """
import resource, sys, tracemalloc
from tljob.zoo.convert.pth import CheckpointError, read_state_dict
tracemalloc.start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    tracemalloc.reset_peak()
    try:
        said = f"read {sorted(read_state_dict(path).items())[:1]}"
    except CheckpointError as e:
        said = str(e)
    print(repr(said), tracemalloc.get_traced_memory()[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def read_in_a_subprocess(*paths: Path) -> tuple[list[tuple[str, int]], int]:
    """What reading each of ``paths`` said (one after the other, in a fresh process) with
    its peak traced allocation, and the process's RSS growth over them all (bytes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    *lines, grown = proc.stdout.strip().splitlines()
    results = []
    for line in lines:
        said, peak = line.rsplit(" ", 1)
        results.append((ast.literal_eval(said), int(peak)))
    return results, int(grown)


def pickled(state) -> RawEntry:
    data = dumps(state)
    return RawEntry("archive/data.pkl", data, len(data))


def one_float_state(numel: int = 1):
    return collections.OrderedDict(w=tensor(storage("0", numel), 0, (1,), (1,)))


def bomb_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Small files that claim GBs, each with the start of the message refusing it."""
    zeros = deflated_zeros(2048)  # 2 GiB of zeros in about 2 MB
    files = {}

    path = tmp_path / "entry_bomb.pth"  # the entry inflates to 2 GiB, the tensor needs 4 bytes
    write_raw_zip(
        path, [pickled(one_float_state()), RawEntry("archive/data/0", zeros, 2 * GIB, 8, 0)]
    )
    files["zip entry larger than its storage"] = (
        path,
        f"{path}: storage '0' (tensor 'w'): its zip entry archive/data/0 holds 2147483648 "
        "bytes, but 1 FloatStorage elements take 4;",
    )

    path = tmp_path / "agreed_bomb.pth"  # pickle and header agree on 2 GiB, in a 2 MB file
    entries = [pickled(one_float_state(GIB // 2)), RawEntry("archive/data/0", zeros, 2 * GIB, 8, 0)]
    write_raw_zip(path, entries)
    files["storages far larger than the file"] = (
        path,
        f"{path}: its storages would inflate to 2147483648 bytes, more than 4 times the "
        f"file's {path.stat().st_size} bytes;",
    )

    path = tmp_path / "big_pickle.pth"  # data.pkl itself inflates to 2 GiB
    write_raw_zip(path, [RawEntry("archive/data.pkl", zeros, 2 * GIB, 8, 0)])
    files["a pickle of 2 GiB"] = (
        path,
        f"{path}: archive/data.pkl holds 2147483648 bytes, more than the 16 MiB a state "
        "dict's pickle may take;",
    )

    path = tmp_path / "memo_bomb.pth"  # 9 bytes of pickle asking for a 256 MiB memo table
    memo = b"\x80\x02N" + b"r" + (1 << 24).to_bytes(4, "little") + b"."
    write_raw_zip(path, [RawEntry("archive/data.pkl", memo, len(memo))])
    files["a memo index far past the entries stored"] = (
        path,
        f"{path}: its pickle stores memo entry 16777216 after 0 entries;",
    )

    path = tmp_path / "set_bomb.pth"  # 1 MiB of protocol-4 pickle making 250 MiB of sets
    sets = b"\x80\x04](" + b"\x8f" * (1 << 20) + b"e."
    write_raw_zip(path, [RawEntry("archive/data.pkl", sets, len(sets))])
    files["a million empty sets"] = (
        path,
        f"{path}: its pickle uses the opcode EMPTY_SET, which torch.save never writes;",
    )

    path = tmp_path / "views_bomb.pth"  # 2,000 full views of one 1 MiB storage: 2 GiB out
    numel = 1 << 18
    pid = storage("0", numel)
    state = collections.OrderedDict((f"w{i}", tensor(pid, 0, (numel,), (1,))) for i in range(2000))
    write_zip(path, state, {"0": bytes(numel * 4)})
    files["2,000 views of one storage"] = (
        path,
        f"{path}: its 2000 tensors hold 524288000 elements, more than 2 times the 262144 "
        "elements of the storages they view;",
    )

    path = tmp_path / "legacy_count.pth"  # a legacy count of 2^28 floats in a small file
    state = collections.OrderedDict(w=tensor(storage("0", 1 << 28, legacy=True), 0, (1,), (1,)))
    write_legacy(path, state, [("0", 1 << 28, VALUES.tobytes())])
    files["a legacy count past the end of the file"] = (
        path,
        f"{path}: storage '0' (tensor 'w'): its 268435456 elements take 1073741824 bytes, "
        "but the file has 80 left (truncated?);",
    )
    return files


def test_files_claiming_gigabytes_are_refused_before_any_large_allocation(tmp_path):
    cases = bomb_files(tmp_path)
    assert all(path.stat().st_size < 3_000_000 for path, _ in cases.values())
    results, grown = read_in_a_subprocess(*(path for path, _ in cases.values()))
    for (case, (_, message)), (said, peak) in zip(cases.items(), results, strict=True):
        assert said.startswith(message) and "\n" not in said, (case, said)
        assert peak < 48 << 20, (case, peak)
    assert grown < 64 << 20, grown


def test_an_entry_declaring_its_true_size_is_read_without_inflating_what_follows(tmp_path):
    # the headers say 4 bytes (the storage's one float); the deflate stream goes on for 2 GiB
    path = tmp_path / "tail.pth"
    entry = RawEntry("archive/data/0", deflated_zeros(2048), 4, 8, zlib.crc32(bytes(4)))
    write_raw_zip(path, [pickled(one_float_state()), entry])
    [(said, peak)], grown = read_in_a_subprocess(path)
    assert said == "read [('w', array([0.], dtype=float32))]"
    assert peak < 48 << 20 and grown < 64 << 20, (peak, grown)


# --- item 7: malformed and truncated files: one clear line, exit 2 ---------------------------


def legacy_with_count(path: Path, pickle_numel: int, file_count: int) -> Path:
    state = collections.OrderedDict(
        w=tensor(storage("0", pickle_numel, legacy=True), 0, (1,), (1,))
    )
    return write_legacy(path, state, [("0", file_count, VALUES[:1].tobytes())])


@pytest.mark.parametrize("pickle_numel", [1, 2**61])
def test_a_legacy_count_of_2_to_the_61_exits_2_with_one_line(tmp_path, pickle_numel):
    path = legacy_with_count(tmp_path / "count.pth", pickle_numel, 2**61)
    out = tmp_path / "count.weights.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tljob.cli", "weights", "import", "mobilenet_v2_tv", str(path)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    if pickle_numel == 1:
        problem = "the file gives it 2305843009213693952 elements, its pickle 1;"
    else:
        problem = (
            "its 2305843009213693952 elements take 9223372036854775808 bytes, but the file "
            "has 4 left (truncated?);"
        )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"tljob: error: {path}: storage '0' (tensor 'w'): {problem}")
    assert not out.exists()


@pytest.mark.parametrize("keep", [0.5, 0.95, -22, 30])
def test_a_truncated_zip_is_called_a_truncated_or_corrupt_zip(tmp_path, keep):
    path = small_checkpoints(tmp_path)["zip"]
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(f"{path}: a truncated or corrupt zip archive ("), str(
        err.value
    )


def test_a_truncated_legacy_file_says_so(tmp_path):
    path = small_checkpoints(tmp_path)["legacy"]
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(
        f"{path}: storage '1' (tensor 'steps'): its 1 elements take 8 bytes, but the file "
        "has 6 left (truncated?);"
    )


def test_legacy_headers_torch_would_refuse_are_refused(tmp_path):
    path = tmp_path / "big_endian.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": False}):
            f.write(dumps(header))
    with pytest.raises(CheckpointError, match="big-endian"):
        read_state_dict(path)


def test_a_pickle_of_other_calls_is_still_refused_by_name(tmp_path):
    state = collections.OrderedDict(w=Call(Global("os", "system"), ("true",)))
    path = write_zip(tmp_path / "evil.pth", state, {})
    with pytest.raises(CheckpointError, match="refused to load the Python global os.system"):
        read_state_dict(path)


def mutations(data: bytes, rng: random.Random, count: int):
    for _ in range(count):
        mutated = bytearray(data)
        kind = rng.randrange(3)
        if kind == 0:  # flip a few bytes
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        elif kind == 1:  # an extreme integer somewhere
            at = rng.randrange(len(mutated) - 8)
            mutated[at : at + 8] = rng.choice([b"\xff" * 8, b"\x7f" * 8, b"\x00" * 7 + b"\x80"])
        else:  # cut
            del mutated[rng.randrange(len(mutated)) :]
        yield bytes(mutated)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_fuzzed_files_give_a_state_dict_or_a_checkpoint_error(tmp_path, fmt):
    path = small_checkpoints(tmp_path)[fmt]
    data, rng = path.read_bytes(), random.Random(18)
    target = tmp_path / "fuzzed.pth"
    outcomes = collections.Counter()
    cases = list(mutations(data, rng, 500)) + [data[:n] for n in range(len(data))]
    for mutated in cases:
        target.write_bytes(mutated)
        try:
            got = read_state_dict(target)
        except CheckpointError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{target}: ")
            outcomes["refused"] += 1
        else:
            assert all(isinstance(v, np.ndarray) or np.isscalar(v) for v in got.values())
            outcomes["read"] += 1
    assert outcomes["refused"] > len(cases) // 2, outcomes
