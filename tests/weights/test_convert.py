"""Conversion from the committed fixtures (made by diffusers/torch in tests/fixtures/make_weights.py):
the Riffusion-era diffusers folder, the same weights as an original single-file checkpoint (.ckpt,
and re-packed as .safetensors), the key variants, EMA selection, tokenizers, unsupported models."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from minriff import weights
from minriff.cli import main as cli_main
from minriff.errors import UnsupportedModelError, WeightsError
from minriff.weights import convert, safetensors, torchpickle
from minriff.weights.safetensors import write_safetensors
from support import FIXTURES

W = FIXTURES / "weights"
FOLDER = W / "tiny-diffusers"
CKPT = W / "tiny-ldm.ckpt"


def _source_tensors():
    """The fixture's own tensors, read from the torch .bin files, with the renames the
    converter must apply (old VAE attention names, position_ids dropped)."""
    out = {}
    old = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
    for comp, fname in (("unet", "diffusion_pytorch_model.bin"), ("vae", "diffusion_pytorch_model.bin"),
                        ("text_encoder", "pytorch_model.bin")):
        sd = torchpickle.state_dict(torchpickle.load(FOLDER / comp / fname))
        for k, v in sd.items():
            if k.endswith("position_ids"):
                continue
            parts = k.split(".")
            if comp == "vae" and len(parts) > 2 and parts[-2] in old:
                k = ".".join(parts[:-2] + [old[parts[-2]], parts[-1]])
            out[f"{comp}.{k}"] = np.asarray(v)
    return out


@pytest.fixture(scope="module")
def from_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "folder.safetensors"
    convert.convert(FOLDER, out, dtype="fp32", log=lambda m: None)
    return weights.WeightsFile(out)


def _assert_same(a: weights.WeightsFile, b: weights.WeightsFile):
    assert list(a.tensors) == list(b.tensors)
    for k in a.tensors:
        assert np.array_equal(a.tensors[k], b.tensors[k]), k


def test_diffusers_folder_every_tensor_mapped_and_equal(from_folder):
    src = _source_tensors()
    got = from_folder.tensors
    assert set(got) == set(src)
    for k, v in src.items():
        assert got[k].dtype == np.float32 and np.array_equal(got[k], v.reshape(got[k].shape)), k
        assert got[k].shape == v.shape or k.startswith("vae.")  # only VAE attention is reshaped
    assert from_folder.config.unet.block_out_channels == (8, 16)
    assert from_folder.scheduler_config["_class_name"] == "PNDMScheduler"
    assert from_folder.source["type"] == "diffusers" and from_folder.source["unet"].endswith(".bin")
    assert from_folder.tokenizer()("funky bass")[0, 0] == from_folder.tokenizer().bos_id


def test_fp16_default_is_the_rounded_fp32(tmp_path, from_folder):
    out = tmp_path / "h.safetensors"
    assert cli_main(["convert", str(FOLDER), "-o", str(out)]) == 0
    h = weights.WeightsFile(out)
    for k in h.tensors:
        assert h.tensors.dtype_name(k) == "F16"
        assert np.array_equal(h.tensors[k], from_folder.tensors[k].astype(np.float16)), k


def test_ldm_ckpt_converts_to_identical_tensors(tmp_path, from_folder):
    out = tmp_path / "ldm.safetensors"
    ck = convert.convert(CKPT, out, dtype="fp32", config=FOLDER, log=lambda m: None)
    assert any("EMA" in n for n in ck.notes)
    got = weights.WeightsFile(out)
    _assert_same(got, from_folder)
    assert got.source == {"type": "ldm-single-file", "path": str(CKPT), "ema": False}
    assert got.has_tokenizer  # taken from the --config folder


def test_ldm_safetensors_converts_to_identical_tensors(tmp_path, from_folder):
    sd = torchpickle.state_dict(torchpickle.load(CKPT))
    single = tmp_path / "ldm-single.safetensors"
    names = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.int64): "I64",
             np.dtype(np.int32): "I32"}
    write_safetensors(single, [(k, t.shape, names[t.dtype], t.numpy) for k, t in sd.items()])
    out = tmp_path / "o.safetensors"
    convert.convert(single, out, dtype="fp32", config=FOLDER, log=lambda m: None)
    _assert_same(weights.WeightsFile(out), from_folder)


def test_ema_weights_on_request(tmp_path, from_folder):
    out = tmp_path / "ema.safetensors"
    assert cli_main(["convert", str(CKPT), "--config", str(FOLDER), "--ema", "--dtype", "fp32", "-o", str(out)]) == 0
    ema = weights.WeightsFile(out)
    assert ema.source["ema"] is True
    for k in from_folder.tensors:  # make_weights stored EMA = -model for the UNet only
        want = -from_folder.tensors[k] if k.startswith("unet.") else from_folder.tensors[k]
        assert np.array_equal(ema.tensors[k], want), k


def test_ldm_without_tokenizer_stores_none_and_says_so(tmp_path):
    out = tmp_path / "nt.safetensors"
    notes = []
    convert.convert(CKPT, out, config="tiny", log=notes.append)
    wf = weights.WeightsFile(out)
    assert not wf.has_tokenizer and any("--tokenizer" in n for n in notes)
    with pytest.raises(WeightsError, match="--tokenizer"):
        wf.tokenizer()
    out2 = tmp_path / "t.safetensors"
    convert.convert(CKPT, out2, config="tiny", tokenizer=FOLDER / "tokenizer", log=lambda m: None)
    assert weights.WeightsFile(out2).has_tokenizer


def test_default_sd15_config_mismatch_is_explained():
    with pytest.raises(WeightsError, match="--config"):
        convert.read_source(CKPT)


# ----------------------------------------------------------------------------- key and file variants


def _copy_folder(tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(FOLDER, dst)
    return dst


def _rewrite(path, fn, fmt="safetensors"):
    """Re-save a component's tensors after fn(dict) -> dict, as safetensors or torch .bin."""
    sd = {k: np.asarray(v) for k, v in torchpickle.state_dict(torchpickle.load(path)).items()}
    sd = fn(sd)
    path.unlink()
    if fmt == "safetensors":
        out = path.with_name(path.name.replace(".bin", ".safetensors").replace("pytorch_model", "model")
                             if "text_encoder" in str(path) else path.name.replace(".bin", ".safetensors"))
        write_safetensors(out, [(k, v.shape, safetensors.NAMES[v.dtype], lambda v=v: v) for k, v in sd.items()])
    else:
        torchpickle.save(path, sd)


