"""cpu ops against torch outputs committed in tests/fixtures/kernels/torch_ops.npz (made by
tests/fixtures/make_kernels.py), so the default suite checks torch agreement without torch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from support import FIXTURES
from support.kernel_cases import assert_close, error_scale, ops

DATA = np.load(FIXTURES / "kernels" / "torch_ops.npz")
INDEX = json.loads(str(DATA["index"]))


def _args(spec):
    return [DATA[s["array"]] if "array" in s else s["value"] for s in spec]


@pytest.mark.parametrize("case", INDEX, ids=[f"{i}-{c['op']}" for i, c in enumerate(INDEX)])
@pytest.mark.parametrize("backend", ["cpu", "ref"])
def test_op_matches_committed_torch_output(case, backend):
    op, args, kw = case["op"], _args(case["args"]), case["kwargs"]
    if op == "conv2d" and isinstance(kw.get("padding"), list):
        kw = {**kw, "padding": tuple(kw["padding"])}
    got = getattr(ops(backend), op)(*args, **kw)
    assert_close(got, DATA[case["out"]], error_scale(op, args, kw), what=f"{backend}.{op}")


def test_fixture_covers_every_op():
    from minriff.kernels import OP_NAMES

    assert {c["op"] for c in INDEX} == set(OP_NAMES)
