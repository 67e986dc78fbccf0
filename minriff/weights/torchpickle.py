"""Read torch checkpoints (`torch.save` zip format: `.ckpt`, `.bin`, `.pt`) without torch, safely.

A torch zip checkpoint is `<root>/data.pkl` (a pickle of the state dict) plus one raw file per
storage (`<root>/data/<key>`). The pickle names the functions that rebuild tensors; a hostile file
can name any function (`os.system`) instead. The unpickler here resolves only a fixed allow-list,
mapped to minriff's own stand-ins (never to torch or to the named module):

- `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` / `_rebuild_parameter(_with_state)`
  -> a LazyTensor (shape, strides and a storage view; nothing is read until it is used),
- `torch.<Type>Storage` -> the element type of a storage, `torch.<dtype>` dtype objects,
- `collections.OrderedDict`,
- inert stand-ins for four globals that real Stable Diffusion `.ckpt` files carry outside the state
  dict (the Lightning `ModelCheckpoint` class used as a dict key, `numpy.core.multiarray.scalar`,
  `numpy.dtype`, `_codecs.encode` for a saved step counter): they only record their arguments.
Everything else raises UnsafePickleError naming `module.name`, before anything is called.

The legacy (torch < 1.6, non-zip) format is read too, through the same unpickler.
Storages are memory-mapped when the zip entry is stored uncompressed (what torch writes);
bfloat16 is widened to float32 when a tensor is materialised.
"""
from __future__ import annotations

import collections
import io
import math
import mmap
import pickle
import pickletools
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from minriff.errors import UnsafePickleError, WeightsError

STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
TORCH_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                "double", "float", "half", "long", "int", "short"}
INERT_GLOBALS = {
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def np_dtype(name: str) -> np.dtype:
    return np.dtype(np.uint16 if name == "bfloat16" else name)


class StorageType:
    def __init__(self, dtype_name: str):
        self.dtype_name = dtype_name


class Opaque:
    """Inert record of a non-tensor global's call (see INERT_GLOBALS): never executes anything."""

    def __init__(self, name: str, args=()):
        self.name, self.args, self.state = name, args, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<opaque {self.name}>"


class OpaqueGlobal:
    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args):
        return Opaque(self.name, args)

    def __repr__(self):
        return f"<opaque global {self.name}>"


class Storage:
    """One `data/<key>` entry: a flat NumPy array (mmap view when stored uncompressed)."""

    def __init__(self, archive: TorchZip, key: str, dtype_name: str, numel: int):
        self.archive, self.key, self.dtype_name, self.numel = archive, key, dtype_name, numel
        self._array = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.archive.storage_array(self.key, np_dtype(self.dtype_name), self.numel)
        return self._array

    def release(self) -> None:
        """Drop this storage's file pages from the resident set (they fault back in if read again)."""
        self.archive.release(self.key, self.numel * np_dtype(self.dtype_name).itemsize)


class StorageView(Storage):
    """A slice of another storage (legacy checkpoints)."""

    def __init__(self, base: Storage, offset: int, numel: int):
        super().__init__(base.archive, base.key, base.dtype_name, numel)
        self.base, self.start = base, offset

    def array(self) -> np.ndarray:
        return self.base.array()[self.start:self.start + self.numel]

    def release(self) -> None:
        self.base.release()


class LazyTensor:
    """A tensor as the pickle describes it; `np.asarray(t)` reads it (bf16 -> float32)."""

    def __init__(self, storage: Storage, offset: int, shape, stride):
        if not (isinstance(storage, Storage) and _ints(shape) and _ints(stride) and len(shape) == len(stride)
                and type(offset) is int and offset >= 0):
            raise WeightsError("checkpoint pickle: malformed tensor record")
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else offset - 1
        if (any(s < 0 for s in stride) or any(n < 0 for n in shape) or last >= storage.numel
                or math.prod(shape) > max(storage.numel, 1)):  # no stride-0 blow-ups of a small storage
            raise WeightsError(f"checkpoint: tensor {self.shape} at offset {offset} with strides {self.stride} "
                               f"runs past its storage of {storage.numel} elements")

    @property
    def dtype_name(self) -> str:
        return self.storage.dtype_name

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.dtype_name == "bfloat16" else np_dtype(self.dtype_name)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numpy(self) -> np.ndarray:
        flat = self.storage.array()
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.shape,
                                               strides=[s * item for s in self.stride], writeable=False)
        if self.dtype_name == "bfloat16":
            return (view.astype(np.uint32) << 16).view(np.float32)
        return view

    def release(self) -> None:
        self.storage.release()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, index):
        return self.numpy()[index]


