"""The pickle inside a PyTorch ``.pth``, unpickled with nothing but tensor rebuilding, and
scanned first so that a crafted one cannot take memory out of proportion to its size.

``unpickle`` reads one pickle: ``scan`` walks its opcodes (``pickletools.genops``, which
allocates nothing the bytes do not hold) and refuses more than ``MAX_PICKLE_OPCODES`` of
them, the set and buffer opcodes torch.save never writes (an empty set is 1 byte of
pickle and 216 of memory), and memo indices past the entries stored (one ``LONG_BINPUT``
of 2**24 makes the C unpickler zero a 128 MiB table); then ``RestrictedUnpickler`` resolves
only tensor rebuilding (``UnsafeCheckpointError`` names any other global, before anything
is called). What it builds (``StorageType``, ``Storage``, ``TensorRef``) refuses pickle's
BUILD, so a tensor's extent cannot change after it was described. Pure: numpy and the
standard library.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from tljob.errors import UserError

MAX_PICKLE_BYTES = 16 << 20  # torchvision's MobileNetV2: 47 KB for 314 tensors
MAX_PICKLE_OPCODES = 1_000_000  # the same: 11,462 opcodes
INT64_LIMIT = 2**63
# opcodes no state dict needs: sets (the most memory per byte of pickle) and buffers
_REFUSED_OPCODES = frozenset(
    {"EMPTY_SET", "ADDITEMS", "FROZENSET", "BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
)
_INDEXED_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})

# torch storage type name -> numpy dtype ("<" : tensors are stored little-endian)
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",  # converted to float32 on reading
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(UserError, ValueError):
    """A ``.pth`` file that cannot be read as a PyTorch state dict."""


class UnsafeCheckpointError(CheckpointError):
    """A ``.pth`` file whose pickle names a Python global other than tensor rebuilding."""


class Malformed(Exception):
    """What is wrong with a checkpoint; the reader makes it a ``CheckpointError`` naming the
    file."""


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short(value: Any) -> str:
    """A bounded repr for messages (a crafted file's values may be megabytes long)."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an int past Python's 4,300-digit limit for str()
        return f"<a {type(value).__name__} too long to show>"


def plain(text: str) -> str:
    """``short`` without quotes, for names such as zip entries (newlines still escaped)."""
    return short(text)[1:-1]


class _Sealed:
    """Refuses pickle's BUILD: torch never sets state on these, and a crafted pickle could
    otherwise change a storage's size or a tensor's extent after they were described."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise Malformed(
            "the pickle sets the state of a tensor, storage or function object, which "
            "torch.save never does"
        )


@dataclass(frozen=True, eq=False)
class StorageType(_Sealed):
    name: str

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


@dataclass(eq=False)
class Storage(_Sealed):
    """A storage's identity, filled with its elements once they are read."""

    key: str
    type: StorageType
    numel: int
    data: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.type.itemsize

    def fill(self, raw: np.ndarray) -> None:
        """Its elements from exactly ``nbytes`` raw bytes (uint8)."""
        if raw.size != self.nbytes:
            raise Malformed(f"storage {short(self.key)}: {raw.size} bytes for {self.nbytes}")
        if self.type.dtype == "bfloat16":
            self.data = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif self.type.dtype == "?":
            self.data = raw != 0  # a crafted byte other than 0 or 1 is still a bool
        else:
            self.data = raw.view(np.dtype(self.type.dtype))


@dataclass(eq=False)
class TensorRef(_Sealed):
    """A tensor as the pickle describes it, its values unchecked until the reader checks
    them against the storage (``pth._check_tensor``) before ``array``."""

    storage: Storage
    offset: Any
    size: Any
    stride: Any

    def array(self) -> np.ndarray:
        """The tensor's values, copied out of its filled storage; only for a checked extent."""
        data = self.storage.data
        if data is None:
            raise Malformed(f"storage {short(self.storage.key)} was never read")
        if not self.size:
            return data[self.offset].copy()
        if 0 in self.size:
            return np.empty(self.size, dtype=data.dtype)
        # a dimension of size 1 never steps: its stride, possibly huge, is not used
        steps = zip(self.size, self.stride, strict=True)
        strides = tuple(0 if n == 1 else s * data.itemsize for n, s in steps)
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=strides, writeable=False
        )
        return np.array(view)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if not isinstance(storage, Storage):
        raise Malformed(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    # a list stays in the pickle's memo, where later opcodes could still append to it
    size = tuple(size) if isinstance(size, list) else size
    stride = tuple(stride) if isinstance(stride, list) else stride
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


class _Function(_Sealed):
    """An allowed function, callable from the pickle but not modifiable by it."""

    __slots__ = ("function",)

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding; storages come from ``persistent_load``."""

    def __init__(self, file: Any, source: str, storages: dict[str, Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        raise UnsafeCheckpointError(
            f"{self.source}: refused to load the Python global {plain(module)}.{plain(name)}: "
            "a PyTorch weights file needs only tensors "
            "(torch._utils._rebuild_tensor_v2, torch.*Storage, collections.OrderedDict), and "
            "this one asks to call something else. Nothing was executed; use a state dict "
            "saved with torch.save(model.state_dict(), path)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise Malformed(f"unexpected persistent id {short(pid)}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafeCheckpointError(
                f"{self.source}: refused the persistent object of kind {short(kind)}; only "
                "tensor storages are read"
            )
        # zip: (storage, type, key, location, numel); legacy adds view metadata
        if len(pid) not in (5, 6):
            raise Malformed(f"a storage's persistent id of {len(pid)} fields: {short(pid)}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType):
            raise Malformed(f"storage {short(key)} has no storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise Malformed("storage views (legacy torch < 0.4) are not supported")
        if type(key) not in (str, int):
            raise Malformed(f"a storage key is a {type(key).__name__}: {short(key)}")
        key = str(key)
        if type(numel) is not int or not 0 <= numel < INT64_LIMIT:
            raise Malformed(f"storage {short(key)} has the element count {short(numel)}")
        known = self.storages.setdefault(key, Storage(key, storage_type, numel))
        if (known.type.name, known.numel) != (storage_type.name, numel):
            raise Malformed(
                f"storage {short(key)} is declared as {known.type.name} of {known.numel} "
                f"elements and again as {storage_type.name} of {numel} elements"
            )
        return known


def scan(stream: io.BytesIO, opcodes_left: int) -> int:
    """Walks one pickle's opcodes (leaving ``stream`` past its STOP) and refuses what could
    cost memory out of proportion to its size; returns the opcodes still allowed."""
    puts = 0
    for opcode, arg, _ in pickletools.genops(stream):
        opcodes_left -= 1
        if opcodes_left < 0:
            raise Malformed(
                f"its pickles hold more than {MAX_PICKLE_OPCODES} opcodes, far more than a "
                "state dict's need"
            )
        if opcode.name in _REFUSED_OPCODES:
            raise Malformed(
                f"its pickle uses the opcode {opcode.name}, which torch.save never writes"
            )
        if opcode.name in _INDEXED_PUTS:
            if arg > puts:  # pickle numbers its memo entries 0, 1, 2, ...
                raise Malformed(f"its pickle stores memo entry {arg} after {puts} entries")
            puts += 1
        elif opcode.name == "MEMOIZE":
            puts += 1
    return opcodes_left


def unpickle(
    stream: io.BytesIO, source: str, storages: dict[str, Storage], opcodes_left: int
) -> tuple[Any, int]:
    """The object of the next pickle in ``stream`` (left past it), scanned before it is
    unpickled, and the opcodes still allowed after it."""
    start = stream.tell()
    opcodes_left = scan(stream, opcodes_left)
    end = stream.tell()
    stream.seek(start)
    obj = RestrictedUnpickler(stream, source, storages).load()
    stream.seek(end)
    return obj, opcodes_left
