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
from minriff.weights import sniff

STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
TORCH_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                "double", "float", "half", "long", "int", "short"}
MAX_PICKLE = 256 << 20  # data.pkl: ~200 bytes per tensor record, so far above any real checkpoint
MAX_SMALL = 64  # byteorder
MIN_INFLATE, INFLATE_RATIO = 64 << 20, 32  # see TorchZip.check_storages
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
    """One `data/<key>` entry: a flat NumPy array (mmap view when stored uncompressed; when
    compressed, an inflated copy of the first `used` elements, the ones its tensors reach)."""

    def __init__(self, archive: TorchZip, key: str, dtype_name: str, numel: int):
        self.archive, self.key, self.dtype_name, self.numel = archive, key, dtype_name, numel
        self.used = 0  # elements reached by the tensors built on this storage (set while unpickling)
        self._array = None

    def reach(self, n: int) -> None:
        self.used = max(self.used, n)

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.archive.storage_array(self.key, np_dtype(self.dtype_name), self.numel, self.used)
        return self._array

    def release(self) -> None:
        """Drop this storage's file pages from the resident set (they fault back in if read again),
        or its inflated copy."""
        self.archive.release(self.key, self.numel * np_dtype(self.dtype_name).itemsize)
        if self.key in getattr(self.archive, "compressed", ()):
            self._array = None


class StorageView(Storage):
    """A slice of another storage (legacy checkpoints)."""

    def __init__(self, base: Storage, offset: int, numel: int):
        super().__init__(base.archive, base.key, base.dtype_name, numel)
        self.base, self.start = base, offset

    def reach(self, n: int) -> None:
        self.base.reach(self.start + n)

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
        storage.reach(last + 1)

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
        self._mm = None
        self.budget = max(MIN_INFLATE, INFLATE_RATIO * self._mmap_size())  # bytes all inflating may produce
        self.inflated = 0
        order = self._read_small("byteorder")
        if order not in (None, b"little"):
            raise WeightsError(f"{self.path}: byte order {order!r} is not supported")
        self._storages: dict[str, Storage] = {}
        self._starts: dict[str, int] = {}  # file offset of each memory-mapped storage
        self.compressed: set[str] = set()  # keys of storages that are inflated, not memory-mapped

    def release(self, key: str, nbytes: int) -> None:
        _dontneed(self._mm, self._starts.get(key), nbytes)

    def _read_small(self, name):
        try:
            return self._read(self.root + name, MAX_SMALL).strip()
        except KeyError:
            return None

    def _read(self, name: str, limit: int) -> bytes:
        """A whole entry of at most `limit` bytes (checked before inflating, and while inflating:
        the central directory's size field may lie)."""
        info = self.zip.getinfo(name)  # KeyError when absent
        if info.file_size > limit:
            raise WeightsError(f"{self.path}: zip entry {name} declares {info.file_size} bytes, more than the "
                               f"{limit} it can hold in a torch checkpoint; refusing to inflate it")
        return self._inflate(info, info.file_size)

    def _inflate(self, info: zipfile.ZipInfo, nbytes: int) -> bytes:
        """The first `nbytes` of an entry (never more: zipfile stops at the declared size)."""
        try:
            with self.zip.open(info) as f:
                data = f.read(nbytes)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as e:
            raise WeightsError(f"{self.path}: corrupt zip entry {info.filename}: {e}") from None
        if len(data) < nbytes:
            raise WeightsError(f"{self.path}: zip entry {info.filename} inflates to {len(data)} bytes, "
                               f"not the {info.file_size} its directory declares")
        return data

    def storage(self, key: str, dtype_name: str, numel: int) -> Storage:
        st = self._storages.get(key)
        if st is None:
            st = self._storages[key] = Storage(self, key, dtype_name, numel)
        elif st.dtype_name != dtype_name:
            raise WeightsError(f"{self.path}: storage {key} used with two element types")
        return st

    def check_storages(self) -> None:
        """Before anything is read: every storage the pickle named has its entry, with the bytes its
        record declares, and inflating the compressed ones (only the elements their tensors reach)
        stays within the budget: at most INFLATE_RATIO x the file size (MIN_INFLATE for small files).
        Real weights barely compress, so only a zip bomb comes near it."""
        total = 0
        for key, st in self._storages.items():
            info = self._storage_entry(key, st.numel * np_dtype(st.dtype_name).itemsize)
            if info.compress_type != zipfile.ZIP_STORED:
                total += st.used * np_dtype(st.dtype_name).itemsize
                if total > self.budget:
                    raise self._bomb(info.filename, total)

    def _bomb(self, name: str, total: int) -> WeightsError:
        return WeightsError(f"{self.path}: storage entry {name}: the compressed storages would inflate to "
                            f"{total:,} bytes or more, over {INFLATE_RATIO}x the file's {len(self._mm):,} bytes "
                            f"(limit {self.budget:,}); a zip bomb? refusing to inflate it")

    def _storage_entry(self, key: str, need: int) -> zipfile.ZipInfo:
        name = f"{self.root}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise WeightsError(f"{self.path}: storage entry {name} is missing (truncated checkpoint?)") from None
        if info.file_size < need:
            raise WeightsError(f"{self.path}: storage {name} has {info.file_size} bytes, needs {need}")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size != need:
            raise WeightsError(f"{self.path}: storage entry {name} inflates to {info.file_size:,} bytes, but its "
                               f"pickle record declares {need:,}")
        return info

    def storage_array(self, key: str, dtype: np.dtype, numel: int, used: int | None = None) -> np.ndarray:
        need = numel * dtype.itemsize
        info = self._storage_entry(key, need)
        if info.compress_type == zipfile.ZIP_STORED:
            start = self._data_start(info)
            if start + need > self._mmap_size():
                raise WeightsError(f"{self.path}: truncated: storage {info.filename} ends past the end of the file")
            self._starts[key] = start
            return np.frombuffer(self._mm, dtype=dtype, count=numel, offset=start)
        count = numel if used is None else min(used, numel)
        self.inflated += count * dtype.itemsize
        if self.inflated > 2 * self.budget:  # re-reads after release() inflate again; cap those too
            raise self._bomb(info.filename, self.inflated)
        self.compressed.add(key)
        return np.frombuffer(self._inflate(info, count * dtype.itemsize), dtype=dtype, count=count)

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
        data = self._read(self.root + "data.pkl", MAX_PICKLE)
        obj = unpickle(data, self, str(self.path), inert_unknown)
        self.check_storages()
        return obj


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

    def storage_array(self, key: str, dtype: np.dtype, numel: int, used: int | None = None) -> np.ndarray:
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
    """"zip" (torch >= 1.6) or "legacy" (a bare pickle stream), told by the file's whole structure
    (`sniff.file_kind`); None for anything else, safetensors included."""
    kind = sniff.file_kind(path)
    return kind if kind in ("zip", "legacy") else None


