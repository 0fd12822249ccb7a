"""Token and FLOPs accounting: what an image costs, per LLM layer, for any configuration.

Visual tokens
    An image becomes `tiles` tiles (thumbnail included; see `internvlx.tiling`), each worth
    `config.tokens_per_tile = token_grid²` tokens at full resolution. With LVTC on
    (`config.lvtc.enabled`), LLM layers `0 … K-1` (`K = config.lvtc_expand_layer`) see only
    `(token_grid / stride)²` tokens per tile and layers `K … L-1` see the full count; the LLM
    *input* (the prompt's `<IMG_CONTEXT>` slots) holds the compressed count. Text tokens (every
    non-image-context token, `<img>`/`</img>` included) are the same in every layer.

    A token budget (`max_visual_tokens`) always counts *full-resolution* tokens
    (`tiles × tokens_per_tile`), LVTC or not: the deep layers, the KV cache of the deep stage
    and the projector all pay for the full grid, so this is the conservative reading and it
    gives the same tiling with LVTC on or off.

FLOPs conventions (`prefill_flops`)
    * One multiply-add is 2 FLOPs; a `Linear(a → b)` over `n` tokens costs `2·n·a·b`. Biases,
      norms, activations, softmax, rotary embeddings, residual adds, gates, scales and other
      element-wise work are not counted.
    * ViT: patch-embedding convolution (`2·patches·(channels·p²)·Cv` per tile) and, per layer
      over `N = 1 + patches` tokens: q/k/v/out projections `4·2·N·Cv²`, attention scores
      `QKᵀ + AV = 2·2·N²·Cv` (non-causal, all pairs) and the MLP `2·2·N·Cv·I`.
    * Projector, MLP (InternVL2): the two matmuls `2·T·(M²·Cv)·C + 2·T·C²` for `T` output
      tokens (the LayerNorm is ignored). PVTC: mlp1 (`M²·Cv → C` per output token), mlp2
      (`Cv → C` on the CLS token, once per tile), mlp3 (`Cv → C` per patch) and `depth`
      cross-attention blocks per branch (local and global), each with q and out projections
      over the `T` queries, k and v projections over the `T·M²` region keys, scores over one
      query × `M²` keys per region (`2·2·T·M²·C`) and the SwiGLU MLP `3·2·T·C·(mlp_ratio·C)`.
    * LLM layer over `n` tokens: `attention_proj` (q and o: `C × heads·head_dim`; k and v:
      `C × kv_heads·head_dim`, i.e. GQA), `attention_scores` counting only the *causal* pairs,
      `n·(n+1)/2` per head, each costing `2·head_dim` for `QKᵀ` and `2·head_dim` for `AV`
      (= `2·heads·head_dim·n·(n+1)`; note that `torch.utils.flop_counter` charges SDPA the
      full `n²`), and `mlp` (gate, up, down: `3·2·n·C·I`).
    * `lm_head`: the last position only (`2·C·V`), as generation needs only the last logits.
    * `lvtc`: pooling and upsampling are treated as free (`avg` pooling and `bilinear` /
      `nearest` upsampling count 0); `pool="pixel_shuffle_linear"` counts its
      `Linear(stride²·C → C)` once per compressed token. The residual (`V_hi`, the projector
      output) is reused, not recomputed, so it adds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .configuration import InternVLXConfig
from .errors import ConfigError
from .tiling import plan_tiles

_TILING_OVERRIDES = ("min_tiles", "max_tiles", "policy", "thumbnail", "max_visual_tokens")


# ------------------------------------------------------------------------ visual tokens
@dataclass(frozen=True)
class VisualTokenCount:
    """What one image costs in visual tokens.

    `tiles` includes the thumbnail; `tokens_per_tile` is the full-resolution count;
    `llm_input_tokens` is what the prompt holds (the compressed count when LVTC is on);
    `per_layer[i]` is what LLM layer `i` sees.
    """

    cols: int
    rows: int
    thumbnail: bool
    tiles: int
    tokens_per_tile: int
    llm_input_tokens: int
    per_layer: tuple[int, ...]
    mean_per_layer: float

    @property
    def full_tokens(self) -> int:
        """Visual tokens at full resolution (`tiles × tokens_per_tile`; what a budget counts)."""
        return self.tiles * self.tokens_per_tile


def compressed_tokens_per_tile(config: InternVLXConfig) -> int:
    """Visual tokens per tile in the LLM's shallow layers (= `tokens_per_tile` without LVTC)."""
    if not config.lvtc.enabled:
        return config.tokens_per_tile
    return (config.token_grid // config.lvtc.stride) ** 2


def tokens_per_tile_by_layer(config: InternVLXConfig) -> list[int]:
    """Visual tokens per tile seen by each LLM layer."""
    layers = config.text_config.num_hidden_layers
    full = config.tokens_per_tile
    if not config.lvtc.enabled:
        return [full] * layers
    k = config.lvtc_expand_layer
    return [compressed_tokens_per_tile(config)] * k + [full] * (layers - k)


def count_visual_tokens(
    width: int, height: int, config: InternVLXConfig, **tiling_overrides: Any
) -> VisualTokenCount:
    """Plan the tiles of a `width × height` image and count its visual tokens per LLM layer.

    Tiling settings come from `config.tiling`; keyword overrides (`min_tiles`, `max_tiles`,
    `policy`, `thumbnail`, `max_visual_tokens`) replace them. `max_visual_tokens` counts
    full-resolution tokens, also with LVTC on (see the module docstring).
    """
    unknown = sorted(set(tiling_overrides) - set(_TILING_OVERRIDES))
    if unknown:
        raise ConfigError(f"unknown tiling override(s) {unknown}; known: {list(_TILING_OVERRIDES)}")
    t = config.tiling
    settings: dict[str, Any] = {
        "min_tiles": t.min_tiles,
        "max_tiles": t.max_tiles,
        "policy": t.policy,
        "thumbnail": t.thumbnail,
        "max_visual_tokens": None,
    }
    settings.update(tiling_overrides)
    plan = plan_tiles(
        width,
        height,
        tile_size=config.tile_size,
        tokens_per_tile=config.tokens_per_tile,
        **settings,
    )
    tiles = plan.num_tiles
    per_layer = tuple(tiles * n for n in tokens_per_tile_by_layer(config))
    return VisualTokenCount(
        cols=plan.cols,
        rows=plan.rows,
        thumbnail=plan.thumbnail,
        tiles=tiles,
        tokens_per_tile=config.tokens_per_tile,
        llm_input_tokens=tiles * compressed_tokens_per_tile(config),
        per_layer=per_layer,
        mean_per_layer=sum(per_layer) / len(per_layer),
    )


def _check_prompt(tiles: Sequence[int], text_tokens: int) -> list[int]:
    tiles = list(tiles)
    for value in [*tiles, text_tokens]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"tile counts and text_tokens must be non-negative integers, got tiles={tiles}, "
                f"text_tokens={text_tokens!r}"
            )
    return tiles


