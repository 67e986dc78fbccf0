"""TAESD's weights file: conversion from both source layouts committed by tests/fixtures/make_taesd.py
(the diffusers folder, and the original taesd_encoder.pth + taesd_decoder.pth written with torch.save),
loading, finding it beside the main file without shadowing it, `minriff convert/info/download`."""
from __future__ import annotations

import io
import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from minriff import weights
from minriff.cli import main as cli_main
from minriff.errors import WeightsError
from minriff.weights import taesd
from minriff.weights.safetensors import SafetensorsFile, write_safetensors
from support import FIXTURES, fixture_script

mt = fixture_script("make_taesd")
TINY_SD = FIXTURES / "pipeline" / "tiny_sd.safetensors"


def convert(src, out, dtype="fp32"):
    taesd.convert_taesd(src, out, dtype=dtype, log=lambda m: None)
    return out


def test_diffusers_folder_converts_to_its_own_tensors(tmp_path):
    out = convert(mt.DIFFUSERS_DIR, tmp_path / "t.safetensors")
    src = SafetensorsFile(mt.DIFFUSERS_DIR / "diffusion_pytorch_model.safetensors")
    got = SafetensorsFile(out)
    assert set(got) == {"taesd." + k for k in src}
    assert all(np.array_equal(got["taesd." + k], src[k]) for k in src)
    meta = got.metadata
    assert json.loads(meta["format"]) == weights.FORMAT
    assert json.loads(meta["config"])["taesd"]["encoder_block_out_channels"] == [8, 8, 8, 8]
    assert json.loads(meta["source"])["type"] == "diffusers-taesd"