def load(path, inert_unknown: bool = False):
    """The unpickled object of a torch checkpoint (LazyTensors in place of tensors)."""
    path = Path(path)
    kind = checkpoint_kind(path)
    if kind is None:
        raise WeightsError(f"{path}: not a torch checkpoint ({sniff.describe(path)})")
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
    records, storages = [], []
    for i, (name, arr) in enumerate(tensors.items()):
        arr = np.array(arr, order="C", copy=None) if np.ndim(arr) else np.array(arr)
        stride = tuple(int(np.prod(arr.shape[d + 1:], dtype=np.int64)) for d in range(arr.ndim))
        records.append((name, _STORAGE_OF[arr.dtype], str(i), int(arr.size), arr.shape, stride))
        storages.append(arr)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", state_dict_pickle(records, wrap_key))
        z.writestr(f"{root}/byteorder", "little")
        for i, arr in enumerate(storages):
            z.writestr(f"{root}/data/{i}", arr.tobytes())
        z.writestr(f"{root}/version", "3\n")


def state_dict_pickle(records, wrap_key: str | None = None) -> bytes:
    """data.pkl of a state dict: one tensor per record (name, storage type e.g. "FloatStorage",
    storage key, storage numel, shape, stride), at offset 0 of its storage. Any numbers can be
    written, which is what tests of hostile files need."""
    G = pickle.GLOBAL
    out = [pickle.PROTO + b"\x02"]
    if wrap_key is not None:
        out += [pickle.EMPTY_DICT, _op_value(wrap_key)]
    out += [G + b"collections\nOrderedDict\n", pickle.EMPTY_TUPLE, pickle.REDUCE, pickle.MARK]
    for name, kind, key, numel, shape, stride in records:
        out += [_op_value(name), G + b"torch._utils\n_rebuild_tensor_v2\n", pickle.MARK,
                pickle.MARK, _op_value("storage"), G + f"torch\n{kind}\n".encode(), _op_value(key),
                _op_value("cpu"), _op_value(int(numel)), pickle.TUPLE, pickle.BINPERSID,
                _op_value(0), _op_value(tuple(int(d) for d in shape)), _op_value(tuple(stride)), pickle.NEWFALSE,
                G + b"collections\nOrderedDict\n", pickle.EMPTY_TUPLE, pickle.REDUCE, pickle.TUPLE, pickle.REDUCE]
    out.append(pickle.SETITEMS)
    if wrap_key is not None:
        out.append(pickle.SETITEM)
    out.append(pickle.STOP)
    return b"".join(out)
