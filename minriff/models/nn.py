"""Layers that hold weights and call kernels, and the one generic weight-loading walk.

A model is a tree of `Module`s. A parameter is any NumPy array attribute; children are Module
attributes or lists of Modules (list index = key component, `None` entries stand for
parameter-free layers such as Dropout). So the attribute path *is* the checkpoint key:
`model.down_blocks[0].attentions[1].proj_in.weight` <-> "down_blocks.0.attentions.1.proj_in.weight".

Parameters start as unallocated placeholders (`np.empty`, which touches no memory) with the
right shape; `load(module, tensors)` fills them, checking every key and shape and reporting all
mismatches at once.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from minriff import kernels
from minriff.errors import WeightsError


def param(*shape) -> np.ndarray:
    return np.empty(shape, dtype=np.float32)


class Module:
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, v in vars(self).items():
            if isinstance(v, Module):
                yield name, v
            elif isinstance(v, (list, tuple)):
                for i, m in enumerate(v):
                    if isinstance(m, Module):
                        yield f"{name}.{i}", m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted path, module) for this module ("" for itself) and every descendant, parents first."""
        yield prefix.rstrip("."), self
        for name, child in self.named_children():
            yield from child.named_modules(prefix + name + ".")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, v in vars(self).items():
            if _is_array(v):
                yield prefix + name, v
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.named_parameters()}

    def num_parameters(self) -> int:
        return sum(int(np.prod(s)) for s in self.parameter_shapes().values())

    def _set(self, dotted: str, value) -> None:
        obj = self
        *path, last = dotted.split(".")
        for p in path:
            obj = obj[int(p)] if isinstance(obj, (list, tuple)) else getattr(obj, p)
        setattr(obj, last, value)

    def apply_to_parameters(self, fn: Callable) -> Module:
        """Replace every parameter p by fn(p) (e.g. move to a device array)."""
        for name, p in list(self.named_parameters()):
            self._set(name, fn(p))
        return self


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, Module)


def fit_report(expected: Mapping[str, tuple], tensors: Mapping[str, object]) -> str | None:
    """What keeps `tensors` (name -> anything with .shape) from filling parameters of shapes
    `expected`: missing, unexpected and wrong-shape keys, all at once; None when they fit."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k])}"
                   for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
            parts.append(f"{len(items)} {title}: {shown}")
    return "; ".join(parts) or None


def load(module: Module, tensors: Mapping[str, object], *, what: str = "model", dtype=np.float32,
         ignore: Callable[[str], bool] = lambda k: False) -> Module:
    """Fill every parameter of `module` from `tensors` (name -> array-like with .shape).
    Missing keys, unexpected keys and shape mismatches are all reported in one WeightsError."""
    expected = module.parameter_shapes()
    kept = {k: tensors[k] for k in tensors.keys() if not ignore(k)}
    report = fit_report(expected, kept)
    if report:
        raise WeightsError(f"weights do not fit the {what}: {report}")
    for k in expected:
        module._set(k, np.ascontiguousarray(np.asarray(kept[k]), dtype=dtype))
    return module


# ----------------------------------------------------------------------------- layers


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.weight = param(out_features, in_features)
        self.bias = param(out_features) if bias else None

    def __call__(self, x):  # (..., in) -> (..., out)
        return kernels.ops().linear(x, self.weight, self.bias)


class Conv2d(Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding=0, bias: bool = True):
        self.weight = param(cout, cin, kernel_size, kernel_size)
        self.bias = param(cout) if bias else None
        self.stride, self.padding = stride, padding

    def __call__(self, x):  # (N, Cin, H, W) -> (N, Cout, Ho, Wo)
        return kernels.ops().conv2d(x, self.weight, self.bias, self.stride, self.padding)


class GroupNorm(Module):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        self.weight = param(num_channels)
        self.bias = param(num_channels)
        self.num_groups, self.eps = num_groups, eps

    def __call__(self, x, silu: bool = False):  # (N, C, ...) -> same
        return kernels.ops().group_norm(x, self.num_groups, self.weight, self.bias, self.eps, silu=silu)


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        self.weight = param(dim)
        self.bias = param(dim)
        self.eps = eps

    def __call__(self, x):  # (..., C) -> same
        return kernels.ops().layer_norm(x, self.weight, self.bias, self.eps)


class Embedding(Module):
    def __init__(self, num: int, dim: int):
        self.weight = param(num, dim)

    def __call__(self, ids):  # (B, T) int -> (B, T, dim)
        return self.weight[ids]


def split_heads(x, heads: int):
    """(B, T, C) -> (B, H, T, C/H)"""
    B, T, C = x.shape
    return x.reshape(B, T, heads, C // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, D) -> (B, T, H·D)"""
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)
