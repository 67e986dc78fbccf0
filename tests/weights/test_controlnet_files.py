"""ControlNet files: the three published layouts committed by tests/fixtures/make_controlnet.py (a
diffusers folder, a control_v11-style standalone .safetensors in the original keys, a control_sd15-style
.pth holding the base model plus `control_model.*`), converted tensor for tensor; loading, `minriff
convert/info`, and the files minriff refuses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from minriff.cli import main as cli_main
from minriff.errors import WeightsError
from minriff.models.controlnet import ControlNetModel
from minriff.weights import controlnet as cw
from minriff.weights.format import WeightsFile, find_weights
from minriff.weights.safetensors import SafetensorsFile, write_safetensors
from support import FIXTURES, fixture_script

make = fixture_script("make_controlnet")
TINY_SD = FIXTURES / "pipeline" / "tiny_sd.safetensors"


def convert(src, out, config=None, dtype="fp32"):
    cw.convert_controlnet(src, out, dtype=dtype, config=config, log=lambda m: None)
    return SafetensorsFile(out)


@pytest.fixture(scope="module")
def from_diffusers(tmp_path_factory):
    return convert(make.A_DIFFUSERS, tmp_path_factory.mktemp("cn") / "a.safetensors")


def test_diffusers_folder_keeps_its_tensors_and_config(from_diffusers):
    src = SafetensorsFile(make.A_DIFFUSERS / "diffusion_pytorch_model.safetensors")
    assert set(from_diffusers) == {"controlnet." + k for k in src}
    assert all(np.array_equal(from_diffusers["controlnet." + k], src[k]) for k in src)
    config = json.loads(from_diffusers.metadata["config"])["controlnet"]
    folder = json.loads((make.A_DIFFUSERS / "config.json").read_text())
    hint = config["conditioning_embedding_out_channels"]
    assert hint == folder["conditioning_embedding_out_channels"] == [4, 8, 8, 16]
    assert json.loads(from_diffusers.metadata["source"])["type"] == "diffusers-controlnet"


def test_standalone_original_file_equals_the_diffusers_layout(tmp_path, from_diffusers):
    """control_v11-style: the original keys without prefix -> the same tensors under the same names."""
    got = convert(make.A_V11, tmp_path / "v11.safetensors", config="tiny")
    assert set(got) == set(from_diffusers)
    for k in from_diffusers:
        assert np.array_equal(got[k], from_diffusers[k]), k


def test_full_ldm_pth_keeps_only_the_control_model(tmp_path):
    """control_sd15-style .pth (read by the restricted unpickler): control_model.* mapped, the base
    model's keys skipped, and the result is ControlNet B's diffusers state dict (from_unet's names)."""
    from minriff.weights.torchpickle import load, state_dict

    got = convert(make.B_SD15, tmp_path / "b.safetensors", config="tiny")
    raw = state_dict(load(make.B_SD15), "b")
    control = {k for k in raw if k.startswith("control_model.")}
    assert len(got) == len(control) and len(raw) > len(control)  # the base model was there, and left out
    assert json.loads(got.metadata["source"])["ignored"] == len(raw) - len(control)
    shapes = ControlNetModel(cw.ControlNetConfig.from_dict(json.loads(got.metadata["config"])["controlnet"]))
    assert {"controlnet." + k for k in shapes.parameter_shapes()} == set(got)
    # the mapping by hand for three kinds of key
    assert np.array_equal(got["controlnet.controlnet_down_blocks.3.weight"],
                          raw["control_model.zero_convs.3.0.weight"].numpy())
    assert np.array_equal(got["controlnet.controlnet_cond_embedding.conv_out.bias"],
                          raw["control_model.input_hint_block.14.bias"].numpy())
    assert np.array_equal(got["controlnet.down_blocks.0.downsamplers.0.conv.weight"],
                          raw["control_model.input_blocks.2.0.op.weight"].numpy())


def test_config_from_a_diffusers_folder_for_a_single_file(tmp_path, from_diffusers):
    got = convert(make.A_V11, tmp_path / "v11.safetensors", config=make.A_DIFFUSERS)
    assert all(np.array_equal(got[k], from_diffusers[k]) for k in from_diffusers)


def test_sd15_default_config_names_the_mismatch(tmp_path):
    with pytest.raises(WeightsError, match="pass --config"):
        convert(make.A_V11, tmp_path / "x.safetensors")  # tiny tensors, SD 1.5 config: keys do not map
    wider = dict(json.loads((make.A_DIFFUSERS / "config.json").read_text()), block_out_channels=[8, 32])
    (tmp_path / "config.json").write_text(json.dumps(wider))
    with pytest.raises(WeightsError, match="do not fit the ControlNet.*wrong shape"):
        convert(make.A_V11, tmp_path / "x.safetensors", config=tmp_path / "config.json")  # keys map, shapes not


def test_hint_indices():
    assert [cw.hint_key(i, 6) for i in range(0, 16)] == [
        "conv_in", None, "blocks.0", None, "blocks.1", None, "blocks.2", None, "blocks.3", None, "blocks.4", None,
        "blocks.5", None, "conv_out", None]


def test_load_and_dtypes(tmp_path):
    convert(make.A_DIFFUSERS, tmp_path / "h.safetensors", dtype="fp16")
    model = cw.load_controlnet(tmp_path / "h.safetensors")
    assert isinstance(model, ControlNetModel)
    assert model.conv_in.weight.dtype == np.float16
    assert cw.load_controlnet(tmp_path / "h.safetensors", dtype=np.float32).conv_in.weight.dtype == np.float32


def test_controlnet_file_is_not_a_model_file_and_never_shadows_one(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "main.safetensors").write_bytes(TINY_SD.read_bytes())
    convert(make.A_DIFFUSERS, folder / "zz_controlnet.safetensors")  # newer than the main file
    assert find_weights(folder) == folder / "main.safetensors"
    with pytest.raises(WeightsError, match="holds a ControlNet"):
        WeightsFile(folder / "zz_controlnet.safetensors")
    with pytest.raises(WeightsError, match="not a minriff ControlNet file"):
        cw.ControlNetFile(folder / "main.safetensors")


def test_not_a_controlnet(tmp_path):
    f = tmp_path / "other.safetensors"
    write_safetensors(f, [("conv.weight", (2, 2), "F32", lambda: np.zeros((2, 2), np.float32))], {})
    assert not cw.is_controlnet_source(f)
    with pytest.raises(WeightsError, match="not a ControlNet"):
        cw.read_controlnet_source(f)
    assert not cw.is_controlnet_source(TINY_SD.parent)  # a folder without a ControlNet config


def test_unknown_original_key_is_named(tmp_path):
    from safetensors.numpy import save_file  # safetensors is a test dependency

    src = SafetensorsFile(make.A_V11)
    tensors = {k: src[k] for k in src}
    tensors["output_blocks.0.0.in_layers.0.weight"] = np.zeros(4, np.float32)  # a ControlNet has no up path
    save_file(tensors, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match=r"1 ControlNet keys .*output_blocks\.0\.0\.in_layers\.0\.weight"):
        convert(tmp_path / "bad.safetensors", tmp_path / "x.safetensors", config="tiny")


def test_cli_convert_and_info(tmp_path, capsys):
    out = tmp_path / "cn.safetensors"
    assert cli_main(["convert", str(make.B_SD15), "-o", str(out), "--config", "tiny"]) == 0
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ControlNet" in text and "8/16 channels" in text and "8x the latent size" in text
    assert cli_main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "controlnet" and info["controlnet"]["tensors"] == len(SafetensorsFile(out))
    assert cli_main(["convert", str(make.A_DIFFUSERS), "-o", str(tmp_path / "y.safetensors"), "--ema"]) == 2
    assert "ControlNet" in capsys.readouterr().err
