"""Smoke test of `benchmarks/lvtc_prefill.py --quick`: it runs and reports sane rows.

No timing assertions: only structure and the analytic columns are checked.
"""

import json

import pytest

from tests.helpers import load_benchmark


def lvtc_benchmark():
    return load_benchmark("lvtc_prefill")


def test_quick_run_writes_rows(tmp_path, capsys):
    bench = lvtc_benchmark()
    out = tmp_path / "rows.json"
    result = bench.main(["--quick", "--threads", "1", "--repeats", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    rows = result["rows"]
    assert [(r["dtype"], r["config"]) for r in rows] == [
        (d, c) for d in ("fp32", "bf16") for c in ("off", "K=4 s=2", "K=6 s=2", "K=6 s=4")
    ]
    for dtype in ("fp32", "bf16"):
        by_name = {r["config"]: r for r in rows if r["dtype"] == dtype}
        off = by_name["off"]
        assert off["flops_ratio"] == 1.0 and off["time_ratio"] == 1.0
        # 3 tiles x 256 tokens + 24 text tokens in every layer without LVTC
        assert off["tokens_per_layer"] == 3 * 256 + 24
        # K=4 of 8 layers at stride 2: half the layers see 64 tokens per tile
        assert by_name["K=4 s=2"]["tokens_per_layer"] == (4 * (3 * 64 + 24) + 4 * (3 * 256 + 24)) / 8
        # more compressed layers or a larger stride: fewer FLOPs
        ratios = [by_name[c]["flops_ratio"] for c in ("off", "K=4 s=2", "K=6 s=2", "K=6 s=4")]
        assert ratios == sorted(ratios, reverse=True) and ratios[-1] > 0
        for r in by_name.values():
            assert r["prefill_ms"] > 0 and len(r["prefill_ms_samples"]) == 1
    printed = capsys.readouterr().out
    assert "FLOPs ratio" in printed and "LLM time ratio" in printed and "machine:" in printed


def test_configs_parsing():
    bench = lvtc_benchmark()
    names = [v.name for v in bench.parse_configs("19:2, off,12:4,19:2")]
    assert names == ["off", "K=19 s=2", "K=12 s=4"]
    with pytest.raises(SystemExit):
        bench.parse_configs("19")
