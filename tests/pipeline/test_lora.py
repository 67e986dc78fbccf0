"""LoRA on the pipeline (minriff/lora.py): the committed diffusers results (tests/fixtures/lora/, made by
make_lora.py with diffusers' load_lora_weights + fuse_lora at 0.7) without torch, the merge against
a float64 NumPy reference, stacking, reweighting, weight 0 and unloading bit for bit, the text cache,
clone, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minriff.errors import InputError, WeightsError
from support.lora_cases import (
    kohya_name,
    layer_shapes,
    ml,
    mp,
    pairs,
    random_kohya,
    reference_merge,
    save,
    tiny_riff,
    weight_of,
)

pytestmark = pytest.mark.usefixtures("serial_numba")


def assert_same_image(ours, theirs, what):
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert np.mean(diff <= 1) >= 0.99, f"{what}: {np.mean(diff <= 1):.2%} of pixels within 1/255 (max {diff.max()})"


def snapshot(riff) -> dict:
    return {name: np.array(p, copy=True) for name, p in riff.named_parameters()}


def assert_bit_identical(riff, snap):
    for name, p in riff.named_parameters():
        same_bits = np.array_equal(np.asarray(p).view(np.uint8), snap[name].view(np.uint8))
        assert p.dtype == snap[name].dtype and same_bits, name


@pytest.fixture(scope="module")
def expected():
    return np.load(ml.EXPECTED)


@pytest.fixture
def riff():
    return tiny_riff()


@pytest.mark.parametrize("label", ["kohya", "peft"])
def test_committed_diffusers_fused_weights(riff, expected, label):
    riff.load_lora({"kohya": ml.KOHYA, "peft": ml.PEFT}[label], weight=ml.WEIGHT)
    keys = [k for k in expected.files if k.startswith(label + "/")]
    assert len(keys) == 11  # one layer of each kind, make_lora.KEPT
    for key in keys:
        comp, module = key[len(label) + 1:].split(".", 1)
        ref = expected[key]
        got = weight_of(riff, comp, module)
        assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max(), key


@pytest.mark.parametrize("label", ["kohya", "peft", "stacked"])
def test_committed_diffusers_images(riff, expected, label):
    files = {"kohya": [(ml.KOHYA, ml.WEIGHT)], "peft": [(ml.PEFT, ml.WEIGHT)],
             "stacked": [(ml.KOHYA, ml.STACK[0]), (ml.PEFT, ml.STACK[1])]}[label]
    for path, weight in files:
        riff.load_lora(path, weight=weight)
    image = mp.run_minriff(riff, mp.CASES[ml.CASE])
    base = np.load(mp.EXPECTED)[ml.CASE]
    assert np.mean(np.abs(image.astype(int) - base.astype(int)) > 2) > 0.3  # the LoRA visibly changes the image
    assert_same_image(image, expected[f"image/{label}"], label)


def test_stack_reweight_unload_bit_for_bit(riff):
    snap = snapshot(riff)
    a = riff.load_lora(ml.KOHYA, weight=0.7)
    b = riff.load_lora(ml.PEFT, weight=0.5)
    stacked = snapshot(riff)
    riff.set_lora_weight(a, 0.0)
    riff.set_lora_weight(b, 0.0)
    assert_bit_identical(riff, snap)  # weight 0 is no LoRA, exactly
    riff.set_lora_weight(b, 0.5)
    riff.set_lora_weight(a, 0.7)
    assert_bit_identical(riff, stacked)  # the same weights however they were reached
    riff.unload_lora(a)
    only_b = snapshot(riff)
    riff.unload_lora(b)
    assert_bit_identical(riff, snap)
    assert riff.loras == []
    riff.load_lora(ml.PEFT, weight=0.5)
    assert_bit_identical(riff, only_b)


@pytest.mark.parametrize("fp16_values", [True, False])
def test_originals_kept_for_unloading(riff, fp16_values):
    """Weights that are all float16 values (an fp16 file) are kept as an exact float16 copy: half the memory."""
    if fp16_values:
        riff.set_parameters(riff.parameters().astype(np.float16).astype(np.float32))
    snap = snapshot(riff)
    name = riff.load_lora(ml.KOHYA, weight=0.7)
    touched = [snap[f"{c}.{m}.weight"] for c, m in riff._lora._kept]
    fp16_exact = [np.array_equal(v, v.astype(np.float16).astype(np.float32)) for v in touched]
    assert all(fp16_exact) if fp16_values else not any(fp16_exact)
    lora_bytes = sum(la.down.nbytes + la.up.nbytes for la in riff._lora._loaded[name].lora.layers)
    touched = sum(weight_of(riff, c, m).nbytes for c, m in riff._lora._kept)
    assert len(riff._lora._kept) == 91
    assert riff._lora.kept_bytes == (touched // 2 if fp16_values else touched) + lora_bytes
    riff.unload_lora(name)
    assert_bit_identical(riff, snap)
    assert riff._lora.kept_bytes == 0 and not riff._lora._kept


def test_weights_beyond_fp16_range_are_kept_as_they_are(riff):
    import warnings

    riff.set_parameters(riff.parameters().astype(np.float16).astype(np.float32))
    key = ("unet", "down_blocks.0.resnets.0.conv1")
    w = weight_of(riff, *key).copy()
    w.flat[0] = 1e6  # not a float16 value: the tensor cannot be kept as float16
    riff.unet._set(key[1] + ".weight", w)
    snap = snapshot(riff)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the float16 attempt
        name = riff.load_lora(ml.KOHYA, weight=0.7)
    assert riff._lora._kept[key].array.dtype == np.float32
    assert riff._lora._kept[("unet", "down_blocks.0.resnets.0.conv2")].array.dtype == np.float16
    riff.unload_lora(name)
    assert_bit_identical(riff, snap)


def test_float16_parameters_merge_in_float32_and_stay_float16(tmp_path):
    """Parameters kept as float16 in memory: each merged tensor is float16(W0 + Σ Δ summed in float32),
    the original is kept as it is (no copy), and unloading gives its bits back."""
    from minriff import Riffusion

    riff = Riffusion.load(mp.WEIGHTS, quiet=True, dtype=np.float16)
    shapes = layer_shapes(riff)
    base = {key: np.array(weight_of(riff, *key)) for key in shapes}
    assert all(w.dtype == np.float16 for w in base.values())
    snap = snapshot(riff)
    sd = random_kohya(shapes, seed=3, rank=4, alpha=lambda c, m: 2.0 + len(m) % 3)
    name = riff.load_lora(save(tmp_path / "l.safetensors", sd), weight=0.7)
    lora = pairs(sd)
    for (comp, module), w0 in base.items():
        got = weight_of(riff, comp, module)
        ref = reference_merge(w0, [(0.7, *lora[kohya_name(comp, module)])])
        assert got.dtype == np.float16, (comp, module)
        # one float16 rounding of the float32 sum: within a float16 ulp of the float64 reference
        assert np.all(np.abs(got.astype(np.float64) - ref) <= 2.0**-10 * np.abs(ref) + 2.0**-24), (comp, module)
        assert not np.array_equal(got, w0), (comp, module)
        assert riff._lora._kept[comp, module].array.dtype == np.float16
    riff.unload_lora(name)
    assert_bit_identical(riff, snap)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.floats(-2, 2, allow_nan=False).filter(lambda w: abs(w) > 1e-3), min_size=1, max_size=3),
       rank=st.integers(1, 5), seed=st.integers(0, 1000), fp16=st.booleans())
def test_merge_matches_numpy_reference(riff, tmp_path_factory, weights, rank, seed, fp16):
    """Each touched tensor = W0 + Σ w_i (alpha_i / r_i) up_i @ down_i (float64 reference), alphas per layer."""
    shapes = layer_shapes(riff)
    base = {key: np.array(weight_of(riff, *key)) for key in shapes}
    files = []
    for i, w in enumerate(weights):
        sd = random_kohya(shapes, seed=seed + i, rank=rank + i, alpha=lambda c, m, i=i: [None, 1.0 + len(m) % 4][i % 2],
                          dtype=np.float16 if fp16 else np.float32)
        name = riff.load_lora(save(tmp_path_factory.mktemp("ref") / "l.safetensors", sd), weight=w, name=f"l{i}")
        files.append((w, pairs(sd), name))
    try:
        for (comp, module), w0 in base.items():
            key = kohya_name(comp, module)
            ref = reference_merge(w0, [(w, *p[key]) for w, p, _ in files])
            got = weight_of(riff, comp, module)
            assert np.abs(got - ref).max() <= 2e-6 * max(np.abs(ref).max(), 1e-3), (comp, module)
    finally:
        for *_, name in files:
            riff.unload_lora(name)


def test_text_encoder_lora_clears_the_text_cache(riff, tmp_path):
    before = riff.encode_prompt("jazz").copy()
    name = riff.load_lora(ml.KOHYA, weight=0.7)
    changed = riff.encode_prompt("jazz")
    assert np.abs(changed - before).max() > 1e-3
    riff.set_lora_weight(name, 0.0)
    assert np.array_equal(riff.encode_prompt("jazz"), before)
    riff.unload_lora(name)
    unet_only = {k: v for k, v in _kohya(ml.KOHYA).items() if k.startswith("lora_unet_")}
    riff.encode_prompt("jazz")
    riff.load_lora(save(tmp_path / "unet_only.safetensors", unet_only))
    assert "jazz" in riff._text_cache  # a UNet-only LoRA leaves the cache alone


def _kohya(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_clone_has_its_own_loras(riff):
    snap = snapshot(riff)
    name = riff.load_lora(ml.KOHYA, weight=0.7)
    twin = riff.clone()
    twin.set_lora_weight(name, 0.2)
    twin.unload_lora(name)
    assert_bit_identical(twin, snap)
    assert [i.name for i in riff.loras] == [name] and riff.loras[0].weight == 0.7
    riff.unload_lora(name)
    assert_bit_identical(riff, snap)


def test_names_infos_and_refusals(riff, tmp_path):
    a = riff.load_lora(ml.KOHYA)
    b = riff.load_lora(ml.KOHYA, weight=-0.5)
    assert (a, b) == ("kohya", "kohya-2")
    info = riff.loras[1]
    assert (info.name, info.weight, info.rank, info.format) == ("kohya-2", -0.5, 4, "kohya")
    assert info.targets == {"unet": 79, "text_encoder": 12} and info.file.endswith("kohya.safetensors")
    with pytest.raises(InputError, match="already loaded"):
        riff.load_lora(ml.PEFT, name="kohya")
    with pytest.raises(InputError, match="no LoRA named 'x' is loaded \\(loaded: kohya, kohya-2\\)"):
        riff.set_lora_weight("x", 1.0)
    for bad in (float("nan"), float("inf"), "1", True, None, 100.5, -1e300, 10**400, np.bool_(True)):
        with pytest.raises(InputError, match=r"LoRA weight must be a number in \[-100, 100\]"):
            riff.set_lora_weight(a, bad)
    with pytest.raises(InputError, match="unload them first"):
        riff.set_parameters(riff.parameters())
    snap = snapshot(riff)
    with pytest.raises(WeightsError, match="not found"):
        riff.load_lora(tmp_path / "missing.safetensors")
    assert len(riff.loras) == 2
    assert_bit_identical(riff, snap)  # a refused file changes nothing


def test_interrupted_merge_leaves_nothing_half_done(riff, monkeypatch):
    snap = snapshot(riff)
    from minriff.weights.lora import LoraLayer

    calls = {"n": 0}
    real = LoraLayer.delta

    def failing(self, factor):
        calls["n"] += 1
        if calls["n"] == 20:
            raise MemoryError("simulated")
        return real(self, factor)

    monkeypatch.setattr(LoraLayer, "delta", failing)
    with pytest.raises(MemoryError):
        riff.load_lora(ml.KOHYA)
    assert riff.loras == []
    assert_bit_identical(riff, snap)
