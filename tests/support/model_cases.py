"""Shared by the UNet and VAE tests: building a model from a diffusers case, and the forward pass
each case is checked with, against committed arrays (default suite) or a live diffusers run
(oracle suite). The cases themselves live in tests/fixtures/make_models.py (`mm`)."""
from __future__ import annotations

import contextlib

from minriff import configs
from minriff.models import nn
from minriff.models.unet import UNet2DConditionModel
from minriff.models.vae import AutoencoderKL
from support import fixture_script

mm = fixture_script("make_models")

_MODELS = {"unet": (UNet2DConditionModel, configs.UNetConfig, "UNet"),
           "vae": (AutoencoderKL, configs.VAEConfig, "VAE")}


def build(area: str, config: dict, weights):
    model_cls, config_cls, what = _MODELS[area]
    return nn.load(model_cls(config_cls.from_dict(config)), weights, what=what)


def fixture_model(area: str, name: str):
    """-> (model, arrays, reference trace) for a committed case of tests/fixtures/<area>/."""
    config, weights, arrays = mm.load_case(area, name)
    ref_trace = {k[len("trace/"):]: v for k, v in arrays.items() if k.startswith("trace/")}
    return build(area, config, weights), arrays, ref_trace


def check_live(area: str, name: str, tmp_path) -> None:
    """Run case `name` in diffusers now and check minriff's model on the same weights, which go
    state dict -> safetensors file -> nn.load: the path a converted checkpoint takes.

    Final outputs are checked against diffusers in float32; every block output against diffusers
    run in float64 on the same weights. Drawn tiny configs (2 channels, 2 pixels) made torch's own
    float32 block output 1.8e-5 off the float64 answer while minriff's was 1e-7 off, so a float32
    oracle at 1e-5 per block would test torch's rounding, not minriff."""
    from safetensors.numpy import load_file, save_file

    run = getattr(mm, f"run_{area}")
    result, truth = run(name), run(name, float64=True)
    path = tmp_path / f"{area}.safetensors"
    save_file(result["weights"], str(path))
    model = build(area, result["config"], load_file(str(path)))
    check = check_unet if area == "unet" else check_vae
    check(model, result, truth["trace"])


@contextlib.contextmanager
def drawn_case(cases: dict, case: dict):
    """Register a hypothesis-drawn case under a temporary name for mm.run_unet/run_vae."""
    cases["_drawn"] = case
    try:
        yield "_drawn"
    finally:
        del cases["_drawn"]


def check_unet(model, case: dict, ref_trace: dict) -> None:
    trace = {}
    out = model(case["x"], case["t"], case["context"], trace=trace)
    assert mm.rel_err(out, case["out"]) <= 1e-4
    mm.check_trace(trace, ref_trace, 1e-5)


def check_vae(model, case: dict, ref_trace: dict) -> None:
    trace = {}
    mean, logvar = model.encode(case["img"], trace=trace)
    z = model.sample(mean, logvar, case["noise"])
    decoded = model.decode(case["z"], trace=trace)
    for got, want in ((mean, "mean"), (logvar, "logvar"), (z, "z"), (decoded, "decoded")):
        assert mm.rel_err(got, case[want]) <= 1e-4, want
    mm.check_trace(trace, ref_trace, 1e-5)
