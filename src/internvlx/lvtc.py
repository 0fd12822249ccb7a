"""LVTC: layer-wise visual-token compression inside the LLM (SPEC §4, our re-derivation).

Per image tile with a `g×g` projector grid `V_hi`:

* compress: the LLM input holds `V_lo = pool_s(V_hi)`, a `(g/s)×(g/s)` grid;
* layers `0…K-1` run on that compressed sequence;
* expand (before layer K): the tile's hidden states are upsampled to `g×g` and
  `gate ⊙ V_hi` is added; text hidden states pass unchanged;
* layers `K…L-1` run on the expanded sequence.

The decoder layers, rotary embedding and cache classes are transformers' own; this module
only maps sequences between the two layouts and drives the layers in two groups. Each stage
numbers its positions contiguously from its own padding mask, so the deep stage sees exactly
the positions the uncompressed model would use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from .configuration import InternVLXConfig
from .errors import PromptError
from .projectors import pixel_shuffle

_MASK_BUILDERS = {
    "full_attention": create_causal_mask,
    "sliding_attention": create_sliding_window_causal_mask,
}


class LVTCCompressor(nn.Module):
    """The learned parts of LVTC: the optional pooling projection and the residual gate.

    `pool="avg"` is parameter-free. `pool="pixel_shuffle_linear"` merges each s×s block by
    pixel-shuffle and a Linear(s²·C → C) initialised to the block average, so that it starts
    as `avg`. The per-channel gate starts at `config.lvtc.gate_init` (default 0).
    """

    def __init__(self, config: InternVLXConfig):
        super().__init__()
        cfg = config.lvtc
        self.stride = cfg.stride
        self.pool_kind = cfg.pool
        self.upsample_mode = cfg.upsample
        self.residual = cfg.residual
        self.gate_init = cfg.gate_init
        self.grid = config.token_grid
        width = config.text_config.hidden_size
        self.gate = nn.Parameter(torch.full((width,), float(cfg.gate_init)))
        self.pool_proj = (
            nn.Linear(cfg.stride**2 * width, width, bias=False) if cfg.pool == "pixel_shuffle_linear" else None
        )

    @property
    def small_grid(self) -> int:
        return self.grid // self.stride

    def average_pool_weight(self) -> torch.Tensor:
        """The `pool_proj` weight that makes pixel-shuffle + Linear equal to average pooling."""
        width = self.gate.shape[0]
        eye = torch.eye(width, dtype=self.gate.dtype, device=self.gate.device)
        return eye.repeat(1, self.stride**2) / self.stride**2

    def compress(self, features: torch.Tensor) -> torch.Tensor:
        """`[tiles, g², C]` → `[tiles, (g/s)², C]`."""
        n, _, c = features.shape
        grid = features.reshape(n, self.grid, self.grid, c)
        if self.pool_proj is not None:
            small = self.pool_proj(pixel_shuffle(grid, self.stride))
        else:
            small = F.avg_pool2d(grid.permute(0, 3, 1, 2), self.stride).permute(0, 2, 3, 1)
        return small.reshape(n, -1, c)

    def expand(self, hidden: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """`[tiles, (g/s)², C]` hidden states → `[tiles, g², C]`, plus `gate ⊙ features`."""
        n, _, c = hidden.shape
        small = hidden.reshape(n, self.small_grid, self.small_grid, c).permute(0, 3, 1, 2)
        kwargs = {"align_corners": False} if self.upsample_mode == "bilinear" else {}
        big = F.interpolate(small, size=(self.grid, self.grid), mode=self.upsample_mode, **kwargs)
        big = big.permute(0, 2, 3, 1).reshape(n, self.grid * self.grid, c)
        if self.residual == "projector":
            if features is None:
                raise ValueError("LVTC residual='projector' needs the projector features of the prompt")
            big = big + self.gate * features.to(big.dtype)
        return big


@dataclass
class LVTCLayout:
    """How a compressed (LLM-input) batch maps onto the expanded one.

    `hi_src[b, j]`: index of the compressed position copied to expanded position j (text), or
    -1 (visual or padding added by the expansion); `hi_visual[b, j]`: j holds a full-resolution
    visual token; `lo_from_hi[b, i]`: the expanded position whose output stands for compressed
    position i (text: itself; a visual slot: the last full-resolution cell of its block);
    `extra[b]`: tokens the expansion adds to sample b.
    """

    lo_mask: torch.Tensor
    hi_mask: torch.Tensor
    hi_src: torch.Tensor
    hi_visual: torch.Tensor
    lo_from_hi: torch.Tensor
    extra: torch.Tensor
    tiles: int


def build_layout(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int, grid: int, stride: int
) -> LVTCLayout:
    batch, width = input_ids.shape
    small, full = (grid // stride) ** 2, grid * grid
    lo_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(torch.long)
    if lo_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {list(lo_mask.shape)} does not match input_ids {list(input_ids.shape)}")
    rows = []
    tiles = 0
    # the full-resolution cell that stands for each compressed cell: bottom-right of its block
    r = torch.arange(grid // stride, device=input_ids.device)
    last_cell = ((r[:, None] * stride + stride - 1) * grid + r[None, :] * stride + stride - 1).reshape(-1)
    for b in range(batch):
        slots = input_ids[b] == image_token_id
        n_slots = int(slots.sum())
        if n_slots % small:
            raise PromptError(
                f"sample {b} has {n_slots} image slots, not a multiple of the {small} compressed tokens "
                f"per tile that LVTC (stride {stride}) expects; build prompts with the processor"
            )
        tiles += n_slots // small
        cell = torch.zeros(width, dtype=torch.long, device=input_ids.device)
        cell[slots] = torch.arange(n_slots, device=input_ids.device) % small
        repeat = torch.ones(width, dtype=torch.long, device=input_ids.device)
        repeat[slots] = torch.where(cell[slots] == 0, full, 0)
        src = torch.repeat_interleave(torch.arange(width, device=input_ids.device), repeat)
        visual = torch.repeat_interleave(slots, repeat)
        mask = torch.repeat_interleave(lo_mask[b], repeat)
        # where each compressed position lands in the (unpadded) expanded row: text maps to
        # itself; slot (tile starting at compressed position f, cell k) to the last cell of its block
        starts = torch.cumsum(repeat, 0) - repeat
        idx = torch.arange(width, device=input_ids.device)
        first = torch.cummax(torch.where(slots & (cell == 0), idx, -1), 0).values
        back = starts.clone()
        back[slots] = starts[first[slots]] + last_cell[cell[slots]]
        rows.append((src, visual, mask, back, int(repeat.sum()) - width))
    hi_width = max(len(src) for src, *_ in rows)
    hi_src = torch.full((batch, hi_width), -1, dtype=torch.long, device=input_ids.device)
    hi_visual = torch.zeros((batch, hi_width), dtype=torch.bool, device=input_ids.device)
    hi_mask = torch.zeros((batch, hi_width), dtype=torch.long, device=input_ids.device)
    lo_from_hi = torch.zeros((batch, width), dtype=torch.long, device=input_ids.device)
    extra = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    for b, (src, visual, mask, back, added) in enumerate(rows):
        pad = hi_width - len(src)  # left padding added by the expansion
        hi_src[b, pad:] = torch.where(visual, -1, src)
        hi_visual[b, pad:] = visual
        hi_mask[b, pad:] = mask
        lo_from_hi[b] = back + pad
        extra[b] = added
    return LVTCLayout(lo_mask, hi_mask, hi_src, hi_visual, lo_from_hi, extra, tiles)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Contiguous positions of the real tokens of each row (padding gets 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


class LVTCCache(DynamicCache):
    """A `DynamicCache` whose shallow layers hold the compressed sequence and deep layers the
    expanded one, plus what decoding needs to keep the two stages aligned: the expanded prompt
    mask, the compressed prompt width and the per-sample position offset."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hi_prompt_mask: torch.Tensor | None = None
        self.lo_prompt_width = 0
        self.extra: torch.Tensor | None = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._select(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.extra is not None:
            self.hi_prompt_mask = self.hi_prompt_mask.repeat_interleave(repeats, dim=0)
            self.extra = self.extra.repeat_interleave(repeats, dim=0)

    def _select(self, index: torch.Tensor) -> None:
        if self.extra is not None:
            self.hi_prompt_mask = self.hi_prompt_mask[index.to(self.extra.device)]
            self.extra = self.extra[index.to(self.extra.device)]


def expand_hidden(
    lvtc: LVTCCompressor,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    layout: LVTCLayout,
    image_token_id: int,
    features: torch.Tensor | None,
) -> torch.Tensor:
    """Map compressed-layout hidden states `[B, W_lo, C]` to the expanded layout `[B, W_hi, C]`."""
    c = hidden.shape[-1]
    text = (layout.hi_src >= 0).unsqueeze(-1)
    gathered = hidden.gather(1, layout.hi_src.clamp(min=0).unsqueeze(-1).expand(-1, -1, c))
    out = torch.where(text, gathered, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    if layout.tiles:
        small = hidden[input_ids == image_token_id].reshape(layout.tiles, -1, c)
        out = out.masked_scatter(layout.hi_visual.unsqueeze(-1), lvtc.expand(small, features))
    return out


def _layer_types(config) -> list[str]:
    return list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)


def run_layers(
    lm_model: nn.Module,
    hidden: torch.Tensor,
    layers: range,
    mask_2d: torch.Tensor,
    positions: torch.Tensor,
    cache,
    use_cache: bool,
    collect: list[torch.Tensor] | None,
    **kwargs,
) -> torch.Tensor:
    """Run decoder layers `layers` of `lm_model` (a transformers decoder body) on one stage."""
    config = lm_model.config
    types = _layer_types(config)
    masks = {}
    for kind in sorted({types[i] for i in layers}):
        first = next(i for i in layers if types[i] == kind)
        masks[kind] = _MASK_BUILDERS[kind](
            config=config, inputs_embeds=hidden, attention_mask=mask_2d, cache=cache,
            position_ids=positions, layer_idx=first,
        )
    rotary = lm_model.rotary_emb(hidden, positions)
    for i in layers:
        if collect is not None:
            collect.append(hidden)
        hidden = lm_model.layers[i](
            hidden, attention_mask=masks[types[i]], position_ids=positions, cache=cache,
            use_cache=use_cache, position_embeddings=rotary, **kwargs,
        )
    return hidden