def _ints(t) -> bool:
    return isinstance(t, tuple) and all(type(v) is int for v in t)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    if not isinstance(data, LazyTensor):
        raise WeightsError("checkpoint pickle: parameter without tensor data")
    return data


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): StorageType(dt) for name, dt in STORAGE_DTYPES.items()},
    **{("torch", name): f"torch.{name}" for name in TORCH_DTYPES},
    **{key: OpaqueGlobal(".".join(key)) for key in INERT_GLOBALS},
}


class RestrictedUnpickler(pickle.Unpickler):
    """`inert_unknown=True` turns every other global into an inert OpaqueGlobal instead of refusing:
    still nothing outside this module is called (for training checkpoints whose extra entries name
    e.g. config classes); tensors rebuilt any other way simply do not appear in the state dict."""

    def __init__(self, file, archive: TorchZip | None, inert_unknown: bool = False):
        super().__init__(file)
        self.archive, self.inert_unknown = archive, inert_unknown

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            if self.inert_unknown and isinstance(module, str) and isinstance(name, str):
                return OpaqueGlobal(f"{module}.{name}")
            raise UnsafePickleError(f"checkpoint refers to the global {module}.{name}, which is not a tensor-rebuild "
                                    "function or storage type; refusing to load it (it could run code). If it sits "
                                    "outside the weights (training metadata), `--inert-globals` reads the file with "
                                    "inert stand-ins that never call anything") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise WeightsError(f"checkpoint pickle: unsupported persistent id {str(pid)[:80]}")
        if self.archive is None:
            raise WeightsError("checkpoint pickle refers to storages but is not inside a torch checkpoint")
        st = self.archive.storage(pid[2], pid[1].dtype_name, pid[4])
        view = pid[5] if len(pid) > 5 else None  # legacy format: (view_key, offset, size) of a storage slice
        if view is None:
            return st
        if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int and v >= 0 for v in view[1:])
                and view[1] + view[2] <= st.numel):
            raise WeightsError(f"checkpoint pickle: bad storage view {str(view)[:80]}")
        return StorageView(st, view[1], view[2])


