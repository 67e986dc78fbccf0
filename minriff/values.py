"""The primitive checks every entry point shares: numbers, text and JSON from a user or the network.

A leaf module (it imports only minriff.errors), so the audio package, the pipeline's `inputs`
checks, the CLI and the server all refuse the same things with the same InputError message.

- `number` / `integer`: Python and NumPy scalars alike (np.float32 durations, np.int64 steps);
  never bools, NaN or infinity; optional bounds.
- `text`: a str that is valid Unicode (no lone surrogates: what undecodable argv bytes and JSON
  "\\udc80" escapes turn into) and not longer than a limit.
- `parse_json`: bytes or str -> object with limits on size, nesting depth and number length, strict
  UTF-8, no NaN/Infinity literals, no duplicate keys. Deep nesting is refused before parsing
  (json would hit RecursionError), long digit strings before int() (Python's 4300-digit limit).
"""
from __future__ import annotations

import json
import math
import re
import sys
from itertools import accumulate

import numpy as np

from minriff.errors import InputError

MAX_JSON_BYTES = 64 * 1024  # a request is ~300 bytes; four 1000-character prompts in \u escapes fit
MAX_JSON_DEPTH = 32  # the server's schema nests 2 deep
MAX_NUMBER_CHARS = 64  # a 64-bit seed has 20 digits


def is_number(x) -> bool:
    """A real number type minriff accepts: int, float and NumPy's integer and floating scalars (0-d
    arrays too), never bool or np.bool_."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def number(x, what: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> float:
    """x as a finite float within [lo, hi] (open ends with lo_open/hi_open), else InputError."""
    v = None
    if is_number(x):
        try:
            v = float(x)
        except OverflowError:  # a huge Python int
            v = math.inf
    if v is None or not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or (
            hi is not None and (v > hi or (hi_open and v == hi))):
        raise InputError(f"{what} must be {_range('a number', lo, hi, lo_open, hi_open)}, got {show(x)}")
    return v


def integer(x, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """x as an int within [lo, hi] (Python or NumPy integer; not bool, not a float), else InputError."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    ok = isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))
    if not ok or (lo is not None and x < lo) or (hi is not None and x > hi):
        span = f"from {lo:,} to {hi:,}" if lo is not None and hi is not None else _range("", lo, hi).strip()
        raise InputError(f"{what} must be an integer {span}".rstrip() + f", got {show(x)}")
    return int(x)


def _range(kind: str, lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi:g}"
    return f"a finite {kind.removeprefix('a ')}" if kind else ""


def text(s, what: str, max_chars: int, allow_empty: bool = False) -> str:
    """s as a str of valid Unicode, at most `max_chars` characters (and not blank unless allowed)."""
    if isinstance(s, np.str_):
        s = str(s)
    if not isinstance(s, str):
        raise InputError(f"{what} must be text, got {type(s).__name__}")
    if len(s) > max_chars:
        raise InputError(f"{what} is {len(s):,} characters long; the limit is {max_chars:,}")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = s[e.start]
        raise InputError(f"{what} is not valid Unicode: lone surrogate U+{ord(bad):04X} at character {e.start} "
                         f"(text decoded from bytes that are not UTF-8?)") from None
    if not allow_empty and not s.strip():
        raise InputError(f"{what} is empty")
    return s


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def parse_json(data, what: str = "JSON", max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """bytes (UTF-8) or str -> the parsed value, or InputError naming the problem (see module docstring)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise InputError(f"{what} is {len(raw):,} bytes; the limit is {max_bytes:,}")
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{what} is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}") from None
    elif isinstance(data, str):
        data = text(data, what, max_bytes, allow_empty=True)
        if len(data.encode("utf-8")) > max_bytes:
            raise InputError(f"{what} is over {max_bytes:,} bytes")
    else:
        raise InputError(f"{what} must be bytes or text, got {type(data).__name__}")
    depth = max(accumulate((1 if c in "[{" else -1) for c in _STRING.sub("", data) if c in "[]{}"), default=0)
    if depth > max_depth:
        raise InputError(f"{what} nests {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(data, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant,
                          object_pairs_hook=_json_object)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed {what}: {e}") from None
    except RecursionError:  # not reached after the depth check; kept so no traceback can escape
        raise InputError(f"{what} nests too deeply") from None


def _json_int(s: str) -> int:
    if len(s) > MAX_NUMBER_CHARS:
        raise InputError(f"JSON number with {len(s):,} digits; the limit is {MAX_NUMBER_CHARS}")
    return int(s)


def _json_float(s: str) -> float:
    if len(s) > MAX_NUMBER_CHARS:
        raise InputError(f"JSON number of {len(s):,} characters; the limit is {MAX_NUMBER_CHARS}")
    v = float(s)
    if not math.isfinite(v):
        raise InputError(f"JSON number {s} is out of the floating-point range")
    return v


def _json_constant(name: str):
    raise InputError(f"JSON does not allow {name} (numbers must be finite)")


def _json_object(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise InputError(f"JSON object has the key {show(k)} twice")
        out[k] = v
    return out


def json_kind(x) -> str:
    """What a parsed JSON value is, in JSON's words (an error about a request says "got an array",
    not Python's "got list")."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, (list, tuple)):
        return "an array"
    if isinstance(x, dict):
        return "an object"
    return type(x).__name__


def show(x, limit: int = 60) -> str:
    """repr(x) cut to `limit` characters (a 5,000-digit int would otherwise fill the message)."""
    try:
        r = repr(x)
    except ValueError:  # int too large to convert to str
        return f"an integer of over {sys.get_int_max_str_digits():,} digits"
    return r if len(r) <= limit else r[: limit - 3] + "..."
