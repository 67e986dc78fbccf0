"""Kernel prototypes parsed from `.cu` source, and launch arguments checked against them.

Both loaders convert each argument by its C parameter type before a launch: a Python int for an
`int` parameter becomes an int32 (CuPy would otherwise pass an 8-byte `long long`), a float for a
`float` parameter becomes a float32, and an array for a `float*` must be a contiguous float32 array
(and writable unless the pointer is `const`)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_PROTO = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?'
    r"(\w+)\s*\(([^)]*)\)",
    re.S,
)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)

SCALAR_TYPES = {
    "int": np.int32, "unsigned": np.uint32, "unsigned int": np.uint32, "long long": np.int64,
    "unsigned long long": np.uint64, "size_t": np.uint64, "float": np.float32, "double": np.float64,
    "bool": np.bool_,
}


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str       # base type without const/restrict/* ("float", "int", ...)
    pointer: bool
    const: bool      # pointee is const (read-only array)

    @property
    def dtype(self):
        return np.dtype(SCALAR_TYPES[self.ctype])


def parse(source: str) -> dict[str, tuple[Param, ...]]:
    """{kernel name: parameters} for every `extern "C" __global__` kernel in the source."""
    out = {}
    for m in _PROTO.finditer(_COMMENT.sub(" ", source)):
        params = []
        for raw in filter(None, (p.strip() for p in m.group(2).split(","))):
            pointer = "*" in raw
            words = raw.replace("*", " ").replace("__restrict__", " ").split()
            const = "const" in words
            words = [w for w in words if w != "const"]
            name, ctype = words[-1], " ".join(words[:-1])
            if ctype not in SCALAR_TYPES:
                raise ValueError(f"kernel {m.group(1)}: unsupported parameter type {raw!r}")
            params.append(Param(name, ctype, pointer, const))
        out[m.group(1)] = tuple(params)
    return out


def convert(kernel: str, params: tuple[Param, ...], args, is_array) -> list:
    """Check `args` against the prototype; scalars become NumPy scalars of the C type."""
    if len(args) != len(params):
        raise TypeError(f"kernel {kernel}: {len(params)} arguments expected, got {len(args)}")
    out = []
    for p, a in zip(params, args):
        if p.pointer:
            if not is_array(a):
                raise TypeError(f"kernel {kernel}: argument {p.name} is a {p.ctype}* but got {type(a).__name__}")
            if a.dtype != p.dtype:
                raise TypeError(f"kernel {kernel}: argument {p.name} is a {p.ctype}* but the array is {a.dtype}")
            if not a.flags.c_contiguous:
                raise TypeError(f"kernel {kernel}: argument {p.name} must be C-contiguous")
            if not p.const and not getattr(a.flags, "writeable", True):
                raise TypeError(f"kernel {kernel}: argument {p.name} is written but the array is read-only")
            out.append(a)
        else:
            if is_array(a) or isinstance(a, (str, bytes)):
                raise TypeError(f"kernel {kernel}: argument {p.name} is a {p.ctype} scalar, got {type(a).__name__}")
            if p.dtype.kind in "iu" and not float(a).is_integer():
                raise TypeError(f"kernel {kernel}: argument {p.name} is a {p.ctype}, got {a!r}")
            if p.dtype.kind in "iu" and not np.iinfo(p.dtype).min <= int(a) <= np.iinfo(p.dtype).max:
                raise OverflowError(f"kernel {kernel}: argument {p.name}={a} does not fit a {p.ctype}")
            v = p.dtype.type(a)
            out.append(v)
    return out
