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
called. Pure: numpy and the standard library.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tljob.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

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


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A storage's identity, filled with its elements once they are read."""

    key: str
    dtype: str
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it; its values are taken from the storage later."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key!r} was never read")
        if not self.size:
            return data[self.offset].copy()
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding; storages come from ``persistent_load``."""

    def __init__(self, file: Any, source: str, storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        raise UnsafeCheckpointError(
            f"{self.source}: refused to load the Python global {module}.{name}: a PyTorch "
            "weights file needs only tensors (torch._utils._rebuild_tensor_v2, torch.*Storage, "
            "collections.OrderedDict), and this one asks to call something else. Nothing was "
            "executed; use a state dict saved with torch.save(model.state_dict(), path)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafeCheckpointError(
                f"{self.source}: refused the persistent object of kind {kind!r}; only tensor "
                "storages are read"
            )
        # zip: (storage, type, key, location, numel); legacy adds view metadata
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.source}: storage {key!r} has no storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(f"{self.source}: storage views (legacy torch < 0.4) unsupported")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self.storages[key]


def _as_array(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(dtype))


def _fill(storage: _Storage, raw: bytes, source: str) -> None:
    itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
    if len(raw) < storage.numel * itemsize:
        raise CheckpointError(
            f"{source}: storage {storage.key!r} is truncated ({len(raw)} bytes, "
            f"{storage.numel * itemsize} expected)"
        )
    storage.data = _as_array(raw[: storage.numel * itemsize], storage.dtype)


def _load_zip(path: Path, source: str) -> tuple[Any, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointError(f"{source}: a zip without data.pkl is not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        with archive.open(pickles[0]) as f:
            obj = _RestrictedUnpickler(io.BytesIO(f.read()), source, storages).load()
        for key, storage in storages.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise CheckpointError(f"{source}: storage file {entry} is missing")
            _fill(storage, archive.read(entry), source)
    return obj, storages


def _load_legacy(path: Path, source: str) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        header = _RestrictedUnpickler(f, source, storages)
        if header.load() != LEGACY_MAGIC:
            raise CheckpointError(
                f"{source}: not a PyTorch checkpoint (neither a zip nor a legacy .pth)"
            )
        for _ in range(2):  # protocol version, system info
            _RestrictedUnpickler(f, source, storages).load()
        obj = _RestrictedUnpickler(f, source, storages).load()
        keys = _RestrictedUnpickler(f, source, storages).load()
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise CheckpointError(f"{source}: storage {key!r} is listed but never used")
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
            _fill(storage, f.read(count * itemsize), source)
    return obj, storages


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pth`` state dict, by name, as numpy arrays (in the file's order).

    Raises ``UnsafeCheckpointError`` when the pickle names any global other than tensor
    rebuilding (nothing it names is called), ``CheckpointError`` for anything else that is
    not a readable state dict."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        if zipfile.is_zipfile(path):
            obj, _ = _load_zip(path, source)
        else:
            obj, _ = _load_legacy(path, source)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({e})") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v.array() for k, v in obj.items() if isinstance(v, _TensorRef)}
    if not tensors:
        raise CheckpointError(f"{source}: the state dict holds no tensors")
    return tensors