class TorchZip:
    """A `torch.save` zip archive opened for lazy, memory-mapped reading."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise WeightsError(f"{self.path}: not a torch zip checkpoint ({e})") from None
        names = self.zip.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if not pkl:
            raise WeightsError(f"{self.path}: a zip file without data.pkl: not a torch checkpoint")
        self.root = pkl[0][: -len("data.pkl")]
        order = self._read_small("byteorder")
        if order not in (None, b"little"):
            raise WeightsError(f"{self.path}: byte order {order!r} is not supported")
        self._storages: dict[str, Storage] = {}
        self._starts: dict[str, int] = {}  # file offset of each memory-mapped storage
        self._mm = None

    def release(self, key: str, nbytes: int) -> None:
        _dontneed(self._mm, self._starts.get(key), nbytes)

    def _read_small(self, name):
        try:
            return self._read(self.root + name).strip()
        except KeyError:
            return None

    def _read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except KeyError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as e:
            raise WeightsError(f"{self.path}: corrupt zip entry {name}: {e}") from None

    def storage(self, key: str, dtype_name: str, numel: int) -> Storage:
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = Storage(self, key, dtype_name, numel)
        elif st.dtype_name != dtype_name:
            raise WeightsError(f"{self.path}: storage {key} used with two element types")
        return st

    def storage_array(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.root}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise WeightsError(f"{self.path}: storage entry {name} is missing (truncated checkpoint?)") from None
        need = numel * dtype.itemsize
        if info.file_size < need:
            raise WeightsError(f"{self.path}: storage {name} has {info.file_size} bytes, needs {need}")
        if info.compress_type == zipfile.ZIP_STORED:
            start = self._data_start(info)
            if start + need > self._mmap_size():
                raise WeightsError(f"{self.path}: truncated: storage {name} ends past the end of the file")
            self._starts[key] = start
            return np.frombuffer(self._mm, dtype=dtype, count=numel, offset=start)
        raw = self._read(name)
        return np.frombuffer(raw, dtype=dtype, count=numel)

    def _mmap_size(self) -> int:
        if self._mm is None:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return len(self._mm)

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        self._mmap_size()
        h = info.header_offset
        local = self._mm[h:h + 30]
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise WeightsError(f"{self.path}: corrupt zip: bad local header for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return h + 30 + name_len + extra_len

    def load(self, inert_unknown: bool = False):
        data = self._read(self.root + "data.pkl")
        return unpickle(data, self, str(self.path), inert_unknown)


def unpickle(data: bytes, archive: TorchZip | None = None, where: str = "pickle", inert_unknown: bool = False):
    return _unpickle_stream(io.BytesIO(data), archive, where, inert_unknown)


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER, PROTOCOL_VERSION
LEGACY_PROTOCOL = 1001


class LegacyFile:
    """The pre-1.6 torch format: pickles of the magic number, protocol version and system info, the
    object pickle, the list of storage keys, then per storage an int64 element count and its bytes."""

    def __init__(self, path):
        self.path = Path(path)
        self._storages: dict[str, Storage] = {}
        self._offsets: dict[str, int] = {}
        self._mm = None

    storage = TorchZip.storage

    def load(self, inert_unknown: bool = False):
        where = str(self.path)
        with open(self.path, "rb") as fd:
            # the pickles are read from the mmap: a corrupt length field then reads what exists instead
            # of making the file object allocate the claimed size
            f = self._mm = mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ)
            size = len(f)

            def header():
                return _unpickle_stream(f, None, where)
            if header() != LEGACY_MAGIC:
                raise WeightsError(f"{where}: not a torch checkpoint (bad magic number)")
            if header() != LEGACY_PROTOCOL:
                raise WeightsError(f"{where}: unknown legacy torch protocol version")
            info = header()
            if not isinstance(info, dict) or info.get("little_endian") is not True:
                raise WeightsError(f"{where}: only little-endian legacy checkpoints are supported")
            obj = _unpickle_stream(f, self, where, inert_unknown)
            keys = header()
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise WeightsError(f"{where}: corrupt storage key list")
            offset = f.tell()
            for key in keys:
                st = self._storages.get(key)
                head = f.read(8)
                if st is None or len(head) < 8:
                    raise WeightsError(f"{where}: truncated or inconsistent storage data ({key})")
                (numel,) = struct.unpack("<q", head)
                nbytes = numel * np_dtype(st.dtype_name).itemsize
                if numel != st.numel or offset + 8 + nbytes > size:
                    raise WeightsError(f"{where}: storage {key}: {numel} elements recorded, {st.numel} expected "
                                       f"(or the file is truncated)")
                self._offsets[key] = offset + 8
                offset += 8 + nbytes
                f.seek(offset)
        return obj

    def release(self, key: str, nbytes: int) -> None:
        _dontneed(self._mm, self._offsets.get(key), nbytes)

    def storage_array(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        if key not in self._offsets:
            raise WeightsError(f"{self.path}: storage {key} has no data")
        return np.frombuffer(self._mm, dtype=dtype, count=numel, offset=self._offsets[key])


def _dontneed(mm, start: int | None, nbytes: int) -> None:
    if mm is None or start is None or nbytes <= 0 or not hasattr(mm, "madvise"):
        return
    page = start // mmap.PAGESIZE * mmap.PAGESIZE
    stop = min(start + nbytes, len(mm))
    if stop > page:
        mm.madvise(mmap.MADV_DONTNEED, page, stop - page)


def _check_memo(f, where: str, limit: int) -> None:
    """Refuse memo indices beyond what the data could hold: the C unpickler grows its memo table to
    the index it is given, so one corrupt PUT could otherwise ask for gigabytes."""
    start = f.tell()
    for op, arg, _ in pickletools.genops(f):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= limit:
            raise WeightsError(f"{where}: corrupt checkpoint pickle (memo index {arg})")
    f.seek(start)


def _unpickle_stream(f, archive, where: str, inert_unknown: bool = False):
    """One pickle from an open file (BytesIO or mmap), leaving the file positioned just after it."""
    try:
        _check_memo(f, where, len(f.getbuffer()) if isinstance(f, io.BytesIO) else len(f))
        return RestrictedUnpickler(f, archive, inert_unknown).load()
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            UnicodeDecodeError, OverflowError, MemoryError, struct.error, RecursionError) as e:
        raise WeightsError(f"{where}: corrupt checkpoint pickle ({type(e).__name__}: {e})") from None


def checkpoint_kind(path) -> str | None:
    """"zip" (torch >= 1.6) or "legacy" (a bare pickle stream) by the file's first bytes; None
    for anything else (e.g. safetensors: 8 length bytes then its JSON header's "{"; the length's
    first byte can be 0x80 like a pickle's PROTO opcode)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(9)
    except OSError as e:
        raise WeightsError(f"cannot open {path}: {e.strerror or e}") from None
    if magic[:2] == b"PK":
        return "zip"
    if magic[:1] == b"\x80" and magic[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and magic[8:9] != b"{":
        return "legacy"
    return None


def load(path, inert_unknown: bool = False):
    """The unpickled object of a torch checkpoint (LazyTensors in place of tensors)."""
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind is None:
        raise WeightsError(f"{path}: not a torch checkpoint (no zip signature)")
    return (TorchZip if kind == "zip" else LegacyFile)(path).load(inert_unknown)


def state_dict(obj, where: str = "checkpoint") -> dict:
    """The tensor dict of a loaded checkpoint: the object itself or its 'state_dict' entry."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, LazyTensor)}
    if not tensors:
        raise WeightsError(f"{where}: holds no tensors")
    return tensors


# ----------------------------------------------------------------------------- writing (tests, fixtures)

_STORAGE_OF = {np.dtype(v if v != "bfloat16" else np.uint16): k for k, v in STORAGE_DTYPES.items() if v != "bfloat16"}


def _op_value(v) -> bytes:
    """Pickle opcodes for one plain value (str, int, tuple of ints), without PROTO/STOP."""
    return pickle.dumps(v, protocol=2)[2:-1]


def save(path, tensors: dict, wrap_key: str | None = None, root: str = "archive") -> None:
    """Write `tensors` (name -> np.ndarray) as a torch zip checkpoint that `torch.load` reads.
    Minimal: contiguous tensors, one storage each; `wrap_key` nests them as {wrap_key: dict}.
    Used by tests and fixtures to make `.bin`/`.ckpt` files without torch."""
    G = pickle.GLOBAL
    out = [pickle.PROTO + b"\x02"]
    if wrap_key is not None:
        out += [pickle.EMPTY_DICT, _op_value(wrap_key)]
    out += [G + b"collections\nOrderedDict\n", pickle.EMPTY_TUPLE, pickle.REDUCE, pickle.MARK]
    storages = []
    for i, (name, arr) in enumerate(tensors.items()):
        arr = np.array(arr, order="C", copy=None) if np.ndim(arr) else np.array(arr)
        kind = _STORAGE_OF[arr.dtype]
        stride = tuple(int(np.prod(arr.shape[d + 1:], dtype=np.int64)) for d in range(arr.ndim))
        out += [_op_value(name), G + b"torch._utils\n_rebuild_tensor_v2\n", pickle.MARK,
                pickle.MARK, _op_value("storage"), G + f"torch\n{kind}\n".encode(), _op_value(str(i)),
                _op_value("cpu"), _op_value(int(arr.size)), pickle.TUPLE, pickle.BINPERSID,
                _op_value(0), _op_value(tuple(int(d) for d in arr.shape)), _op_value(stride), pickle.NEWFALSE,
                G + b"collections\nOrderedDict\n", pickle.EMPTY_TUPLE, pickle.REDUCE, pickle.TUPLE, pickle.REDUCE]
        storages.append(arr)
    out.append(pickle.SETITEMS)
    if wrap_key is not None:
        out.append(pickle.SETITEM)
    out.append(pickle.STOP)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", b"".join(out))
        z.writestr(f"{root}/byteorder", "little")
        for i, arr in enumerate(storages):
            z.writestr(f"{root}/data/{i}", arr.tobytes())
        z.writestr(f"{root}/version", "3\n")
