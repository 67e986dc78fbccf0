"""Which container a weights file is, told by its whole structure, never by one magic byte.

    file_kind(path) -> "safetensors" | "zip" | "legacy" | None

- safetensors: an 8-byte little-endian header length N with 2 <= N <= the bytes after it (and the
  100 MB cap), then N bytes of UTF-8 JSON that parse to an object;
- zip (torch >= 1.6): a local-file-header signature at byte 0 and an end-of-central-directory
  record that `zipfile` can find;
- legacy (torch < 1.6): a pickle stream: a PROTO opcode (protocol 2-5) and a first pickle that
  parses, opcode by opcode, up to its STOP within the first 64 KiB (torch's first pickle is the
  magic number, 14 bytes).

A 1-in-256 safetensors file has a header length whose low byte is 0x80 (the PROTO opcode), and
1 in 65,536 one whose low bytes spell "PK": first-byte sniffing misread those (issue 13, cause 8).
The checks run safetensors first because its structure is the most specific (a JSON object right
after a length that fits the file); a file that passes none is None, and the readers say so.
"""
from __future__ import annotations

import io
import json
import os
import pickletools
import struct
import zipfile

from minriff.errors import WeightsError
from minriff.weights.safetensors import MAX_HEADER

PICKLE_PREFIX = 64 * 1024


def file_kind(path) -> str | None:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if _is_safetensors(f, head, size):
                return "safetensors"
            f.seek(0)
            prefix = f.read(PICKLE_PREFIX)
    except OSError as e:
        raise WeightsError(f"cannot open {path}: {e.strerror or e}") from None
    if prefix[:4] == b"PK\x03\x04" and _has_central_directory(path):
        return "zip"
    if is_pickle_stream(prefix):
        return "legacy"
    return None


def describe(path) -> str:
    """A short account of why `path` is none of the three (for error messages)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        return f"cannot open it: {e.strerror or e}"
    if head[:4] == b"PK\x03\x04":
        return "it starts like a zip archive but has no readable central directory (truncated?)"
    if head[:1] == b"\x80":
        return "it starts like a pickle but the stream is not valid"
    if len(head) == 8:
        n = struct.unpack("<Q", head)[0]
        if 2 <= n <= size - 8:
            return f"its first 8 bytes give a safetensors header length of {n}, but that header is not a JSON object"
        return f"its first 8 bytes give a header length of {n} for a file of {size} bytes"
    return f"it is only {size} bytes long"


def _is_safetensors(f, head: bytes, size: int) -> bool:
    if len(head) < 8:
        return False
    (n,) = struct.unpack("<Q", head)
    if not 2 <= n <= min(MAX_HEADER, size - 8):
        return False
    first = f.read(min(n, 64))
    start = first.lstrip(b" \t\r\n")
    if start and start[:1] != b"{":  # cheap rejection of nearly every other file before reading N bytes
        return False
    try:
        header = json.loads((first + f.read(n - len(first))).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(header, dict)


def _has_central_directory(path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def is_pickle_stream(data: bytes) -> bool:
    """True when `data` begins with a complete, well-formed pickle (PROTO 2-5 first)."""
    if len(data) < 3 or data[0] != 0x80 or not 2 <= data[1] <= 5:
        return False
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "STOP":
                return True
    except (ValueError, struct.error, UnicodeDecodeError, OverflowError):
        return False
    return False