def layer_token_counts(
    config: InternVLXConfig, tiles: Sequence[int], text_tokens: int
) -> list[int]:
    """Sequence length processed by each LLM layer for a prompt holding images of the given
    tile counts (thumbnails included) and `text_tokens` non-visual tokens."""
    total_tiles = sum(_check_prompt(tiles, text_tokens))
    return [text_tokens + total_tiles * n for n in tokens_per_tile_by_layer(config)]


# ------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one LLM decoder layer over `tokens` positions."""

    tokens: int
    attention_proj: int
    attention_scores: int
    mlp: int

    @property
    def total(self) -> int:
        return self.attention_proj + self.attention_scores + self.mlp


@dataclass(frozen=True)
class FlopsReport:
    """Analytic forward FLOPs of one prefill (conventions in the module docstring)."""

    vit: int
    projector: int
    llm_layers: tuple[LayerFlops, ...]
    lm_head: int
    lvtc: int

    @property
    def llm(self) -> int:
        """Decoder layers plus the LM head."""
        return sum(layer.total for layer in self.llm_layers) + self.lm_head

    @property
    def total(self) -> int:
        return self.vit + self.projector + self.lvtc + self.llm

    def as_dict(self) -> dict[str, int]:
        """The parts and totals, flat (for `format_table`)."""
        return {
            "vit": self.vit,
            "projector": self.projector,
            "lvtc": self.lvtc,
            "llm": self.llm,
            "lm_head": self.lm_head,
            "total": self.total,
        }


def _text_dims(config: InternVLXConfig) -> tuple[int, int, int, int, int, int]:
    text = config.text_config
    hidden, heads = text.hidden_size, text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return hidden, text.intermediate_size, heads, kv_heads, head_dim, text.vocab_size


