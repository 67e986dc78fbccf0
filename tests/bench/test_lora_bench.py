"""`minriff bench lora --quick` runs end to end on the tiny model: every stage timed, the memory
kept for unloading accounted, unloading bit-identical (the exit status says so too); diffusers is
compared only when installed. Timings are never asserted."""
from __future__ import annotations

import json

from minriff.cli import main


def test_bench_lora_quick(capsys):
    assert main(["bench", "lora", "--quick", "--json", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert [r["stage"] for r in report["rows"]] == ["load + merge", "set weight (re-merge)", "unload"]
    assert all(r["minriff_s"] > 0 for r in report["rows"])
    assert report["rank"] == 4 and report["layers"] == 91 and report["unload_bit_identical"] is True
    # random fp32 weights are kept as they are (4 bytes each), plus the fp16 LoRA matrices
    assert report["kept_for_unload_bytes"] > report["touched_parameters"] * 4
    assert 0 < report["merge_share_of_sgemm"]
    if report["rows"][0]["diffusers_s"] is not None:
        assert report["diffusers"].startswith("diffusers + peft")