@pytest.mark.parametrize("given", ["folder", "encoder file", "decoder file"])
def test_original_pth_pair_maps_to_the_diffusers_keys(tmp_path, given):
    """Encoder index i -> encoder.layers.i, decoder index i -> decoder.layers.(i-1): the same tensors
    as the diffusers folder under the same names, and the config read from the tensor shapes."""
    src = {"folder": mt.ORIGINAL_DIR, "encoder file": mt.ORIGINAL_DIR / "taesd_encoder.pth",
           "decoder file": mt.ORIGINAL_DIR / "taesd_decoder.pth"}[given]
    a = SafetensorsFile(convert(mt.DIFFUSERS_DIR, tmp_path / "a.safetensors"))
    b = SafetensorsFile(convert(src, tmp_path / "b.safetensors"))
    assert set(a) == set(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ca, cb = (json.loads(f.metadata["config"])["taesd"] for f in (a, b))
    assert {k: v for k, v in ca.items() if k != "block_out_channels"} == cb


def test_original_pair_as_safetensors(tmp_path):
    from minriff.weights.torchpickle import load, state_dict

    for part in ("encoder", "decoder"):
        sd = state_dict(load(mt.ORIGINAL_DIR / f"taesd_{part}.pth"))
        write_safetensors(tmp_path / f"taesd_{part}.safetensors",
                          [(k, t.shape, "F32", t.numpy) for k, t in sorted(sd.items())])
    a = SafetensorsFile(convert(mt.DIFFUSERS_DIR, tmp_path / "a.safetensors"))
    b = SafetensorsFile(convert(tmp_path, tmp_path / "out" / "b.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_converted_file_loads_to_diffusers_outputs(tmp_path):
    model = taesd.load_taesd(convert(mt.ORIGINAL_DIR, tmp_path / "t.safetensors"))
    data = np.load(mt.EXPECTED)
    assert np.max(np.abs(model.encode(data["encode_in"]) - data["encode_out"])) <= 1e-4
    assert np.max(np.abs(model.decode(data["decode_in"]) - data["decode_out"])) <= 1e-4


def test_fp16_storage_is_the_default(tmp_path):
    out = tmp_path / "t.safetensors"
    taesd.convert_taesd(mt.DIFFUSERS_DIR, out, log=lambda m: None)
    f = taesd.TAESDFile(out)
    assert f.summary()["dtypes"] == ["F16"] and f.summary()["parameters"] == 39_527
    assert taesd.load_taesd(out).decoder.layers[0].weight.dtype == np.float32  # widened when loaded


def test_conversion_errors_name_the_problem(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "taesd_encoder.pth").write_bytes((mt.ORIGINAL_DIR / "taesd_encoder.pth").read_bytes())
    with pytest.raises(WeightsError, match="taesd_decoder.pth must sit side by side"):
        taesd.convert_taesd(tmp_path / "half" / "taesd_encoder.pth", tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="not a TAESD source"):
        taesd.convert_taesd(tmp_path / "half", tmp_path / "x.safetensors")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((mt.DIFFUSERS_DIR / "config.json").read_text())
    st = SafetensorsFile(mt.DIFFUSERS_DIR / "diffusion_pytorch_model.safetensors")
    kept = [(k, st.shape(k), "F32", lambda k=k: np.asarray(st[k], np.float32)) for k in sorted(st)
            if k != "decoder.layers.2.conv.0.bias"]
    write_safetensors(bad / "diffusion_pytorch_model.safetensors", kept)
    with pytest.raises(WeightsError, match="1 missing: decoder.layers.2.conv.0.bias"):
        taesd.convert_taesd(bad, tmp_path / "x.safetensors")
    cfg = json.loads((mt.DIFFUSERS_DIR / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))
    assert not taesd.is_taesd_source(bad)


def test_find_taesd_env_beside_the_weights_then_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(taesd.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    main_dir = tmp_path / "models"
    main_dir.mkdir()
    main = main_dir / "tiny.safetensors"
    main.write_bytes(TINY_SD.read_bytes())
    assert taesd.find_taesd(beside=main) is None
    cwd_file = convert(mt.DIFFUSERS_DIR, tmp_path / "weights" / "taesd.safetensors")
    assert taesd.find_taesd(beside=main) == cwd_file.relative_to(tmp_path)
    beside = convert(mt.DIFFUSERS_DIR, main_dir / "taesd.safetensors")
    assert taesd.find_taesd(beside=main) == beside
    other = convert(mt.DIFFUSERS_DIR, tmp_path / "elsewhere" / "mine.safetensors")
    monkeypatch.setenv(taesd.ENV, str(other))
    assert taesd.find_taesd(beside=main) == other
    monkeypatch.setenv(taesd.ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(WeightsError, match="neither a file nor a folder"):
        taesd.find_taesd(beside=main)


def test_a_newer_taesd_file_never_shadows_the_main_weights(tmp_path):
    main = tmp_path / "tiny.safetensors"
    main.write_bytes(TINY_SD.read_bytes())
    newer = convert(mt.DIFFUSERS_DIR, tmp_path / "taesd.safetensors")
    os.utime(main, (1_000_000_000, 1_000_000_000))  # the TAESD file is the newest in the folder
    assert weights.find_weights(tmp_path) == main
    with pytest.raises(WeightsError, match="holds only TAESD"):
        weights.WeightsFile(newer)
    with pytest.raises(WeightsError, match="not a minriff TAESD file"):
        taesd.TAESDFile(main)


def test_cli_convert_and_info(tmp_path, capsys):
    out = tmp_path / "w" / "taesd.safetensors"
    assert cli_main(["convert", str(mt.ORIGINAL_DIR), "-o", str(out)]) == 0
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TAESD" in text and "39,527 parameters in  134 tensors  (F16)" in text
    main = tmp_path / "w" / "tiny.safetensors"
    main.write_bytes(TINY_SD.read_bytes())
    assert cli_main(["info", str(main)]) == 0
    assert f"taesd: {out} (used by --decoder taesd)" in capsys.readouterr().out
    assert cli_main(["info", str(main), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["taesd"] == str(out)
    assert cli_main(["convert", str(mt.DIFFUSERS_DIR), "-o", str(out), "--ema"]) == 2
    assert "only -o and --dtype apply" in capsys.readouterr().err


@pytest.fixture
def fake_hub(tmp_path):
    """madebyollin/taesd's two diffusers files, served at /madebyollin/taesd/resolve/main/ on 127.0.0.1."""
    root = tmp_path / "hub" / "madebyollin" / "taesd" / "resolve" / "main"
    root.mkdir(parents=True)
    for name in taesd.FILES:
        (root / name).write_bytes((mt.DIFFUSERS_DIR / name).read_bytes())
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(tmp_path / "hub")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_download_taesd_fetches_two_files_and_converts(tmp_path, fake_hub):
    endpoint, requests = fake_hub
    out = taesd.download_taesd(tmp_path / "weights", endpoint=endpoint, stream=io.StringIO())
    assert out == tmp_path / "weights" / "taesd.safetensors"
    assert sorted(p.rsplit("/", 1)[-1] for p in requests) == sorted(taesd.FILES)
    assert not (tmp_path / "weights" / ".download").exists()
    direct = SafetensorsFile(convert(mt.DIFFUSERS_DIR, tmp_path / "direct.safetensors", dtype="fp16"))
    got = SafetensorsFile(out)
    assert all(np.array_equal(got[k], direct[k]) for k in direct)


def test_cli_download_taesd(tmp_path, fake_hub, capsys):
    endpoint, _ = fake_hub
    assert cli_main(["download", "--taesd", "--to", str(tmp_path / "w"), "--endpoint", endpoint]) == 0
    assert taesd.TAESDFile(tmp_path / "w" / "taesd.safetensors").config.latent_channels == 4