def test_current_key_variants_give_the_same_file(tmp_path, from_folder):
    """transformers-5 text encoder keys (no `text_model.`, no position_ids), current VAE attention
    names, safetensors weights, tokenizer.json instead of vocab.json + merges.txt."""
    root = _copy_folder(tmp_path)
    _rewrite(root / "text_encoder" / "pytorch_model.bin",
             lambda sd: {k[len("text_model."):]: v for k, v in sd.items() if not k.endswith("position_ids")})
    new = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

    def vae_current(sd):
        out = {}
        for k, v in sd.items():
            p = k.split(".")
            out[".".join(p[:-2] + [new[p[-2]], p[-1]]) if len(p) > 2 and p[-2] in new else k] = v
        return out
    _rewrite(root / "vae" / "diffusion_pytorch_model.bin", vae_current)
    _rewrite(root / "unet" / "diffusion_pytorch_model.bin", dict)
    vocab = json.loads((root / "tokenizer" / "vocab.json").read_text())
    merges = (root / "tokenizer" / "merges.txt").read_text().split("\n")[1:]
    (root / "tokenizer" / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "BPE", "vocab": vocab, "merges": [m.split(" ") for m in merges if m]}}))
    (root / "tokenizer" / "vocab.json").unlink()
    (root / "tokenizer" / "merges.txt").unlink()
    out = tmp_path / "v.safetensors"
    ck = convert.convert(root, out, dtype="fp32", log=lambda m: None)
    assert (ck.source["vae"] == "diffusion_pytorch_model.safetensors" and
            ck.source["text_encoder"] == "model.safetensors")
    got = weights.WeightsFile(out)
    _assert_same(got, from_folder)
    assert got.tokenizer().vocab == from_folder.tokenizer().vocab


def test_vae_attention_as_conv_weights_in_a_folder(tmp_path, from_folder):
    root = _copy_folder(tmp_path)

    def as_conv(sd):
        return {k: (v[:, :, None, None] if k.split(".")[-2] in ("query", "key", "value", "proj_attn")
                    and k.endswith("weight") else v) for k, v in sd.items()}
    _rewrite(root / "vae" / "diffusion_pytorch_model.bin", as_conv, fmt="bin")
    out = tmp_path / "c.safetensors"
    convert.convert(root, out, dtype="fp32", log=lambda m: None)
    _assert_same(weights.WeightsFile(out), from_folder)


