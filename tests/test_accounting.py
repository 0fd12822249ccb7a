"""Token and FLOPs accounting: hand-computed values for the tiny preset, consistency checks,
and agreement with `torch.utils.flop_counter.FlopCounterMode` on real tiny modules.

Tiny preset sizes used below: tile 56 px, patch 14 → 4×4 = 16 patches (17 ViT tokens with CLS),
ViT width 64, 2 layers, 4 heads, MLP 128; projector region M = 2 → 2×2 = 4 tokens per tile;
LLM width 64, MLP 128, 4 layers, 4 heads of 16, 2 KV heads, vocab 160; LVTC expands at
round(0.8·4) = 3 with stride 2 (4 → 1 token per tile).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from internvlx.accounting import (
    FlopsReport,
    VisualTokenCount,
    count_visual_tokens,
    format_table,
    human_number,
    layer_token_counts,
    llm_layer_flops,
    prefill_flops,
    projector_flops_per_tile,
    vit_flops_per_tile,
)
from internvlx.configuration import InternVLXConfig
from internvlx.errors import ConfigError
from internvlx.tiling import plan_tiles

TINY = InternVLXConfig.from_preset("tiny")
TINY_LVTC = InternVLXConfig.from_preset("tiny", lvtc={"enabled": True})
TINY_MLP = InternVLXConfig.from_preset("tiny", projector={"type": "mlp"})

# Hand-computed per-tile FLOPs of the tiny preset (derivations in the tests below).
TINY_VIT_PER_TILE = 3_580_416
TINY_PVTC_PER_TILE = 1_720_320
TINY_MLP_PROJ_PER_TILE = 163_840


def tiny_layer(n: int) -> int:
    """One tiny LLM layer over n tokens, written out: q,o 2·(2·n·64·64), k,v 2·(2·n·64·32),
    causal scores 4 heads · n(n+1)/2 pairs · (2·16 + 2·16), SwiGLU 3·2·n·64·128."""
    return (
        2 * (2 * n * 64 * 64)
        + 2 * (2 * n * 64 * 32)
        + 4 * (n * (n + 1) // 2) * 64
        + 6 * n * 64 * 128
    )


# ----------------------------------------------------------------------- visual tokens
@pytest.mark.parametrize(
    ("size", "policy", "grid", "tiles"),
    [
        # 100x60, aspect 1.667: the closest grid with <= 6 tiles is 3x2 (|1.667-1.5| = 0.167).
        ((100, 60), "stock", (3, 2), 7),
        # length cap = ceil(60/56)·ceil(100/56) = 2·2 = 4 → 2x1 (|1.667-2| = 0.333) + thumbnail.
        ((100, 60), "length", (2, 1), 3),
        # area cap = ceil(6000/3136) = 2 → 2x1 + thumbnail.
        ((100, 60), "area", (2, 1), 3),
        # 40x30, aspect 1.333: stock → 3x2 (0.167); both RVTC caps are 1 → a single tile.
        ((40, 30), "stock", (3, 2), 7),
        ((40, 30), "length", (1, 1), 1),
        ((40, 30), "area", (1, 1), 1),
        # 120x120 square: length cap = 3·3 = 9 → min(6, 9) = 6; area cap = ceil(14400/3136) = 5;
        # the square 2x2 (distance 0) wins in both.
        ((120, 120), "length", (2, 2), 5),
        ((120, 120), "area", (2, 2), 5),
    ],
)
def test_visual_tokens_per_policy(size, policy, grid, tiles):
    count = count_visual_tokens(*size, TINY, policy=policy)
    plan = plan_tiles(*size, tile_size=56, max_tiles=6, policy=policy)
    assert (count.cols, count.rows) == grid == (plan.cols, plan.rows)
    assert count.tiles == tiles == plan.num_tiles
    assert count.thumbnail == (tiles > 1)
    assert count.tokens_per_tile == 4
    assert count.llm_input_tokens == count.full_tokens == tiles * 4
    assert count.per_layer == (tiles * 4,) * 4
    assert count.mean_per_layer == tiles * 4


def test_visual_tokens_use_config_tiling_defaults():
    # tiny: max_tiles 6, policy "length" → as in the parametrised case above.
    assert (count_visual_tokens(100, 60, TINY).cols, count_visual_tokens(100, 60, TINY).rows) == (
        2,
        1,
    )
    no_thumb = count_visual_tokens(100, 60, TINY, thumbnail=False)
    assert no_thumb.tiles == 2 and not no_thumb.thumbnail
    assert count_visual_tokens(100, 60, TINY, max_tiles=1).tiles == 1


def test_visual_tokens_with_lvtc():
    count = count_visual_tokens(100, 60, TINY_LVTC, policy="stock")
    assert isinstance(count, VisualTokenCount)
    # 7 tiles; layers 0..2 see 7·1 tokens, layer 3 sees 7·4.
    assert count.tiles == 7
    assert count.llm_input_tokens == 7
    assert count.per_layer == (7, 7, 7, 28)
    assert count.mean_per_layer == (7 + 7 + 7 + 28) / 4 == 12.25
    assert count.full_tokens == 28


def test_budget_counts_full_resolution_tokens():
    # Budget 12 tokens: 6 tiles would cost 7·4 = 28; with max 5 tiles the best grid for 100x60
    # is 2x1 (+ thumbnail) = 3 tiles = 12 tokens, which fits.
    plain = count_visual_tokens(100, 60, TINY, policy="stock", max_visual_tokens=12)
    lvtc = count_visual_tokens(100, 60, TINY_LVTC, policy="stock", max_visual_tokens=12)
    assert (plain.cols, plain.rows, plain.tiles) == (2, 1, 3)
    # Same tiling with LVTC: the budget counts full-resolution tokens, not the compressed input.
    assert (lvtc.cols, lvtc.rows, lvtc.tiles) == (2, 1, 3)
    assert lvtc.full_tokens == 12 and lvtc.llm_input_tokens == 3
    with pytest.raises(ConfigError):
        count_visual_tokens(100, 60, TINY, max_visual_tokens=3)


def test_unknown_tiling_override():
    with pytest.raises(ConfigError, match="unknown tiling override"):
        count_visual_tokens(100, 60, TINY, tile_size=448)


def test_layer_token_counts():
    # Two images of 7 and 1 tiles (8 tiles) and 20 text tokens.
    assert layer_token_counts(TINY, [7, 1], 20) == [8 * 4 + 20] * 4 == [52] * 4
    assert (
        layer_token_counts(TINY_LVTC, [7, 1], 20)
        == [8 * 1 + 20] * 3 + [8 * 4 + 20]
        == [28, 28, 28, 52]
    )
    assert layer_token_counts(TINY_LVTC, [], 5) == [5, 5, 5, 5]
    with pytest.raises(ConfigError):
        layer_token_counts(TINY, [-1], 5)


def test_lvtc_disabled_equals_plain():
    off = InternVLXConfig.from_preset(
        "tiny", lvtc={"enabled": False, "expand_layer": 2, "stride": 2}
    )
    assert layer_token_counts(off, [3], 9) == layer_token_counts(TINY, [3], 9)
    assert prefill_flops(off, [3], 9) == prefill_flops(TINY, [3], 9)
    assert count_visual_tokens(100, 60, off) == count_visual_tokens(100, 60, TINY)


# ------------------------------------------------------------------------------- FLOPs
def test_llm_layer_flops_by_hand():
    # n = 10: q,o 2·(2·10·64·64) = 163_840; k,v 2·(2·10·64·32) = 81_920;
    # causal scores 4 heads · 55 pairs · 64 = 14_080; SwiGLU 3·2·10·64·128 = 491_520.
    layer = llm_layer_flops(TINY, 10)
    assert layer.tokens == 10
    assert layer.attention_proj == 163_840 + 81_920 == 245_760
    assert layer.attention_scores == 4 * 55 * 64 == 14_080
    assert layer.mlp == 491_520
    assert layer.total == 751_360 == tiny_layer(10)


def test_vit_flops_by_hand():
    # Patch conv: 2 · 16 patches · (3·14·14 = 588) · 64 = 1_204_224.
    # Per layer over 17 tokens: q,k,v,o 4·(2·17·64·64) = 557_056; scores 2·(2·17·17·64) = 73_984;
    # MLP 2·(2·17·64·128) = 557_056 → 1_188_096; 2 layers → 2_376_192.
    embed = 2 * 16 * 588 * 64
    per_layer = 4 * (2 * 17 * 64 * 64) + 2 * (2 * 17 * 17 * 64) + 2 * (2 * 17 * 64 * 128)
    assert embed == 1_204_224 and per_layer == 1_188_096
    assert vit_flops_per_tile(TINY) == embed + 2 * per_layer == TINY_VIT_PER_TILE


def test_pvtc_flops_by_hand():
    # T = 4 queries, M² = 4 keys per region, 16 patches, Cv = C = 64, SwiGLU hidden 256.
    mlp1 = 2 * 4 * (4 * 64) * 64  # 131_072
    mlp2 = 2 * 1 * 64 * 64  # 8_192 (CLS, once per tile)
    mlp3 = 2 * 16 * 64 * 64  # 131_072
    block = (
        2 * (2 * 4 * 64 * 64)  # q, out: 65_536
        + 2 * (2 * 16 * 64 * 64)  # k, v over 4 regions × 4 keys: 262_144
        + 2 * (2 * 4 * 4 * 64)  # QKᵀ, AV: 4_096
        + 3 * (2 * 4 * 64 * 256)  # SwiGLU: 393_216
    )
    assert block == 724_992
    assert projector_flops_per_tile(TINY) == mlp1 + mlp2 + mlp3 + 2 * block == TINY_PVTC_PER_TILE
    # depth 2 doubles the blocks only.
    deeper = InternVLXConfig.from_preset("tiny", projector={"depth": 2})
    assert projector_flops_per_tile(deeper) == mlp1 + mlp2 + mlp3 + 4 * block


def test_mlp_projector_flops_by_hand():
    # 4 tokens per tile: Linear(4·64 → 64) and Linear(64 → 64).
    assert (
        projector_flops_per_tile(TINY_MLP)
        == 2 * 4 * 256 * 64 + 2 * 4 * 64 * 64
        == TINY_MLP_PROJ_PER_TILE
    )


def test_prefill_flops_tiny_total_by_hand():
    # One tile (4 visual tokens) + 6 text tokens → 10 tokens in every layer.
    report = prefill_flops(TINY, [1], 6)
    assert isinstance(report, FlopsReport)
    assert report.vit == TINY_VIT_PER_TILE
    assert report.projector == TINY_PVTC_PER_TILE
    assert [layer.tokens for layer in report.llm_layers] == [10] * 4
    assert report.lm_head == 2 * 64 * 160 == 20_480
    assert report.lvtc == 0
    assert report.llm == 4 * 751_360 + 20_480
    assert report.total == 3_580_416 + 1_720_320 + 4 * 751_360 + 20_480
    assert report.as_dict()["total"] == report.total


def test_prefill_flops_tiny_lvtc_by_hand():
    # 7 tiles + 20 text: shallow layers 7 + 20 = 27 tokens, the deep layer 28 + 20 = 48.
    report = prefill_flops(TINY_LVTC, [7], 20)
    assert [layer.tokens for layer in report.llm_layers] == [27, 27, 27, 48]
    assert report.llm == 3 * tiny_layer(27) + tiny_layer(48) + 20_480
    assert report.vit == 7 * TINY_VIT_PER_TILE and report.projector == 7 * TINY_PVTC_PER_TILE
    assert report.lvtc == 0  # average pooling is not counted
    learned = InternVLXConfig.from_preset(
        "tiny", lvtc={"enabled": True, "pool": "pixel_shuffle_linear"}
    )
    # One compressed token per tile through Linear(2²·64 → 64): 2·256·64 = 32_768 per tile.
    assert prefill_flops(learned, [7], 20).lvtc == 7 * 2 * 256 * 64


def test_lvtc_ratio_internvlx_2b_seven_tiles():
    # InternLM2-1.8B: C 2048, MLP 8192, 24 layers, 16 heads × 128, 8 KV heads, vocab 92553.
    # LVTC expands at round(0.8·24) = 19; 7 tiles × 256 = 1792 tokens, compressed 7 × 64 = 448.
    def layer(n):
        proj = 2 * (2 * n * 2048 * 2048) + 2 * (2 * n * 2048 * 1024)
        scores = 16 * (n * (n + 1) // 2) * (4 * 128)
        return proj + scores + 6 * n * 2048 * 8192

    head = 2 * 2048 * 92553
    text = 30
    plain = 24 * layer(1792 + text) + head
    lvtc = 19 * layer(448 + text) + 5 * layer(1792 + text) + head
    on = prefill_flops(
        InternVLXConfig.from_preset("internvlx-2b", lvtc={"enabled": True}), [7], text
    )
    off = prefill_flops(InternVLXConfig.from_preset("internvlx-2b"), [7], text)
    assert off.llm == plain and on.llm == lvtc
    assert on.llm / off.llm == pytest.approx(0.4075, abs=1e-4)
    assert on.vit == off.vit and on.projector == off.projector


def test_flops_consistency():
    for cfg in (TINY, TINY_LVTC, TINY_MLP, InternVLXConfig.from_preset("internvlx-2b")):
        totals = [prefill_flops(cfg, [tiles], 16).total for tiles in range(1, 8)]
        assert totals == sorted(set(totals)), "FLOPs must grow with every tile"
    for name in ("tiny", "internvlx-2b", "internvlx-8b", "internvl2-2b"):
        for tiles in ([1], [7], [3, 5]):
            on = prefill_flops(InternVLXConfig.from_preset(name, lvtc={"enabled": True}), tiles, 30)
            off = prefill_flops(InternVLXConfig.from_preset(name), tiles, 30)
            assert on.llm < off.llm
            assert on.total < off.total
    with pytest.raises(ConfigError):
        prefill_flops(TINY, [], 0)


# ----------------------------------------------------- agreement with FlopCounterMode
LINEAR_OPS = {"aten.mm", "aten.addmm", "aten.convolution"}
ATTENTION_OPS = {"aten.bmm"}  # eager attention's QKᵀ and AV


def measured(counts: dict, module: str, ops: set[str]) -> int:
    return sum(v for op, v in counts.get(module, {}).items() if str(op) in ops)


@pytest.fixture(scope="module")
def tiny_model():
    from internvlx.modeling import InternVLXForConditionalGeneration

    torch.manual_seed(0)
    model = InternVLXForConditionalGeneration(InternVLXConfig.from_preset("tiny")).eval()
    model.set_attn_implementation("eager")  # attention as bmm: counted, and counted in full
    return model


def test_projector_flops_match_flop_counter(tiny_model):
    vit_hidden = torch.randn(3, 17, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny_model.projector(vit_hidden)
    counts = counter.get_flop_counts()
    # PVTC calls SDPA directly (not counted on every backend): compare the matmuls, i.e. our
    # count minus the region attention, 2 blocks · 2·(2·4·4·64) per tile.
    linear = measured(counts, "Global", LINEAR_OPS)
    assert linear == 3 * (TINY_PVTC_PER_TILE - 2 * 4_096)


def test_mlp_projector_flops_match_flop_counter():
    from internvlx.projectors import MLPProjector

    projector = MLPProjector(TINY_MLP).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        projector(torch.randn(3, 17, 64))
    assert measured(counter.get_flop_counts(), "Global", LINEAR_OPS) == 3 * TINY_MLP_PROJ_PER_TILE
    assert projector_flops_per_tile(TINY_MLP) == TINY_MLP_PROJ_PER_TILE


def test_decoder_layer_flops_match_flop_counter(tiny_model):
    n = 13
    model = tiny_model.language_model.model
    hidden = torch.randn(1, n, 64)
    positions = torch.arange(n)[None]
    rope = model.rotary_emb(hidden, positions)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.layers[0](
            hidden, attention_mask=None, position_ids=positions, position_embeddings=rope
        )
    counts = counter.get_flop_counts()
    ours = llm_layer_flops(TINY, n)
    assert measured(counts, "Global", LINEAR_OPS) == ours.attention_proj + ours.mlp
    # FlopCounterMode counts every (query, key) pair: 4 heads · n² · 64. We count the causal
    # pairs n(n+1)/2 only.
    full = measured(counts, "Global", ATTENTION_OPS)
    assert full == 4 * n * n * 64
    assert ours.attention_scores * 2 * n == full * (n + 1)


def test_vit_flops_match_flop_counter(tiny_model):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny_model.vision_model(pixel_values=torch.randn(2, 3, 56, 56))
    counts = counter.get_flop_counts()
    total = measured(counts, "Global", LINEAR_OPS | ATTENTION_OPS)
    assert total == 2 * vit_flops_per_tile(TINY) == 2 * TINY_VIT_PER_TILE


def test_full_prefill_matches_flop_counter_per_part(tiny_model):
    """One real prefill (2 tiles, 6 text tokens), part by part."""
    ids = torch.tensor([[1, 5, 6] + [153] * 8 + [7, 8, 9]])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny_model(input_ids=ids, pixel_values=torch.randn(2, 3, 56, 56), logits_to_keep=1)
    counts = counter.get_flop_counts()
    report = prefill_flops(TINY, [2], 6)
    root = "InternVLXForConditionalGeneration"
    everything = LINEAR_OPS | ATTENTION_OPS
    assert measured(counts, f"{root}.vision_model", everything) == report.vit
    assert measured(counts, f"{root}.projector", LINEAR_OPS) == report.projector - 2 * 2 * 4_096
    for i, layer in enumerate(report.llm_layers):
        module = f"{root}.language_model.model.layers.{i}"
        assert measured(counts, module, LINEAR_OPS) == layer.attention_proj + layer.mlp
        n = layer.tokens
        assert measured(counts, module, ATTENTION_OPS) * (n + 1) == layer.attention_scores * 2 * n
    assert measured(counts, f"{root}.language_model.lm_head", LINEAR_OPS) == report.lm_head


# ------------------------------------------------------------------------------ tables
def test_human_number():
    assert human_number(1_234_567_890_123) == "1.23 T"
    assert human_number(456_000_000_000) == "456 G"
    assert human_number(45_600_000_000) == "45.6 G"
    assert human_number(999_999_999) == "1.00 G"
    assert human_number(1792) == "1792"
    assert human_number(12.25) == "12.25"
    assert human_number(20_480) == "20.5 K"


def test_format_table():
    rows = [
        {"model": "internvl2-2b", "tokens": 1792, "flops": 5_829_152_182_272},
        {"model": "internvlx-2b+lvtc", "tokens": 448, "flops": 2_375_305_629_696, "note": "LVTC"},
    ]
    text = format_table(rows, ["model", "tokens", "flops", "note"])
    lines = text.splitlines()
    assert lines[0].split() == ["model", "tokens", "flops", "note"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["internvl2-2b", "1792", "5.83", "T"]
    assert lines[3].split() == ["internvlx-2b+lvtc", "448", "2.38", "T", "LVTC"]
    # numbers right-aligned: the columns end at the same place
    assert lines[2].index("1792") + 4 == lines[3].index("448") + 3
    assert lines[2].index("5.83 T") == lines[3].index("2.38 T")
    assert format_table(rows).splitlines()[0].split() == ["model", "tokens", "flops"]
