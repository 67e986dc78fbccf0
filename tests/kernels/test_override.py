"""`kernels.override`: a replacement op for one `with` block, behind the same shape checks, with
whatever was there before (built-in or an earlier register/override) restored on any exit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minriff import kernels
from minriff.configs import TINY
from minriff.models import init as model_init
from minriff.models.unet import UNet2DConditionModel

BUILT_IN = {op: getattr(kernels.ops("cpu"), op + "_unchecked") for op in kernels.OP_NAMES}


@pytest.fixture(autouse=True)
def clean_registry():
    kernels.backend("cpu")
    yield
    leftover = {op for op in kernels.OP_NAMES if kernels.ops("cpu").__dict__[op + "_unchecked"] is not BUILT_IN[op]}
    for op in kernels.OP_NAMES:
        kernels.unregister("cpu", op)
    assert not leftover, f"a test left overrides behind: {leftover}"


def current(op, backend="cpu"):
    return getattr(kernels.ops(backend), op + "_unchecked")


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny_unet():
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # a tiny model is dominated by thread start-up on a shared machine
    unet = model_init.init_random(UNet2DConditionModel(TINY.unet), seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 16, 16), dtype=np.float32)
    ctx = rng.standard_normal((1, 77, TINY.unet.cross_attention_dim), dtype=np.float32)
    yield lambda: unet(x, 500, ctx)
    numba.set_num_threads(threads)


def test_override_is_used_by_a_model_forward_and_only_inside(tiny_unet):
    baseline = tiny_unet()
    spy = Counting(BUILT_IN["attention"])
    with kernels.override("cpu", "attention", spy) as F:
        assert F.attention_unchecked is spy
        inside = tiny_unet()
    calls = spy.calls
    assert calls > 0  # the UNet's self- and cross-attention layers went through it
    assert np.array_equal(inside, baseline)  # it delegates to the built-in: same numbers
    after = tiny_unet()
    assert spy.calls == calls and np.array_equal(after, baseline)


def test_a_different_kernel_changes_the_output_then_goes_away(tiny_unet):
    baseline = tiny_unet()
    with kernels.override("cpu", "silu", lambda x: np.zeros_like(x)):
        changed = tiny_unet()
    assert not np.allclose(changed, baseline)
    assert np.array_equal(tiny_unet(), baseline)


def test_shape_checks_run_in_front_of_the_override():
    q = np.zeros((1, 2, 3, 4), np.float32)
    k = np.zeros((1, 2, 5, 8), np.float32)  # head dim 8 vs 4
    with pytest.raises(ValueError) as built_in_error:
        kernels.ops("cpu").attention(q, k, k)
    spy = Counting(BUILT_IN["attention"])
    with kernels.override("cpu", "attention", spy) as F:
        with pytest.raises(ValueError) as override_error:
            F.attention(q, k, k)
    assert str(override_error.value) == str(built_in_error.value)
    assert spy.calls == 0


def test_restores_the_built_in_after_normal_exit_and_after_an_exception():
    with kernels.override("cpu", "softmax", lambda x, axis=-1: x):
        assert current("softmax") is not BUILT_IN["softmax"]
    assert current("softmax") is BUILT_IN["softmax"]
    with pytest.raises(RuntimeError, match="boom"):
        with kernels.override("cpu", "softmax", lambda x, axis=-1: x):
            raise RuntimeError("boom")
    assert current("softmax") is BUILT_IN["softmax"]
    x = np.array([[0.0, np.log(3.0)]], np.float32)
    np.testing.assert_allclose(kernels.ops("cpu").softmax(x), [[0.25, 0.75]], rtol=1e-6)


def test_restores_an_earlier_registered_op():
    def mine(x):
        return x

    def temporary(x):
        return -x

    kernels.register("cpu", "silu", mine)
    try:
        with kernels.override("cpu", "silu", temporary):
            assert current("silu") is temporary
        assert current("silu") is mine
        with pytest.raises(KeyError):
            with kernels.override("cpu", "silu", temporary):
                {}["missing"]
        assert current("silu") is mine
    finally:
        kernels.unregister("cpu", "silu")


def test_nesting_same_op_and_different_ops():
    def f1(x):
        return x

    def f2(x):
        return x

    with kernels.override("cpu", "gelu", f1):
        with kernels.override("cpu", "gelu", f2), kernels.override("cpu", "silu", f1):
            assert current("gelu") is f2 and current("silu") is f1
        assert current("gelu") is f1 and current("silu") is BUILT_IN["silu"]
    assert current("gelu") is BUILT_IN["gelu"]


def test_other_backends_are_untouched():
    ref_softmax = current("softmax", "ref")
    with kernels.override("cpu", "softmax", lambda x, axis=-1: x):
        assert current("softmax", "ref") is ref_softmax


@pytest.mark.parametrize("args,error,match", [
    (("gpu", "softmax", len), ValueError, "unknown kernel backend 'gpu'"),
    (("cpu", "sofmax", len), ValueError, "unknown op 'sofmax'"),
    (("cpu", "softmax", 3), TypeError, "must be callable"),
])
def test_bad_arguments_fail_before_changing_anything(args, error, match):
    with pytest.raises(error, match=match):
        with kernels.override(*args):
            pytest.fail("the block must not run")
    assert all(current(op) is BUILT_IN[op] for op in kernels.OP_NAMES)


@settings(max_examples=30)
@given(plan=st.lists(st.tuples(st.sampled_from(["silu", "gelu", "softmax"]), st.booleans()), min_size=1, max_size=6),
       register_first=st.booleans())
def test_any_nesting_with_exceptions_restores_each_level(plan, register_first):
    """Nested overrides per `plan` (op, raise on the way out of that level?): every level sees its
    own function inside and the state of the level around it afterwards."""
    def make():
        return lambda *a, **k: None

    outer = make()
    if register_first:
        kernels.register("cpu", "silu", outer)
    expected_before = {op: current(op) for op in ("silu", "gelu", "softmax")}

    def level(i):
        if i == len(plan):
            return
        op, raise_out = plan[i]
        before = {o: current(o) for o in expected_before}
        fn = make()
        try:
            with kernels.override("cpu", op, fn):
                assert current(op) is fn
                level(i + 1)
                if raise_out:
                    raise ArithmeticError(i)
        except ArithmeticError as e:
            assert e.args == (i,)
        assert {o: current(o) for o in before} == before

    try:
        level(0)
        assert {op: current(op) for op in expected_before} == expected_before
    finally:
        kernels.unregister("cpu", "silu")