def test_sharded_weights(tmp_path, from_folder):
    root = _copy_folder(tmp_path)
    sd = {k: np.asarray(v)
          for k, v in torchpickle.state_dict(torchpickle.load(root / "unet" / "diffusion_pytorch_model.bin")).items()}
    (root / "unet" / "diffusion_pytorch_model.bin").unlink()
    keys = sorted(sd)
    shards = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        write_safetensors(root / "unet" / name, [(k, sd[k].shape, "F32", lambda k=k: sd[k]) for k in ks])
    (root / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    out = tmp_path / "s.safetensors"
    convert.convert(root, out, dtype="fp32", log=lambda m: None)
    _assert_same(weights.WeightsFile(out), from_folder)


def test_missing_and_extra_keys_reported_together(tmp_path):
    root = _copy_folder(tmp_path)

    def damage(sd):
        sd = dict(sd)
        del sd["conv_in.bias"]
        sd["surprise.weight"] = np.zeros(3, np.float32)
        sd["conv_out.bias"] = np.zeros(7, np.float32)
        return sd
    _rewrite(root / "unet" / "diffusion_pytorch_model.bin", damage, fmt="bin")
    with pytest.raises(WeightsError) as e:
        convert.read_source(root)
    msg = str(e.value)
    assert ("missing: conv_in.bias" in msg and "unexpected: surprise.weight" in msg and
            "conv_out.bias: file (7,) vs model (4,)" in msg)


def test_bad_sources(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        convert.read_source(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="not a diffusers folder"):
        convert.read_source(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("just text")
    with pytest.raises(WeightsError):
        convert.read_source(tmp_path / "notes.txt")
    tiny = tmp_path / "mine.safetensors"
    convert.convert(FOLDER, tiny, log=lambda m: None)
    with pytest.raises(WeightsError, match="already a converted"):
        convert.read_source(tiny)
    with pytest.raises(WeightsError, match="fp16 or fp32"):
        convert.write_converted(tmp_path / "x.safetensors", convert.read_source(FOLDER), dtype="int8")


# ----------------------------------------------------------------------------- unsupported models


def _ldm_with(tmp_path, change):
    sd = {k: np.asarray(v) for k, v in torchpickle.state_dict(torchpickle.load(CKPT)).items()}
    change(sd)
    p = tmp_path / "variant.ckpt"
    torchpickle.save(p, sd, wrap_key="state_dict")
    return p


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd.update({"cond_stage_model.model.transformer.resblocks.0.ln_1.weight":
                           np.ones(4, np.float32)}), "2.x"),
    (lambda sd: sd.update({"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight":
                           np.ones(4, np.float32)}), "XL"),
    (lambda sd: sd.update({"model.diffusion_model.input_blocks.0.0.weight":
                           np.zeros((8, 9, 3, 3), np.float32)}), "inpainting"),
    (lambda sd: sd.update({"model.diffusion_model.label_emb.0.0.weight": np.zeros((4, 4), np.float32)}), "label"),
    (lambda sd: sd.update({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
                           np.zeros((8, 1024), np.float32)}), "1024"),
    (lambda sd: sd.update({"model.diffusion_model.input_blocks.1.1.proj_in.weight":
                           np.zeros((8, 8), np.float32)}), "linear"),
])
def test_unsupported_single_files_are_named(tmp_path, change, match):
    with pytest.raises(UnsupportedModelError, match=match):
        convert.read_source(_ldm_with(tmp_path, change), config=FOLDER)


@pytest.mark.parametrize("where,edit,match", [
    ("unet/config.json", {"in_channels": 9}, "in_channels"),
    ("unet/config.json", {"cross_attention_dim": 1024}, "2.x"),
    ("unet/config.json", {"addition_embed_type": "text_time"}, "SDXL"),
    ("scheduler/scheduler_config.json", {"prediction_type": "v_prediction"}, "v-prediction"),
    ("model_index.json", {"_class_name": "StableDiffusionXLPipeline"}, "XL"),
    ("model_index.json", {"_class_name": "StableDiffusionInpaintPipeline"}, "Inpaint"),
])
def test_unsupported_diffusers_folders_are_named(tmp_path, where, edit, match):
    root = _copy_folder(tmp_path)
    cfg = json.loads((root / where).read_text())
    cfg.update(edit)
    (root / where).write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match=match):
        convert.read_source(root)


