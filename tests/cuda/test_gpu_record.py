"""The GPU-verification record: the suite names every kernel source never checked on a real GPU."""
from __future__ import annotations

import json
import warnings

from minriff.kernels.cuda import gpu_record, loader


def test_record_names_each_source_never_run_on_a_gpu():
    missing = gpu_record.unverified()
    if missing:
        msg = f"{len(missing)} CUDA kernel source(s) never checked on a real GPU: {', '.join(missing)}"
        print(msg)
        warnings.warn(msg, stacklevel=1)
    assert set(missing) <= {gpu_record._key(p) for p in gpu_record.sources()}


def test_record_is_by_content_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_record, "RECORD", tmp_path / "gpu_verified.json")
    assert gpu_record.unverified() == [gpu_record._key(p) for p in gpu_record.sources()]
    gpu_record.record("test device")
    assert gpu_record.unverified() == []
    rec = json.loads((tmp_path / "gpu_verified.json").read_text())
    assert rec["softmax.cu"][0]["sha256"] == loader.source_sha256(loader.HERE / "softmax.cu")
    rec["softmax.cu"][0]["sha256"] = "0" * 64  # the source changed since: unverified again
    (tmp_path / "gpu_verified.json").write_text(json.dumps(rec))
    assert gpu_record.unverified() == ["softmax.cu"]
