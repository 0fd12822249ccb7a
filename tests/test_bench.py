"""The efficiency benchmark (`internvlx bench`, `internvlx.bench`) on the tiny preset.

No timing assertions: structure, the accounting columns (hand-checked), identical logits of
transformers' InternVL and our baseline on the benchmark's own inputs, and the outputs.

Tiny preset: 56 px tiles, patch 14 (4x4 patches), 4 LLM layers (LVTC expands at 3, stride 2).
The benchmark's images are the real sizes at 1/8 scale (80x60, 128x96, 240x135, 56x168), so
they get the tile grids of 640x480, 1024x768, 1920x1080 and 448x1344 at 448 px:
stock [4x3, 4x3, 4x2, 1x3] + thumbnails = [13, 13, 9, 4] tiles; length caps
ceil(H/S)·ceil(W/S) = [4, 6, 15, 3] → [1x1, 3x2, 4x2, 1x3] = [1, 7, 9, 4]; area caps
ceil(HW/S²) = [2, 4, 11, 3] → [1x1, 2x2, 4x2, 1x3] = [1, 5, 9, 4].
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from internvlx import InternVLXConfig
from internvlx.accounting import projector_flops_per_tile
from internvlx.bench import (
    PLOTS,
    RESULTS_JSON,
    RUN_JSON,
    build_suite,
    logits_difference,
    resolve_settings,
    write_outputs,
)
from internvlx.cli import main as cli_main
from tests.test_accounting import TINY_PVTC_PER_TILE, TINY_VIT_PER_TILE, tiny_layer

REQUIRED = ("name", "visual_tokens", "flops", "ttft_s", "decode_tok_s", "peak_mem_bytes", "ttft_ratio_vs_hf")
NAMES = ["hf-internvl2", "internvl2"] + [
    f"{family}/{policy}" for family in ("pvtc-r0.5", "pvtc-r0.25", "pvtc+lvtc") for policy in ("stock", "length", "area")
]
TILES = {"stock": [13, 13, 9, 4], "length": [1, 7, 9, 4], "area": [1, 5, 9, 4]}

# Hand-computed tiny per-tile FLOPs: ViT and PVTC r = 0.5 in tests/test_accounting.py, r = 0.25 below.
TINY_PVTC_R025_PER_TILE = 1_032_192


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = cli_main(["bench", "--preset", "tiny", "--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    assert code == 0
    return out


def test_quick_run_writes_rows_and_plots(quick_run, capsys):
    rows = json.loads((quick_run / RESULTS_JSON).read_text())
    assert isinstance(rows, list) and [r["name"] for r in rows] == NAMES
    for row in rows:
        for key in REQUIRED:
            assert key in row, (row["name"], key)
        assert row["ttft_s"] > 0 and row["peak_mem_bytes"] > 0 and row["flops"]["total"] > 0
        assert row["decode_tok_s"] is None or row["decode_tok_s"] > 0
        assert row["train_samples_s"] > 0
    assert rows[0]["ttft_ratio_vs_hf"] is None
    assert all(isinstance(r["ttft_ratio_vs_hf"], float) for r in rows[1:])
    assert rows[1]["flops_ratio_vs_hf"] == 1.0 and rows[1]["flops"] == rows[0]["flops"]
    run = json.loads((quick_run / RUN_JSON).read_text())
    assert run["rows"] == rows and run["machine"]["cpu"] and run["settings"]["preset"] == "tiny"
    assert run["logits_max_abs_diff"] <= 1e-5
    assert run["gemm"]["best_flops_per_s"] > 0
    for name in PLOTS:
        assert (quick_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_run_visual_tokens_by_hand(quick_run):
    rows = {r["name"]: r for r in json.loads((quick_run / RESULTS_JSON).read_text())}
    per_tile = {"internvl2": 4, "pvtc-r0.5": 4, "pvtc-r0.25": 1, "pvtc+lvtc": 1}
    for name, row in rows.items():
        family, _, policy = name.partition("/")
        tiles = TILES[policy or "stock"]
        assert [p["tiles"] for p in row["per_image"]] == tiles
        n = per_tile.get(family, 4)
        assert row["visual_tokens"] == sum(tiles) * n / 4
        assert [p["visual_tokens"] for p in row["per_image"]] == [t * n for t in tiles]
    # LVTC: layers 0-2 see 1 token per tile, layer 3 the full 4.
    lvtc = rows["pvtc+lvtc/length"]
    assert lvtc["visual_tokens_per_layer"] == [5.25, 5.25, 5.25, 21.0]
    assert lvtc["visual_tokens_full"] == 21.0


def test_pvtc_r025_projector_flops_by_hand():
    # r = 0.25: region M = 4, M² = 16 patches per token, T = (4/4)² = 1 token per tile,
    # 16 patches, Cv = C = 64, SwiGLU hidden 4·64 = 256.
    mlp1 = 2 * 1 * (16 * 64) * 64  # 131_072
    mlp2 = 2 * 1 * 64 * 64  # 8_192 (CLS)
    mlp3 = 2 * 16 * 64 * 64  # 131_072
    block = (
        2 * (2 * 1 * 64 * 64)  # q, out: 16_384
        + 2 * (2 * 1 * 16 * 64 * 64)  # k, v over 16 keys: 262_144
        + 2 * (2 * 1 * 16 * 64)  # QKᵀ, AV: 4_096
        + 3 * (2 * 1 * 64 * 256)  # SwiGLU: 98_304
    )
    assert block == 380_928
    cfg = InternVLXConfig.from_preset("tiny", projector={"downsample_ratio": 0.25})
    assert cfg.tokens_per_tile == 1
    assert projector_flops_per_tile(cfg) == mlp1 + mlp2 + mlp3 + 2 * block == TINY_PVTC_R025_PER_TILE


def test_quick_run_request_flops_by_hand(quick_run):
    rows = {r["name"]: r for r in json.loads((quick_run / RESULTS_JSON).read_text())}
    run = json.loads((quick_run / RUN_JSON).read_text())
    vocab = max(160, _tokenizer_size())
    head = 2 * 64 * vocab
    # 640x480-like image, length tiling: one tile; r = 0.25 → 1 visual token.
    req = rows["pvtc-r0.25/length"]["per_image"][0]
    n = 1 + req["text_tokens"]
    assert req["flops_total"] == TINY_VIT_PER_TILE + TINY_PVTC_R025_PER_TILE + 4 * tiny_layer(n) + head
    # The same image, stock tiling, LVTC: 13 tiles; layers 0-2 see 13·1 visual tokens, layer 3 13·4.
    req = rows["pvtc+lvtc/stock"]["per_image"][0]
    t = req["text_tokens"]
    assert req["llm_flops"] == 3 * tiny_layer(13 + t) + tiny_layer(52 + t) + head
    assert req["flops_total"] == 13 * (TINY_VIT_PER_TILE + TINY_PVTC_PER_TILE) + req["llm_flops"]
    # the row holds the per-request mean over the four images
    row = rows["pvtc+lvtc/stock"]
    assert row["flops"]["total"] == sum(p["flops_total"] for p in row["per_image"]) / 4
    assert run["settings"]["image_sizes"] == [[80, 60], [128, 96], [240, 135], [56, 168]]


def _tokenizer_size() -> int:
    from internvlx.bench import bench_tokenizer

    return len(bench_tokenizer())


@pytest.fixture(scope="module")
def suite():
    s = build_suite(resolve_settings("tiny", quick=True))
    yield s
    s.close()


def test_transformers_row_and_baseline_identical_on_benchmark_inputs(suite):
    hf, ours = suite.models["hf"], suite.models["mlp"]
    assert type(hf).__module__.startswith("transformers.models.internvl")
    # one set of weights: transformers' model uses our tensors
    ours_ptrs = {t.data_ptr() for t in ours.state_dict().values()}
    assert all(p.data_ptr() in ours_ptrs for p in hf.parameters())
    hf_v, ours_v = suite.variants[0], suite.variants[1]
    with torch.no_grad():
        for a, b in zip(hf_v.requests, ours_v.requests, strict=True):
            assert a.input_ids.equal(b.input_ids) and a.pixel_values.equal(b.pixel_values)
            kw = dict(input_ids=a.input_ids, attention_mask=a.attention_mask, pixel_values=a.pixel_values)
            torch.testing.assert_close(hf(**kw).logits, ours(**kw).logits, rtol=1e-5, atol=1e-5)
        req = ours_v.requests[1]
        assert suite.generate(hf_v, req, 6).equal(suite.generate(ours_v, req, 6))
    assert logits_difference(suite) <= 1e-5


def test_pvtc_models_share_the_baseline_vit_and_llm(suite):
    base = suite.models["mlp"]
    for key in ("pvtc50", "pvtc25"):
        m = suite.models[key]
        assert m.vision_model is base.vision_model and m.language_model is base.language_model
        assert m.config.projector.type == "pvtc"
    assert suite.models["pvtc25"].config.projector.downsample_ratio == 0.25
    # LVTC is switched on the r = 0.5 model per configuration
    lvtc = next(v for v in suite.variants if v.lvtc)
    assert suite.model(lvtc).lvtc is not None
    assert suite.model(suite.variants[2]).lvtc is None


def test_plots_are_optional(quick_run, tmp_path, monkeypatch):
    rows = json.loads((quick_run / RESULTS_JSON).read_text())
    info = json.loads((quick_run / RUN_JSON).read_text())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    messages: list[str] = []
    written = write_outputs(rows, info, tmp_path, log=messages.append)
    assert [p.name for p in written] == [RESULTS_JSON, RUN_JSON]
    assert any("matplotlib is not installed" in m for m in messages)
    assert not (tmp_path / PLOTS[0]).exists()


def test_settings_validation():
    from internvlx import ConfigError

    quick = resolve_settings("cpu", quick=True)
    full = resolve_settings("cpu")
    assert quick.repeats < full.repeats and quick.device == "cpu" and quick.dtype == "fp32"
    assert resolve_settings().preset == "cpu"
    assert resolve_settings("tiny", repeats=3, policies=["length"]).repeats == 3
    with pytest.raises(ConfigError, match="preset"):
        resolve_settings("nope")
    with pytest.raises(ConfigError, match="policies"):
        resolve_settings("tiny", policies=["square"])
    with pytest.raises(ConfigError):
        resolve_settings("tiny", repeats=0)


def test_run_benchmark_restores_the_callers_thread_count(monkeypatch):
    import internvlx.bench as bench

    seen = []

    def fake_run(settings, *args):
        seen.append(torch.get_num_threads())
        raise RuntimeError("stop here")

    monkeypatch.setattr(bench, "_run_benchmark", fake_run)
    before = torch.get_num_threads()
    want = 2 if before == 1 else 1
    with pytest.raises(RuntimeError, match="stop here"):
        bench.run_benchmark("tiny", quick=True, threads=want, progress=False, log=None)
    assert seen == [want] and torch.get_num_threads() == before
