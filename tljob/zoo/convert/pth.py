"""Reading a PyTorch ``.pth`` checkpoint (a state dict of tensors) without torch.

Two formats exist. Since torch 1.6 a ``.pth`` is a zip: ``<prefix>/data.pkl`` is a pickle
whose tensors refer, through ``persistent_load``, to storages stored raw in
``<prefix>/data/<key>``. Older files (torchvision's ``mobilenet_v2-b0353104.pth``) are the
legacy format: five pickles in a row (magic number, protocol version, system info, the
object, the list of storage keys), then each storage raw, as an int64 element count
followed by its bytes, in the order of that list.

A pickle can call any Python function it names, so the unpickler here resolves only the
globals that rebuilding tensors needs (``torch._utils._rebuild_tensor_v2`` and friends,
``torch.*Storage`` types, ``collections.OrderedDict``) to harmless local stand-ins, and
refuses every other global with ``UnsafeCheckpointError`` naming it, before anything is
called.

A crafted file must not cost memory out of proportion to its size nor read past a buffer,
so everything is checked before it is allocated: the pickle's size, opcode count and memo
indices (``tljob.zoo.convert.pth_pickle``); every tensor's offset, sizes and strides
against its storage's element count; every storage's size against its zip entry or legacy
count and against the file's size. Only then are exactly the bytes the tensors need read,
in bounded chunks. Anything malformed is a ``CheckpointError`` of one line. Pure: numpy and
the standard library.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tljob.zoo.convert.pth_pickle import (
    INT64_LIMIT,
    MAX_PICKLE_BYTES,
    MAX_PICKLE_OPCODES,
    STORAGE_DTYPES,
    CheckpointError,
    Malformed,
    Storage,
    TensorRef,
    UnsafeCheckpointError,
    plain,
    short,
    unpickle,
)

__all__ = [
    "LEGACY_MAGIC",
    "STORAGE_DTYPES",
    "CheckpointError",
    "UnsafeCheckpointError",
    "read_state_dict",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch.save stores storages uncompressed; a compressed archive may hold this many times
# its own size (float weights deflate to ~0.9x, zero-heavy ones further)
MAX_INFLATION = 4
# tensors may repeat their storages' elements this many times in all (tied weights: 2x)
MAX_VIEW_EXPANSION = 2
MAX_DIMS = 32
_CHUNK = 1 << 20
_RESAVE = "download it again, or save it again with torch.save(model.state_dict(), path)"
# what reading a malformed file can raise, from pickle, zipfile, numpy and our conversions
_DECODE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    MemoryError,
    RecursionError,
    NotImplementedError,
    struct.error,
    OSError,
)
# what zipfile raises for a damaged archive: bad headers, offsets, CRCs, deflate streams
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, struct.error)


def _said(error: BaseException) -> str:
    """An exception's message on one bounded line."""
    return " ".join(str(error).split())[:200] or type(error).__name__


def _check_tensor(name: str, tensor: TensorRef) -> int:
    """The element count of ``tensor``, once its offset, sizes and strides are int64
    integers that keep every element inside its storage; raises ``Malformed`` naming it."""
    offset, size, stride, held = tensor.offset, tensor.size, tensor.stride, tensor.storage.numel
    key = short(tensor.storage.key)

    def bad(problem: str) -> Malformed:
        return Malformed(
            f"tensor {short(name)} (offset {short(offset)}, sizes {short(size)}, strides "
            f"{short(stride)}): {problem}"
        )

    if not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise bad("sizes and strides must be tuples")
    values = (offset, *size, *stride)
    if any(type(v) is not int for v in values):
        raise bad("a size, stride or offset that is not an integer")
    if min(values) < 0:
        raise bad("negative size, stride or offset")
    if max(values) >= INT64_LIMIT:
        raise bad("a value beyond int64")
    if len(size) != len(stride):
        raise bad(f"{len(size)} sizes but {len(stride)} strides")
    if len(size) > MAX_DIMS:
        raise bad(f"{len(size)} dimensions, more than {MAX_DIMS}")
    numel = math.prod(size)
    if numel == 0:
        if offset > held:
            raise bad(f"an empty tensor at offset {offset} of storage {key}, which holds {held}")
        return 0
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= held:
        raise bad(f"it reaches element {last} of storage {key}, which holds {held} elements")
    if numel > held:
        raise bad(f"{numel} elements from a storage of {held}: it repeats elements (a zero stride)")
    return numel