def llm_layer_flops(config: InternVLXConfig, tokens: int) -> LayerFlops:
    """Forward FLOPs of one decoder layer over `tokens` positions (causal attention)."""
    c, inter, heads, kv_heads, head_dim, _ = _text_dims(config)
    n = tokens
    attention_proj = 2 * (2 * n * c * heads * head_dim) + 2 * (2 * n * c * kv_heads * head_dim)
    attention_scores = heads * (n * (n + 1) // 2) * (2 * head_dim + 2 * head_dim)
    mlp = 3 * 2 * n * c * inter
    return LayerFlops(tokens, attention_proj, attention_scores, mlp)


def vit_flops_per_tile(config: InternVLXConfig) -> int:
    """InternViT forward FLOPs for one tile (patch embedding + every encoder layer)."""
    vision = config.vision_config
    cv, inter = vision.hidden_size, vision.intermediate_size
    patch = config.tile_size // config.patch_grid
    channels = getattr(vision, "num_channels", 3)
    patches = config.patch_grid**2
    n = 1 + patches
    embed = 2 * patches * (channels * patch * patch) * cv
    per_layer = 4 * (2 * n * cv * cv) + 2 * (2 * n * n * cv) + 2 * (2 * n * cv * inter)
    return embed + vision.num_hidden_layers * per_layer


def projector_flops_per_tile(config: InternVLXConfig) -> int:
    """Projector (MLP or PVTC) forward FLOPs for one tile."""
    p = config.projector
    cv, c = config.vision_config.hidden_size, config.text_config.hidden_size
    m2 = p.region**2
    t = config.tokens_per_tile
    if p.type == "mlp":
        return 2 * t * (m2 * cv) * c + 2 * t * c * c
    if p.type != "pvtc":
        raise ConfigError(f"no FLOPs formula for projector type {p.type!r}; known: 'mlp', 'pvtc'")
    patches = config.patch_grid**2
    queries = 2 * t * (m2 * cv) * c + 2 * 1 * cv * c  # mlp1 (local), mlp2 (global, CLS)
    keys = 2 * patches * cv * c  # mlp3
    block = (
        2 * (2 * t * c * c)  # q, out
        + 2 * (2 * t * m2 * c * c)  # k, v over each region's M² keys
        + 2 * (2 * t * m2 * c)  # QKᵀ and AV: one query × M² keys per region
        + 3 * (2 * t * c * p.mlp_ratio * c)  # SwiGLU w1, w3, w2
    )
    return queries + keys + 2 * p.depth * block


def lvtc_flops_per_tile(config: InternVLXConfig) -> int:
    """LVTC's own FLOPs for one tile: the learned pool of `pixel_shuffle_linear`, else 0
    (average pooling and upsampling are not counted)."""
    lv = config.lvtc
    if not lv.enabled or lv.pool != "pixel_shuffle_linear":
        return 0
    c = config.text_config.hidden_size
    return compressed_tokens_per_tile(config) * 2 * (lv.stride**2 * c) * c


def prefill_flops(config: InternVLXConfig, tiles: Sequence[int], text_tokens: int) -> FlopsReport:
    """Analytic forward FLOPs of one prefill of a prompt with images of the given tile counts
    (thumbnails included) and `text_tokens` non-visual tokens."""
    tiles = list(tiles)
    counts = layer_token_counts(config, tiles, text_tokens)
    total_tiles = sum(tiles)
    if counts and max(counts) == 0:
        raise ConfigError("an empty prompt (no tiles, no text tokens) has no prefill to count")
    c, *_, vocab = _text_dims(config)
    return FlopsReport(
        vit=total_tiles * vit_flops_per_tile(config),
        projector=total_tiles * projector_flops_per_tile(config),
        llm_layers=tuple(llm_layer_flops(config, n) for n in counts),
        lm_head=2 * c * vocab,
        lvtc=total_tiles * lvtc_flops_per_tile(config),
    )


# ------------------------------------------------------------------------------ tables
_UNITS = ("K", "M", "G", "T", "P", "E")


def human_number(value: float) -> str:
    """`1234567890123` → `1.23 T`, `456e9` → `456 G`; three significant digits from 10⁴ up,
    plain below (integers as integers, floats with two decimals)."""
    if isinstance(value, bool):
        return str(value)
    if abs(value) < 1e4:
        return str(value) if isinstance(value, int) else f"{value:.2f}"
    exponent = min(len(_UNITS), int(math.log10(abs(value))) // 3)
    while True:
        scaled = _round3(value / 1000**exponent)
        if abs(scaled) < 1000 or exponent == len(_UNITS):
            break
        exponent += 1  # rounding spilled into the next unit: 999.9996 M → 1.00 G
    digits = max(0, 2 - int(math.floor(math.log10(abs(scaled)))))
    return f"{scaled:.{digits}f} {_UNITS[exponent - 1]}"


def _round3(x: float) -> float:
    """`x` rounded to three significant digits."""
    return round(x, 2 - int(math.floor(math.log10(abs(x)))))


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table: one header line, a rule, one line per row.

    Numbers are right-aligned and written by `human_number` (large values as `1.23 T`);
    everything else is left-aligned `str(value)`; a missing key is blank. `columns` defaults to
    the keys of the first row.
    """
    if columns is None:
        columns = list(rows[0]) if rows else []
    columns = list(columns)

    def cell(value: Any) -> tuple[str, bool]:
        if value is None:
            return "", False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return human_number(value), True
        return str(value), False

    cells = [[cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i][0]) for r in cells]) for i, col in enumerate(columns)]
    numeric = [
        bool(cells) and all(r[i][1] or not r[i][0] for r in cells) for i in range(len(columns))
    ]

    def line(texts: Sequence[str], right: Sequence[bool]) -> str:
        parts = [
            t.rjust(w) if r else t.ljust(w) for t, w, r in zip(texts, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(columns, numeric), "  ".join("-" * w for w in widths)]
    out += [line([text for text, _ in r], [is_num for _, is_num in r]) for r in cells]
    return "\n".join(out)
