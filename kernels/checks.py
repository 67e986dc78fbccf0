"""The op declarations: every op is declared here once, by its argument check (`@op`), and that
is what makes it an op. Its name, signature and docstring are the op's; each backend registers an
implementation simply by defining a function of the same name (ref.py, cpu/__init__.py,
cuda/ops.py). Bad shapes fail here with a clear ValueError, never inside a kernel, whichever
backend (or user replacement) runs the op. A checker receives the op's arguments and returns nothing.
"""
from __future__ import annotations

import functools

OPS: dict = {}  # op name -> its check, in declaration order


def op(check):
    """Declare an op: `@op def name(args...)` checks the arguments of `name`."""
    OPS[check.__name__] = check
    return check


def _nd(name, a, n, what):
    if getattr(a, "ndim", None) != n:
        raise ValueError(f"{name}: {what} must be {n}-D, got shape {tuple(getattr(a, 'shape', ()))}")


def _array(name, a):
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise ValueError(f"{name}: expected an array, got {type(a).__name__}")


def _vec(name, a, n, what):
    if a is not None and tuple(a.shape) != (n,):
        raise ValueError(f"{name}: {what} must have shape ({n},), got {tuple(a.shape)}")


def conv_padding(padding):
    """int or (top, bottom, left, right) -> 4-tuple of non-negative ints."""
    if isinstance(padding, int):
        p = (padding,) * 4
    else:
        p = tuple(int(v) for v in padding)
        if len(p) == 2:  # (pad_h, pad_w), as torch writes it
            p = (p[0], p[0], p[1], p[1])
    if len(p) != 4 or min(p) < 0:
        raise ValueError(f"conv2d: padding must be an int or (top, bottom, left, right) >= 0, got {padding!r}")
    return p


@op
def conv2d(x, w, b=None, stride=1, padding=0):
    _nd("conv2d", x, 4, "x (N, C, H, W)")
    _nd("conv2d", w, 4, "w (O, C, kh, kw)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels but w expects {w.shape[1]} (w shape {tuple(w.shape)})")
    _vec("conv2d", b, w.shape[0], "bias")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"conv2d: stride must be a positive int, got {stride!r}")
    t, bo, l, r = conv_padding(padding)
    if x.shape[2] + t + bo < w.shape[2] or x.shape[3] + l + r < w.shape[3]:
        raise ValueError(f"conv2d: kernel {tuple(w.shape[2:])} larger than padded input {tuple(x.shape[2:])}")


@op
def linear(x, w, b=None):
    _nd("linear", w, 2, "w (out, in)")
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: x last dim {x.shape[-1] if x.ndim else None} != w in-features {w.shape[1]}")
    _vec("linear", b, w.shape[0], "bias")


@op
def group_norm(x, groups, weight, bias, eps, silu=False):
    if x.ndim < 2:
        raise ValueError(f"group_norm: x must be (N, C, ...), got shape {tuple(x.shape)}")
    C = x.shape[1]
    if not isinstance(groups, int) or groups < 1 or C % groups:
        raise ValueError(f"group_norm: {C} channels cannot be split into {groups!r} groups")
    _vec("group_norm", weight, C, "weight")
    _vec("group_norm", bias, C, "bias")
    if not eps > 0:
        raise ValueError(f"group_norm: eps must be > 0, got {eps!r}")


@op
def layer_norm(x, weight, bias, eps):
    if x.ndim < 1:
        raise ValueError("layer_norm: x must have at least one axis")
    _vec("layer_norm", weight, x.shape[-1], "weight")
    _vec("layer_norm", bias, x.shape[-1], "bias")
    if not eps > 0:
        raise ValueError(f"layer_norm: eps must be > 0, got {eps!r}")


@op
def attention(q, k, v, scale=None, causal=False):
    for n, a in (("q", q), ("k", k), ("v", v)):
        _nd("attention", a, 4, f"{n} (B, H, T, D)")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"attention: shapes do not agree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"attention: q and k head dims differ: {q.shape[3]} vs {k.shape[3]}")
    if k.shape[2] < 1:
        raise ValueError("attention: need at least one key")


@op
def softmax(x, axis=-1):
    if x.ndim < 1 or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis {axis} out of range for shape {tuple(x.shape)}")


@op
def silu(x):
    _array("silu", x)


@op
def relu(x, residual=None):
    _array("relu", x)
    if residual is not None:
        _array("relu", residual)
    if residual is not None and tuple(residual.shape) != tuple(x.shape):
        raise ValueError(f"relu: residual shape {tuple(residual.shape)} differs from x shape {tuple(x.shape)}")


@op
def gelu(x):
    _array("gelu", x)


@op
def quick_gelu(x):
    _array("quick_gelu", x)


@op
def geglu(x):
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"geglu: last axis must be even (two halves), got shape {tuple(x.shape)}")


@op
def upsample_nearest2x(x):
    _nd("upsample_nearest2x", x, 4, "x (N, C, H, W)")


@op
def timestep_embedding(t, dim, flip_sin_to_cos=True, shift=0.0):
    if getattr(t, "ndim", None) != 1:
        raise ValueError(f"timestep_embedding: t must be 1-D (B,), got shape {tuple(getattr(t, 'shape', ()))}")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"timestep_embedding: dim must be an int >= 2, got {dim!r}")
    if dim // 2 == shift:
        raise ValueError(f"timestep_embedding: shift {shift!r} equals dim // 2, so the frequencies divide by zero")


def checked(name, impl):
    """`impl` behind the declared check of op `name`."""
    check = OPS[name]

    @functools.wraps(impl)
    def run(*args, **kwargs):
        check(*args, **kwargs)
        return impl(*args, **kwargs)

    run.impl = impl
    return run