def test_ldm_key_mapping_rules():
    """Spot checks of the mapping facts taken from diffusers' single_file_utils (SD v1: 2 layers per block)."""
    u = lambda k: convert.ldm_unet_key(k, 2)  # noqa: E731
    assert u("input_blocks.0.0.weight") == "conv_in.weight"
    assert u("input_blocks.4.0.skip_connection.bias") == "down_blocks.1.resnets.0.conv_shortcut.bias"
    assert u("input_blocks.5.1.proj_in.weight") == "down_blocks.1.attentions.1.proj_in.weight"
    assert u("input_blocks.9.0.op.weight") == "down_blocks.2.downsamplers.0.conv.weight"
    assert u("middle_block.2.emb_layers.1.weight") == "mid_block.resnets.1.time_emb_proj.weight"
    assert u("output_blocks.2.1.conv.bias") == "up_blocks.0.upsamplers.0.conv.bias"
    assert u("output_blocks.5.2.conv.weight") == "up_blocks.1.upsamplers.0.conv.weight"
    assert (u("output_blocks.11.1.transformer_blocks.0.ff.net.2.weight") ==
            "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight")
    assert u("input_blocks.3.1.norm.weight") is None  # the downsample slot has no attention
    v = lambda k: convert.ldm_vae_key(k, 4)  # noqa: E731
    assert v("decoder.up.3.block.0.nin_shortcut.weight") == "decoder.up_blocks.0.resnets.0.conv_shortcut.weight"
    assert v("decoder.up.0.upsample.conv.weight") == "decoder.up_blocks.3.upsamplers.0.conv.weight"
    assert v("encoder.mid.attn_1.proj_out.bias") == "encoder.mid_block.attentions.0.to_out.0.bias"
    assert v("encoder.norm_out.weight") == "encoder.conv_norm_out.weight"
    assert v("encoder.down.1.downsample.conv.bias") == "encoder.down_blocks.1.downsamplers.0.conv.bias"


def test_training_metadata_globals_refused_unless_inert(tmp_path, from_folder):
    """A training checkpoint whose extra entries name a config class: refused by default (the global
    is named), converted with inert_globals=True (the class is never imported or called)."""
    import zipfile

    from minriff.errors import UnsafePickleError
    src = zipfile.ZipFile(CKPT)
    pkl_name = next(n for n in src.namelist() if n.endswith("data.pkl"))
    pkl = src.read(pkl_name)
    assert pkl[:3] == b"\x80\x02}"
    extra = b"X\x07\x00\x00\x00hparams" + b"comegaconf.dictconfig\nDictConfig\n)R" + b"s"
    bad = tmp_path / "training.ckpt"
    with zipfile.ZipFile(bad, "w") as z:
        for info in src.infolist():
            z.writestr(info.filename, pkl[:3] + extra + pkl[3:] if info.filename == pkl_name else src.read(info))
    with pytest.raises(UnsafePickleError, match=r"omegaconf\.dictconfig\.DictConfig"):
        convert.read_source(bad, config=FOLDER)
    out = tmp_path / "ok.safetensors"
    assert cli_main(["convert", str(bad), "--config", str(FOLDER), "--inert-globals", "--dtype", "fp32",
                     "-o", str(out)]) == 0
    _assert_same(weights.WeightsFile(out), from_folder)


def test_fp16_overflow_is_refused(tmp_path):
    root = _copy_folder(tmp_path)

    def huge(sd):
        sd = dict(sd)
        sd["conv_in.bias"] = sd["conv_in.bias"] * 0 + 1e5  # beyond fp16's 65504
        return sd
    _rewrite(root / "unet" / "diffusion_pytorch_model.bin", huge, fmt="bin")
    with pytest.raises(WeightsError, match="unet.conv_in.bias.*--dtype fp32"):
        convert.convert(root, tmp_path / "h.safetensors", log=lambda m: None)
    assert not (tmp_path / "h.safetensors").exists() and not (tmp_path / "h.safetensors.tmp").exists()
    convert.convert(root, tmp_path / "f.safetensors", dtype="fp32", log=lambda m: None)
    assert weights.WeightsFile(tmp_path / "f.safetensors").component("unet")["conv_in.bias"][0] == 1e5
