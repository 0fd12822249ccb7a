"""Vision→LLM projectors: InternVL2's MLP baseline and InternVL-X's PVTC.

Both take the ViT's last hidden state `[n_tiles, 1 + h*w, Cv]` (token 0 is CLS) and return
`[n_tiles, (h*r)*(w*r), C]`, row-major over the output grid. Select one by `config.projector.type`
through `build_projector`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from .configuration import InternVLXConfig, ProjectorConfig
from .errors import ConfigError

logger = logging.getLogger(__name__)


def pixel_shuffle(grid: torch.Tensor, region: int) -> torch.Tensor:
    """Merge every `region`×`region` block of a `[n, h, w, c]` grid into one token of width
    `region²·c`, in InternVL's "v2" order: `n (h a) (w b) c -> n h w (a b c)`."""
    n, h, w, c = grid.shape
    x = grid.reshape(n, h // region, region, w // region, region, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, h // region, w // region, region * region * c)


def group_regions(grid: torch.Tensor, region: int) -> torch.Tensor:
    """`n (h a) (w b) c -> (n h w) (a b) c`: the patches of each output cell's region."""
    n, h, w, c = grid.shape
    x = grid.reshape(n, h // region, region, w // region, region, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, region * region, c)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the branch of whole samples with probability `rate`."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def _norm_linear_silu(dim_in: int, dim_out: int, eps: float) -> nn.Sequential:
    return nn.Sequential(LlamaRMSNorm(dim_in, eps=eps), nn.Linear(dim_in, dim_out, bias=False), nn.SiLU())


class RegionAttention(nn.Module):
    """`q + Attn(norm1(q), norm2(kv))`: each query attends only to the keys of its own region."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"projector width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm1 = LlamaRMSNorm(dim, eps=eps)
        self.norm2 = LlamaRMSNorm(dim, eps=eps)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, lq, c = query.shape
        lk = kv.shape[1]
        hd = c // self.num_heads
        kv = self.norm2(kv)
        q = self.q(self.norm1(query)).view(b, lq, self.num_heads, hd).transpose(1, 2)
        k = self.k(kv).view(b, lk, self.num_heads, hd).transpose(1, 2)
        v = self.v(kv).view(b, lk, self.num_heads, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(b, lq, c))


class SwiGLU(nn.Module):
    """`W2(SiLU(W1·norm(x)) ⊙ W3·norm(x))`, bias-free."""

    def __init__(self, dim: int, hidden: int, eps: float):
        super().__init__()
        self.norm = LlamaRMSNorm(dim, eps=eps)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class CrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, cfg: ProjectorConfig):
        super().__init__()
        self.attn = RegionAttention(dim, cfg.num_heads, cfg.norm_eps)
        self.mlp = SwiGLU(dim, dim * cfg.mlp_ratio, cfg.norm_eps)
        self.drop_path_rate = cfg.drop_path_rate

    def forward(self, query: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        query = query + drop_path(self.attn(query, kv), self.drop_path_rate, self.training)
        return query + drop_path(self.mlp(query), self.drop_path_rate, self.training)


class PVTCProjector(nn.Module):
    """InternVL-X's projector visual-token compressor (SPEC §2).

    Local query: pixel-shuffled region → mlp1. Global query: CLS → mlp2, times the learned
    per-cell `cls_scale`. Keys/values: every patch → mlp3, grouped by region. Output: the sum of
    the `attn_local` and `attn_global` branches.
    """

    def __init__(self, config: InternVLXConfig):
        super().__init__()
        cfg = config.projector
        cv, c = config.vision_config.hidden_size, config.text_config.hidden_size
        self.region = cfg.region
        self.grid = config.token_grid
        self.mlp1 = _norm_linear_silu(cv * self.region**2, c, cfg.norm_eps)
        self.mlp2 = _norm_linear_silu(cv, c, cfg.norm_eps)
        self.mlp3 = _norm_linear_silu(cv, c, cfg.norm_eps)
        self.cls_scale = nn.Parameter(torch.randn(1, self.grid, self.grid, c))
        self.attn_local = nn.ModuleList(CrossAttentionBlock(c, cfg) for _ in range(cfg.depth))
        self.attn_global = nn.ModuleList(CrossAttentionBlock(c, cfg) for _ in range(cfg.depth))

    def forward(self, vit_hidden: torch.Tensor) -> torch.Tensor:
        n, length, cv = vit_hidden.shape
        side = round((length - 1) ** 0.5)
        patches = vit_hidden[:, 1:].reshape(n, side, side, cv)
        h = side // self.region
        if h != self.grid:
            raise ConfigError(
                f"PVTC was built for a {self.grid}x{self.grid} output grid but the ViT produced "
                f"{side}x{side} patches ({h}x{h} cells); check the tile size"
            )
        c = self.cls_scale.shape[-1]
        local_q = self.mlp1(pixel_shuffle(patches, self.region)).reshape(-1, 1, c)
        global_q = (self.mlp2(vit_hidden[:, 0])[:, None, None, :] * self.cls_scale).reshape(-1, 1, c)
        kv = group_regions(self.mlp3(patches), self.region)
        for block in self.attn_local:
            local_q = block(local_q, kv)
        for block in self.attn_global:
            global_q = block(global_q, kv)
        return (local_q + global_q).reshape(n, h * h, c)


def resize_cls_scale(cls_scale: torch.Tensor, grid: int) -> torch.Tensor:
    """Bilinearly interpolate a `[1, g, g, C]` `cls_scale` to `[1, grid, grid, C]` (with a
    warning), for loading PVTC weights at another tile size or downsample ratio."""
    if cls_scale.ndim != 4 or cls_scale.shape[1] != cls_scale.shape[2]:
        raise ConfigError(f"cls_scale must have shape [1, g, g, C], got {list(cls_scale.shape)}")
    old = cls_scale.shape[1]
    if old == grid:
        return cls_scale
    logger.warning(
        "PVTC cls_scale was trained for a %dx%d token grid; interpolating it bilinearly to %dx%d. "
        "Fine-tune before trusting the outputs.", old, old, grid, grid,
    )
    x = cls_scale.detach().float().permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).to(cls_scale.dtype).contiguous()


def resize_position_embeddings(table: torch.Tensor, patches: int) -> torch.Tensor:
    """Bicubically resize a ViT position table `[1, 1 + g*g, C]` to `[1, 1 + patches², C]`
    (the CLS entry is kept), as InternViT does for other image sizes."""
    old = round((table.shape[1] - 1) ** 0.5)
    if old == patches:
        return table
    logger.warning("resizing ViT position embeddings from %dx%d to %dx%d patches", old, old, patches, patches)
    grid = table[:, 1:].detach().float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(patches, patches), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, patches * patches, -1).to(table.dtype)
    return torch.cat([table[:, :1], grid], dim=1).contiguous()


class MLPProjector(nn.Module):
    """InternVL2's `mlp1`: pixel-shuffle → LayerNorm → Linear → GELU → Linear (CLS dropped)."""

    def __init__(self, config: InternVLXConfig):
        super().__init__()
        region = config.projector.region
        cv, c = config.vision_config.hidden_size, config.text_config.hidden_size
        self.region = region
        self.mlp = nn.Sequential(
            nn.LayerNorm(cv * region**2),
            nn.Linear(cv * region**2, c),
            nn.GELU(),
            nn.Linear(c, c),
        )

    def forward(self, vit_hidden: torch.Tensor) -> torch.Tensor:
        n, length, cv = vit_hidden.shape
        side = round((length - 1) ** 0.5)
        grid = pixel_shuffle(vit_hidden[:, 1:].reshape(n, side, side, cv), self.region)
        return self.mlp(grid.reshape(n, -1, grid.shape[-1]))


PROJECTORS: dict[str, Callable[[InternVLXConfig], nn.Module]] = {
    "pvtc": PVTCProjector,
    "mlp": MLPProjector,
}


def build_projector(config: InternVLXConfig) -> nn.Module:
    try:
        factory = PROJECTORS[config.projector.type]
    except KeyError:
        raise ConfigError(
            f"unknown projector type {config.projector.type!r}; registered: {sorted(PROJECTORS)}"
        ) from None
    return factory(config)
