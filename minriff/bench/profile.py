"""Where a model's time goes, op by op: `minriff bench unet --profile`, or in code

    with op_profile() as prof:
        unet(x, t, context)
    print(prof.table())

Every op of the backend is wrapped (kernels.override) with a timer keyed by the op and its
operand shapes, so a swapped-in kernel shows up in the same table. Times are wall-clock per call:
on the cpu backend each op finishes before it returns; a device backend would need a sync."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

from minriff import kernels


def _shape_key(args) -> str:
    """The operand shapes, e.g. '(2,320,64,64)x(320,320,3,3)'."""
    shapes = [tuple(a.shape) for a in args if hasattr(a, "shape") and getattr(a, "ndim", 0) > 0]
    return "x".join("(" + ",".join(map(str, s)) + ")" for s in shapes)


def flops(op: str, args, out) -> float:
    """Multiply-adds x 2 of one call of the matrix-product ops (0 for the others)."""
    if op == "conv2d":  # out (N, O, Ho, Wo), w (O, C, kh, kw)
        return 2.0 * out.size * args[1][0].size
    if op == "linear":  # out (..., out_features), x (..., in_features)
        return 2.0 * out.size * args[0].shape[-1]
    if op == "attention":  # q (B, H, Tq, D), k (B, H, Tk, D): QKᵀ and PV
        return 4.0 * args[0].size * args[1].shape[-2]
    return 0.0


class Profile:
    def __init__(self):
        self.calls: dict = defaultdict(lambda: [0, 0.0, 0.0])  # (op, shapes) -> [calls, seconds, flops]

    def wrap(self, op: str, fn):
        def timed(*args, **kw):
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            dt = time.perf_counter() - t0
            entry = self.calls[(op, _shape_key(args))]
            entry[0] += 1
            entry[1] += dt
            entry[2] += flops(op, args, out)
            return out

        return timed

    def by_op(self) -> list[tuple[str, int, float]]:
        """[(op, calls, seconds)], slowest first."""
        totals: dict = defaultdict(lambda: [0, 0.0])
        for (op, _), (n, s, _f) in self.calls.items():
            totals[op][0] += n
            totals[op][1] += s
        return sorted(((op, n, s) for op, (n, s) in totals.items()), key=lambda r: -r[2])

    def by_shape(self, top: int = 15) -> list[tuple[str, str, int, float, float]]:
        """[(op, shapes, calls, seconds, GFLOP/s or 0)], the `top` slowest."""
        rows = [(op, shapes, n, s, f / s / 1e9 if s > 0 else 0.0) for (op, shapes), (n, s, f) in self.calls.items()]
        return sorted(rows, key=lambda r: -r[3])[:top]

    def total(self) -> float:
        return sum(s for _, s, _f in self.calls.values())

    def table(self, top: int = 15) -> str:
        total = self.total() or 1e-30
        lines = [f"{'op':<22}{'calls':>7}{'seconds':>10}{'share':>8}"]
        lines += [f"{op:<22}{n:>7}{s:>10.3f}{s / total:>8.1%}" for op, n, s in self.by_op()]
        lines += ["", f"{'op':<22}{'calls':>7}{'seconds':>10}{'GFLOP/s':>9}  shapes"]
        lines += [f"{op:<22}{n:>7}{s:>10.3f}{f'{g:.0f}' if g else '-':>9}  {shapes}"
                  for op, shapes, n, s, g in self.by_shape(top)]
        return "\n".join(lines)


@contextlib.contextmanager
def op_profile(backend: str | None = None):
    """Time every op of `backend` (default: the current one) inside the block; yields a Profile."""
    name = backend or kernels.backend()
    F = kernels.ops(name)
    prof = Profile()
    with contextlib.ExitStack() as stack:
        for op in kernels.OP_NAMES:
            stack.enter_context(kernels.override(name, op, prof.wrap(op, getattr(F, op + "_unchecked"))))
        yield prof