def _state_tensors(obj: Any) -> dict[str, TensorRef]:
    """The state dict's tensors by name, each checked against its storage, and their total
    against the storages they view; nothing has been allocated for them yet."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise Malformed(f"holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, TensorRef)}
    if not tensors:
        raise Malformed("the state dict holds no tensors")
    for name in tensors:
        if not isinstance(name, str):
            raise Malformed(f"a tensor's name is a {type(name).__name__} ({short(name)}), not text")
    total = sum(_check_tensor(name, t) for name, t in tensors.items())
    viewed = {id(t.storage): t.storage.numel for t in tensors.values()}
    if total > MAX_VIEW_EXPANSION * sum(viewed.values()):
        raise Malformed(
            f"its {len(tensors)} tensors hold {total} elements, more than "
            f"{MAX_VIEW_EXPANSION} times the {sum(viewed.values())} elements of the storages "
            "they view"
        )
    return tensors


def _describe(storage: Storage, tensors: dict[str, TensorRef]) -> str:
    user = next((name for name, t in tensors.items() if t.storage is storage), None)
    return f"storage {short(storage.key)}" + (f" (tensor {short(user)})" if user else "")


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> np.ndarray:
    """Exactly ``size`` bytes of a zip entry (the size its headers state), inflated in
    bounded chunks: refused when it yields fewer, or more."""
    if info.flag_bits & 0x1:
        raise Malformed(f"zip entry {plain(info.filename)} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise Malformed(
            f"zip entry {plain(info.filename)} is compressed with method {info.compress_type}; "
            "torch.save stores entries uncompressed"
        )
    buffer = np.empty(size, dtype=np.uint8)
    view, got = memoryview(buffer), 0
    try:
        with archive.open(info) as f:
            while got < size:
                chunk = f.read(min(_CHUNK, size - got))
                if not chunk:
                    break
                view[got : got + len(chunk)] = chunk
                got += len(chunk)
            more = f.read(1)
    except _ZIP_ERRORS as e:
        raise Malformed(f"a truncated or corrupt zip archive ({_said(e)})") from e
    if got < size:
        raise Malformed(f"zip entry {plain(info.filename)} ends after {got} of its {size} bytes")
    if more:
        raise Malformed(f"zip entry {plain(info.filename)} holds more than its stated {size} bytes")
    return buffer


def _read_zip(path: Path, file_size: int) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except (*_ZIP_ERRORS, ValueError) as e:  # ValueError: a name that is not UTF-8
        raise Malformed(f"a truncated or corrupt zip archive ({_said(e)})") from e
    with archive:
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            if infos.setdefault(info.filename, info) is not info:
                raise Malformed(f"the zip holds two entries named {plain(info.filename)}")
        pickles = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise Malformed(
                f"a zip with {len(pickles)} data.pkl entries is not a PyTorch checkpoint"
            )
        pkl = infos[pickles[0]]
        prefix = pkl.filename[: -len("data.pkl")]
        if pkl.file_size > MAX_PICKLE_BYTES:
            raise Malformed(
                f"{plain(pkl.filename)} holds {pkl.file_size} bytes, more than the "
                f"{MAX_PICKLE_BYTES >> 20} MiB a state dict's pickle may take"
            )
        order = infos.get(f"{prefix}byteorder")  # written by torch >= 2.1
        if order is not None and (
            order.file_size > 16
            or _read_entry(archive, order, order.file_size).tobytes() != b"little"
        ):
            raise Malformed("its tensors are stored big-endian, which this reader does not convert")
        storages: dict[str, Storage] = {}
        stream = io.BytesIO(_read_entry(archive, pkl, pkl.file_size).tobytes())
        obj, _ = unpickle(stream, str(path), storages, MAX_PICKLE_OPCODES)
        del stream
        tensors = _state_tensors(obj)
        entries = {}
        for key, storage in storages.items():
            name = f"{prefix}data/{key}"
            info = entries[key] = infos.get(name)
            if info is None:
                raise Malformed(
                    f"{_describe(storage, tensors)}: its zip entry {plain(name)} is missing"
                )
            if info.file_size != storage.nbytes:
                raise Malformed(
                    f"{_describe(storage, tensors)}: its zip entry {plain(name)} holds "
                    f"{info.file_size} bytes, but {storage.numel} {storage.type.name} elements "
                    f"take {storage.nbytes}"
                )
        inflated = sum(storage.nbytes for storage in storages.values())
        if inflated > MAX_INFLATION * file_size:
            raise Malformed(
                f"its storages would inflate to {inflated} bytes, more than {MAX_INFLATION} times "
                f"the file's {file_size} bytes; torch.save stores them uncompressed, so this is a "
                "zip bomb or a damaged file"
            )
        for storage in {id(t.storage): t.storage for t in tensors.values()}.values():
            storage.fill(_read_entry(archive, entries[storage.key], storage.nbytes))
    return {name: t.array() for name, t in tensors.items()}


def _read_legacy(path: Path, file_size: int) -> dict[str, np.ndarray]:
    source = str(path)
    with open(path, "rb") as f:
        # the pickles come first and are small: read them from a bounded copy of the start
        head = io.BytesIO(f.read(min(file_size, MAX_PICKLE_BYTES)))
        storages: dict[str, Storage] = {}
        try:
            magic, opcodes_left = unpickle(head, source, storages, MAX_PICKLE_OPCODES)
        except CheckpointError:
            raise
        except (Malformed, *_DECODE_ERRORS):
            magic = None
        if type(magic) is not int or magic != LEGACY_MAGIC:
            raise Malformed("not a PyTorch checkpoint (neither a zip nor a legacy .pth)")
        try:
            version, opcodes_left = unpickle(head, source, storages, opcodes_left)
            if version != LEGACY_PROTOCOL:
                raise Malformed(f"a legacy .pth of protocol {short(version)}, not 1001")
            system, opcodes_left = unpickle(head, source, storages, opcodes_left)
            if not isinstance(system, dict) or system.get("little_endian") is not True:
                raise Malformed(
                    "its header does not say its tensors are little-endian (big-endian "
                    f"storages are not converted): {short(system)}"
                )
            obj, opcodes_left = unpickle(head, source, storages, opcodes_left)
            keys, _ = unpickle(head, source, storages, opcodes_left)
        except (Malformed, *_DECODE_ERRORS) as e:
            if file_size > MAX_PICKLE_BYTES:
                raise Malformed(
                    f"its pickles do not end within the first {MAX_PICKLE_BYTES >> 20} MiB, far "
                    f"more than a state dict's need ({e})"
                ) from e
            raise
        storages_at = head.tell()
        del head
        if not isinstance(keys, list) or any(type(k) not in (str, int) for k in keys):
            raise Malformed(f"its list of storages is {short(keys)}, not a list of keys")
        keys = [str(k) for k in keys]
        if len(set(keys)) != len(keys) or set(keys) != set(storages):
            raise Malformed(
                f"its list of storages ({short(keys)}) does not name each storage its tensors "
                f"use ({short(sorted(storages))}) once"
            )
        tensors = _state_tensors(obj)
        needed = {t.storage.key for t in tensors.values()}
        f.seek(storages_at)
        for key in keys:
            storage = storages[key]
            raw = f.read(8)
            if len(raw) < 8:
                raise Malformed(f"{_describe(storage, tensors)}: the file ends before its size")
            count = int.from_bytes(raw, "little", signed=True)
            if count != storage.numel:
                raise Malformed(
                    f"{_describe(storage, tensors)}: the file gives it {count} elements, its "
                    f"pickle {storage.numel}"
                )
            left = file_size - f.tell()
            if storage.nbytes > left:
                raise Malformed(
                    f"{_describe(storage, tensors)}: its {storage.numel} elements take "
                    f"{storage.nbytes} bytes, but the file has {left} left (truncated?)"
                )
            if key not in needed:
                f.seek(storage.nbytes, io.SEEK_CUR)
                continue
            buffer = np.empty(storage.nbytes, dtype=np.uint8)
            if f.readinto(memoryview(buffer)) != storage.nbytes:
                raise Malformed(f"{_describe(storage, tensors)}: the file ends inside it")
            storage.fill(buffer)
    return {name: t.array() for name, t in tensors.items()}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pth`` state dict, by name, as numpy arrays (in the file's order).

    Raises ``UnsafeCheckpointError`` when the pickle names any global other than tensor
    rebuilding (nothing it names is called), ``CheckpointError`` (one line, naming the
    file, and the tensor or storage at fault) for anything else that is not a readable
    state dict: a truncated or corrupt file, a tensor reaching outside its storage, sizes
    that disagree, or a file that would take far more memory than its size."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            start = f.read(4)
        if not start:
            raise Malformed("an empty file, not a PyTorch checkpoint")
        # a zip .pth starts with a zip entry, as torch itself checks; a truncated one has
        # no directory at its end, so zipfile.is_zipfile would call it a legacy file
        if start.startswith(b"PK"):
            return _read_zip(path, file_size)
        return _read_legacy(path, file_size)
    except CheckpointError:
        raise
    except Malformed as e:
        raise CheckpointError(f"{source}: {e}; {_RESAVE}") from e
    except _DECODE_ERRORS as e:
        raise CheckpointError(
            f"{source}: not a readable PyTorch checkpoint ({type(e).__name__}: {_said(e)}); "
            + _RESAVE
        ) from e
