"""The safetensors container, read and written by minriff's own code.

File layout (readable by any safetensors tool):
    8 bytes   little-endian u64 N = header length
    N bytes   JSON header: {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}
    rest      tensor bytes, offsets relative to the end of the header

Reading parses the header itself and hands out `np.frombuffer` views on a read-only mmap: every
corruption gets a precise WeightsError naming the tensor and the offsets, tensors cost no memory
until touched, and a tensor's pages can be dropped again after it was cast (`release`).
Writing streams one tensor at a time, atomically (minriff.atomic). (Why not the `safetensors`
package: see weights/README.md.)
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from minriff import atomic, values
from minriff.errors import WeightsError

MAX_HEADER = 100 * 1024 * 1024  # same cap as the safetensors library

# safetensors dtype name -> NumPy dtype ("BF16" is stored as raw uint16 and widened on read)
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
         np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
         np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: bf16 is the top half of an IEEE float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


# ----------------------------------------------------------------------------- reading


class SafetensorsFile(Mapping):
    """A safetensors file as a read-only Mapping name -> np.ndarray (views on an mmap)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise WeightsError(f"cannot open {self.path}: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{self.path}: not a safetensors file ({size} bytes, too short for a header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise WeightsError(f"{self.path}: header length {n} exceeds the {MAX_HEADER}-byte limit "
                                   "(not a safetensors file?)")
            if 8 + n > size:
                raise WeightsError(f"{self.path}: truncated: header says {n} bytes "
                                   f"but the file has {size - 8} after the length")
            raw = f.read(n)
            self._entries, self.metadata = _parse_header(raw, self.path)
            self._start = 8 + n
            data_len = size - self._start
            end = max((e["data_offsets"][1] for e in self._entries.values()), default=0)
            if end > data_len:
                cut = [k for k, e in self._entries.items() if e["data_offsets"][1] > data_len]
                raise WeightsError(f"{self.path}: truncated: tensor data needs {end} bytes, file has {data_len} "
                                   f"({len(cut)} tensors cut off, e.g. {cut[0]!r})")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None

    def __getitem__(self, name: str) -> np.ndarray:
        e = self._entries[name]
        dt = np.dtype(DTYPES[e["dtype"]])
        begin, end = e["data_offsets"]
        count = (end - begin) // dt.itemsize
        arr = np.frombuffer(self._mm, dtype=dt, count=count, offset=self._start + begin) if count else np.empty(0, dt)
        arr = arr.reshape(e["shape"])
        return bf16_to_f32(arr) if e["dtype"] == "BF16" else arr

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def release(self, name: str) -> None:
        """Drop a tensor's pages from this process's resident set (they stay in the OS page cache
        and fault back in if touched again): keeps RSS low while tensors are cast one by one."""
        if self._mm is None or not hasattr(self._mm, "madvise"):
            return
        begin, end = self._entries[name]["data_offsets"]
        start = (self._start + begin) // mmap.PAGESIZE * mmap.PAGESIZE
        stop = min(self._start + end, len(self._mm))
        if stop > start:
            self._mm.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def shape(self, name: str) -> tuple:
        return tuple(self._entries[name]["shape"])

    def dtype_name(self, name: str) -> str:
        return self._entries[name]["dtype"]


def _parse_header(raw: bytes, path) -> tuple[dict, dict]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: header is not valid UTF-8 JSON ({type(e).__name__}: {e}); "
                           "not a safetensors file?") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is {values.json_kind(header)} in JSON, expected an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise WeightsError(f"{path}: __metadata__ must map strings to strings")
    spans = []
    for name, e in header.items():
        _check_entry(name, e, path)
        spans.append((*e["data_offsets"], name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise WeightsError(f"{path}: tensors {n0!r} and {n1!r} overlap (bytes {b0}-{e0} and {b1}-{e1})")
    return header, meta


def _check_entry(name: str, e, path) -> None:
    if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= set(e):
        raise WeightsError(f"{path}: tensor {name!r}: header entry needs dtype, shape and data_offsets")
    if e["dtype"] not in DTYPES:
        raise WeightsError(f"{path}: tensor {name!r}: unknown dtype {e['dtype']!r} (known: {', '.join(DTYPES)})")
    shape, offs = e["shape"], e["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise WeightsError(f"{path}: tensor {name!r}: bad shape {shape!r}")
    if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
            or not 0 <= offs[0] <= offs[1]):
        raise WeightsError(f"{path}: tensor {name!r}: bad data_offsets {offs!r}")
    need = int(np.prod(shape, dtype=object)) * np.dtype(DTYPES[e["dtype"]]).itemsize
    if offs[1] - offs[0] != need:
        raise WeightsError(f"{path}: tensor {name!r}: {e['dtype']}{shape} needs {need} bytes, "
                           f"data_offsets span {offs[1] - offs[0]}")


# ----------------------------------------------------------------------------- writing


def write_safetensors(path, tensors: Iterable[tuple], metadata: dict[str, str] | None = None) -> None:
    """Stream tensors to `path`. `tensors` yields (name, shape, dtype_name, make_array[, done]):
    arrays are produced and written one at a time (then `done()` is called, e.g. to release the
    source's file pages), so writing never holds more than one tensor in memory.
    Written atomically (minriff.atomic): a failure or a signal never leaves a half file under `path`,
    and a `path` that is not a regular file (a device, a folder) is refused before any tensor is made."""
    atomic.check_target(path)
    items = list(tensors)
    header, offset = {}, 0
    for name, shape, dtype_name, *_ in items:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype_name]).itemsize
        header[name] = {"dtype": dtype_name, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # tensor data starts 8-byte aligned
    with atomic.atomic_write(path) as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape, dtype_name, make, *done in items:
            arr = np.asarray(make(), dtype=DTYPES[dtype_name])
            if arr.shape != tuple(shape):
                raise WeightsError(f"tensor {name!r}: produced shape {arr.shape}, declared {tuple(shape)}")
            f.write(memoryview(np.ascontiguousarray(arr.reshape(-1))).cast("B"))
            del arr
            for callback in done:
                callback()
