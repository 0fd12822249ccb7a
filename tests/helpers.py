"""Small builders shared by the model tests (tiny preset, token ids laid out like InternVL2)."""

from __future__ import annotations

import torch

from internvlx import InternVLXConfig, InternVLXForConditionalGeneration

IMG_CONTEXT, IMG_START, IMG_END, IM_START, IM_END, BOS, PAD = 153, 151, 152, 150, 149, 1, 2


def tiny_model(seed: int = 0, **overrides) -> InternVLXForConditionalGeneration:
    torch.manual_seed(seed)
    return InternVLXForConditionalGeneration(InternVLXConfig.from_preset("tiny", **overrides)).eval()


def prompt_ids(tiles: list[int], tokens_per_tile: int, seed: int, text: int = 5) -> list[int]:
    """`<s> <|im_start|> user <img> ctx... </img> question <|im_end|> <|im_start|> assistant`,
    one image block per entry of `tiles` (0 entries: text only)."""
    g = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(3, IM_END, (n,), generator=g).tolist()  # noqa: E731
    ids = [BOS, IM_START] + words(2)
    for n in tiles:
        ids += [IMG_START] + [IMG_CONTEXT] * (n * tokens_per_tile) + [IMG_END] + words(1)
    return ids + words(text) + [IM_END, IM_START] + words(2)


def left_pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


def pixels(tiles: int, size: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.randn(tiles, 3, size, size, generator=torch.Generator().manual_seed(seed))
