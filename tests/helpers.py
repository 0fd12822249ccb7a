"""Small builders shared by the model tests (tiny preset, token ids laid out like InternVL2)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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


def recompute(model, ids, pv, steps, mask=None):
    """Greedy decoding recomputing everything without a cache; also returns step logits."""
    seq, scores = ids, []
    for _ in range(steps):
        m = None if mask is None else torch.cat([mask, mask.new_ones(mask.shape[0], seq.shape[1] - mask.shape[1])], 1)
        with torch.no_grad():
            logits = model(input_ids=seq, attention_mask=m, pixel_values=pv, use_cache=False).logits[:, -1]
        scores.append(logits)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq, torch.stack(scores)


def pixels(tiles: int, size: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.randn(tiles, 3, size, size, generator=torch.Generator().manual_seed(seed))


def build_chat_model_dir(root, *, seed: int = 0, lvtc: bool = False, **overrides):
    """A complete model directory (weights, tokenizer, processor) made the way a user would:
    an official-layout checkpoint with an InternLM2 SentencePiece tokenizer, converted with the
    production converter. Returns the directory."""
    from pathlib import Path

    from internvlx import convert_official, convert_to_official
    from internvlx.tokenizer import load_internlm2_tokenizer_dir
    from tests.helpers_spm import build_internlm2_tokenizer_dir

    root = Path(root)
    tok_dir = build_internlm2_tokenizer_dir(root / "tok")
    tok = load_internlm2_tokenizer_dir(tok_dir)
    image_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    text = {"vocab_size": len(tok), "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id}
    model = tiny_model(seed=seed, text_config=text, image_token_id=image_id, **overrides)
    model.save_pretrained(root / "ours_raw")
    convert_to_official(root / "ours_raw", root / "official")
    for f in tok_dir.iterdir():
        if f.is_file():
            (root / "official" / f.name).write_bytes(f.read_bytes())
    convert_official(root / "official", root / "model")
    if lvtc:  # the official layout has no LVTC: switch it on in the converted directory
        m = InternVLXForConditionalGeneration.from_pretrained(root / "model", lvtc={"enabled": True})
        m.save_pretrained(root / "model")
        from internvlx import InternVLXProcessor

        InternVLXProcessor.from_config(m.config, InternVLXProcessor.from_pretrained(root / "model").tokenizer
                                       ).save_pretrained(root / "model")
    return root / "model"


def load_benchmark(name: str):
    """Import `benchmarks/<name>.py` as a module (registered in sys.modules: dataclasses look
    their module up while being built)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
