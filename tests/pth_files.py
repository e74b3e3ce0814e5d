"""PyTorch ``.pth`` files written with the standard library, honest or crafted, for the
reader's tests (torch is not installed).

``dumps`` is a tiny protocol-2 pickle writer that emits what ``torch.save`` emits: globals
by name (``Global``), calls (``Call``: the REDUCE of torch's ``_rebuild_tensor_v2``) and
persistent ids (``PersistentId``: a tensor's storage), with any values in them, including
the ones torch never writes. ``write_zip``/``write_legacy`` pack a state dict in the two
``.pth`` formats; ``write_raw_zip`` writes a zip whose headers state any sizes and method.
"""

from __future__ import annotations

import collections
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


class Global(NamedTuple):
    module: str
    name: str


class Call(NamedTuple):
    func: Any
    args: tuple


class PersistentId(NamedTuple):
    pid: tuple


REBUILD_TENSOR = Global("torch._utils", "_rebuild_tensor_v2")
ORDERED_DICT = Global("collections", "OrderedDict")


def storage(key: str, numel: int, kind: str = "FloatStorage", legacy: bool = False):
    """The persistent id torch writes for a storage (the legacy format adds view metadata)."""
    pid = ("storage", Global("torch", kind), key, "cpu", numel)
    return PersistentId((*pid, None) if legacy else pid)


def tensor(pid: PersistentId, offset: Any, size: Any, stride: Any) -> Call:
    hooks = collections.OrderedDict()
    return Call(REBUILD_TENSOR, (pid, offset, size, stride, False, hooks))


def dumps(obj: Any, protocol: int = 2) -> bytes:
    out = bytearray(b"\x80" + bytes([protocol]))
    _emit(obj, out)
    return bytes(out + b".")


def _emit(obj: Any, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        if -(2**31) <= obj < 2**31:
            out += b"J" + struct.pack("<i", obj)  # BININT
        else:
            n = (obj.bit_length() + 8) // 8  # LONG1: little-endian two's complement
            out += b"\x8a" + bytes([n]) + obj.to_bytes(n, "little", signed=True)
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        out += b"X" + struct.pack("<I", len(data)) + data
    elif isinstance(obj, Global):
        out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
    elif isinstance(obj, Call):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, PersistentId):
        _emit(tuple(obj.pid), out)
        out += b"Q"  # BINPERSID
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _emit(item, out)
        out += b"e"
    elif isinstance(obj, dict):
        if isinstance(obj, collections.OrderedDict):
            _emit(Call(ORDERED_DICT, ()), out)
        else:
            out += b"}"
        out += b"("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    else:
        raise TypeError(f"cannot emit {type(obj).__name__}")


def write_zip(path: Path, state: Any, storages: dict[str, bytes], pickled: bytes = b"") -> Path:
    """A zip ``.pth`` as torch.save writes it (entries stored uncompressed)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled or dumps(state))
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
    return path


def write_legacy(path: Path, state: Any, storages: list[tuple[str, int, bytes]]) -> Path:
    """A legacy ``.pth``: five pickles, then each storage as (int64 count, bytes)."""
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}, state):
            f.write(dumps(header))
        f.write(dumps([key for key, _, _ in storages]))
        for _key, count, raw in storages:
            f.write(struct.pack("<q", count) + raw)
    return path


class RawEntry(NamedTuple):
    name: str
    payload: bytes  # the bytes stored in the archive (compressed if method is 8)
    declared_size: int  # the uncompressed size the headers state
    method: int = zipfile.ZIP_STORED
    crc: int | None = None  # None: the payload's own CRC


def write_raw_zip(path: Path, entries: list[RawEntry]) -> Path:
    """A zip whose local and central headers say what ``entries`` say, true or not."""
    body, directory = bytearray(), bytearray()
    for e in entries:
        name = e.name.encode()
        crc = zlib.crc32(e.payload) if e.crc is None else e.crc
        sizes = (crc, len(e.payload), e.declared_size)
        offset = len(body)
        body += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, e.method, 0, 33, *sizes, len(name), 0
        )
        body += name + e.payload
        directory += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            e.method,
            0,
            33,
            *sizes,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        directory += name
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(body), 0
    )
    path.write_bytes(bytes(body + directory + end))
    return path


def deflated_zeros(mib: int) -> bytes:
    """A raw deflate stream of ``mib`` MiB of zero bytes, about 1 KiB per MiB, made without
    compressing them all: one self-contained block, repeated, then a final empty block."""
    block_maker = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = block_maker.compress(bytes(1 << 20)) + block_maker.flush(zlib.Z_FULL_FLUSH)
    return block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
