"""LVTC prefill benchmark: measured speed-up of LVTC next to its analytic FLOPs ratio.

One randomly initialised model (Llama LLM, small InternViT) is built once; LVTC is switched
off and on (several expand layers K and strides s) on the same weights with
`model.configure_lvtc`. For each dtype the configurations are timed side by side: after the
warm-up rounds, every round runs one prefill of every configuration (in a rotating order, so
that machine noise falls on all of them alike) plus one `get_image_features` call.

Reported per configuration:

* `tokens/layer`: mean sequence length over the LLM layers (`layer_token_counts`);
* `LLM FLOPs` and `FLOPs ratio`: analytic LLM FLOPs (`prefill_flops(...).llm`: decoder
  layers + LM head on the last position) and their ratio to LVTC off;
* `prefill ms`, `IQR ms`: median and interquartile range of the whole forward
  (`model(input_ids, pixel_values, logits_to_keep=1)`, ViT and projector included);
* `LLM ms`: median over rounds of (forward - that round's ViT+projector time): the LLM part;
* `time ratio`, `LLM time ratio`: median over rounds of the per-round ratio to LVTC off, for
  the whole forward and for the LLM part; compare `LLM time ratio` with `FLOPs ratio`;
* `LLM GFLOP/s`: analytic LLM FLOPs / `LLM ms`.

The vision side is deliberately cheap (a 1-layer, 64-wide ViT on 448 px tiles and, by
default, the MLP projector) because LVTC only changes the LLM; its time is printed separately.
bf16 is only fast on CPUs with native bf16 matmuls (AVX512-BF16 / AMX): on an AVX2-only CPU
one full-size bf16 prefill takes minutes, so use `--dtypes fp32` or few `--repeats` there.

    python benchmarks/lvtc_prefill.py                     # mid-size model, fp32 and bf16
    python benchmarks/lvtc_prefill.py --dtypes fp32 --repeats 5 --json out.json
    python benchmarks/lvtc_prefill.py --configs 12:2,19:2,19:4,6:2
    python benchmarks/lvtc_prefill.py --quick             # small model, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from internvlx import InternVLXConfig, InternVLXForConditionalGeneration
from internvlx.accounting import layer_token_counts, prefill_flops
from internvlx.benchutils import iqr as _iqr
from internvlx.benchutils import machine_info, machine_line, render_table

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Model and run sizes: the mid-size model, and a small one for smoke tests.
FULL = {
    "layers": 24,
    "hidden": 1024,
    "intermediate": 2816,
    "heads": 16,
    "kv_heads": 8,
    "vocab": 8192,
    "tiles": 7,
    "text_tokens": 40,
    "configs": "12:2,19:2,19:4",
    "warmup": 1,
    "repeats": 5,
}
QUICK = {
    "layers": 8,
    "hidden": 256,
    "intermediate": 704,
    "heads": 4,
    "kv_heads": 2,
    "vocab": 2048,
    "tiles": 3,
    "text_tokens": 24,
    "configs": "4:2,6:2,6:4",
    "warmup": 1,
    "repeats": 2,
}

# Fixed tokens of the prompt: <s> <|im_start|> w w <img> ... </img> ... <|im_end|> <|im_start|> w w
_FIXED_TEXT = 10


@dataclass
class Variant:
    """One LVTC setting and what it costs analytically for the benchmark prompt."""

    name: str
    expand_layer: int | None  # None: LVTC off
    stride: int | None
    input_ids: torch.Tensor | None = None
    tokens_per_layer: float = 0.0
    llm_flops: int = 0
    fwd_ms: list[float] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.expand_layer is not None


def parse_configs(text: str) -> list[Variant]:
    """`"12:2,19:4"` → LVTC off (always first) plus LVTC with K=12 s=2 and K=19 s=4."""
    variants = [Variant("off", None, None)]
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "off":
            continue
        try:
            k_text, s_text = item.split(":")
            k, s = int(k_text), int(s_text)
        except ValueError:
            raise SystemExit(f"--configs: expected items like 19:2 (expand_layer:stride), got {item!r}") from None
        name = f"K={k} s={s}"
        if all(v.name != name for v in variants):
            variants.append(Variant(name, k, s))
    return variants


def resolve_sizes(args: argparse.Namespace) -> dict:
    """The explicit options over the defaults of the chosen mode (`--quick` or full)."""
    base = QUICK if args.quick else FULL
    return {key: base[key] if getattr(args, key) is None else getattr(args, key) for key in base}


def build_config(sizes: dict, projector: str) -> InternVLXConfig:
    vocab = sizes["vocab"]
    return InternVLXConfig.from_preset(
        "tiny",
        vision_config={
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "image_size": 448,  # 32x32 patches → a 16x16 grid of 256 tokens per tile
            "patch_size": 14,
        },
        text_config={
            "vocab_size": vocab,
            "hidden_size": sizes["hidden"],
            "intermediate_size": sizes["intermediate"],
            "num_hidden_layers": sizes["layers"],
            "num_attention_heads": sizes["heads"],
            "num_key_value_heads": sizes["kv_heads"],
        },
        projector={"type": projector, "downsample_ratio": 0.5},
        image_token_id=vocab - 1,
    )


def prompt_ids(config: InternVLXConfig, tiles: int, text_tokens: int, seed: int = 0) -> list[int]:
    """One image of `tiles` tiles in an InternVL2-style chat prompt with `text_tokens`
    non-visual tokens in all; the image has `config.input_tokens_per_tile` slots per tile."""
    vocab, ctx = config.text_config.vocab_size, config.image_token_id
    img_start, img_end, im_start, im_end, bos = ctx - 1, ctx - 2, ctx - 3, ctx - 4, 1
    g = torch.Generator().manual_seed(seed)

    def words(n: int) -> list[int]:
        return torch.randint(3, vocab - 5, (n,), generator=g).tolist()

    question = text_tokens - _FIXED_TEXT
    ids = [bos, im_start, *words(2), img_start]
    ids += [ctx] * (tiles * config.input_tokens_per_tile)
    ids += [img_end, *words(question), im_end, im_start, *words(2)]
    return ids


def set_variant(model: InternVLXForConditionalGeneration, variant: Variant) -> None:
    if variant.enabled:
        model.configure_lvtc(True, expand_layer=variant.expand_layer, stride=variant.stride)
    else:
        model.configure_lvtc(False)


def prepare(model: InternVLXForConditionalGeneration, variants: list[Variant], tiles: int, text_tokens: int) -> None:
    """Prompt ids and analytic costs of every variant (the prompt differs: LVTC compresses
    the image slots)."""
    for v in variants:
        set_variant(model, v)
        ids = prompt_ids(model.config, tiles, text_tokens)
        text = len(ids) - tiles * model.config.input_tokens_per_tile
        counts = layer_token_counts(model.config, [tiles], text)
        v.input_ids = torch.tensor([ids])
        v.tokens_per_layer = sum(counts) / len(counts)
        v.llm_flops = prefill_flops(model.config, [tiles], text).llm


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(
    model: InternVLXForConditionalGeneration,
    variants: list[Variant],
    pixel_values: torch.Tensor,
    dtype_name: str,
    warmup: int,
    repeats: int,
    use_cache: bool,
) -> list[float]:
    """Interleaved timing: each round times the vision part once and every variant once, in
    an order rotated by one each round. Returns the vision times; fills `variant.fwd_ms`."""
    vision_ms: list[float] = []
    for v in variants:
        v.fwd_ms = []
    items: list[Variant | None] = [None, *variants]  # None: ViT + projector only
    rounds = warmup + repeats
    gc.collect()
    with torch.inference_mode(), tqdm(total=rounds * len(items), desc=dtype_name, file=sys.stderr) as bar:
        for r in range(rounds):
            shift = r % len(items)
            for item in items[shift:] + items[:shift]:
                if item is None:
                    bar.set_postfix_str("ViT+projector")
                    t = _ms(lambda: model.get_image_features(pixel_values))
                    if r >= warmup:
                        vision_ms.append(t)
                else:
                    bar.set_postfix_str(item.name)
                    set_variant(model, item)
                    ids = item.input_ids

                    def forward(ids=ids):
                        model(input_ids=ids, pixel_values=pixel_values, use_cache=use_cache, logits_to_keep=1)

                    t = _ms(forward)
                    if r >= warmup:
                        item.fwd_ms.append(t)
                bar.update()
    return vision_ms


def summarise(dtype_name: str, variants: list[Variant], vision_ms: list[float]) -> list[dict]:
    base = variants[0]
    rows = []
    for v in variants:
        llm_ms = [f - vis for f, vis in zip(v.fwd_ms, vision_ms, strict=True)]
        base_llm = [f - vis for f, vis in zip(base.fwd_ms, vision_ms, strict=True)]
        fwd_ratio = statistics.median(a / b for a, b in zip(v.fwd_ms, base.fwd_ms, strict=True))
        llm_ratio = statistics.median(
            a / b for a, b in zip(llm_ms, base_llm, strict=True)
        ) if min(base_llm) > 0 else None
        llm_median = statistics.median(llm_ms)
        rows.append({
            "dtype": dtype_name,
            "config": v.name,
            "expand_layer": v.expand_layer,
            "stride": v.stride,
            "tokens_per_layer": v.tokens_per_layer,
            "llm_flops": v.llm_flops,
            "flops_ratio": v.llm_flops / base.llm_flops,
            "prefill_ms": statistics.median(v.fwd_ms),
            "prefill_iqr_ms": _iqr(v.fwd_ms),
            "vision_ms": statistics.median(vision_ms),
            "llm_ms": llm_median,
            "time_ratio": fwd_ratio,
            "llm_time_ratio": llm_ratio,
            "llm_gflops_per_s": v.llm_flops / llm_median / 1e6 if llm_median > 0 else None,
            "prefill_ms_samples": [round(x, 3) for x in v.fwd_ms],
            "vision_ms_samples": [round(x, 3) for x in vision_ms],
        })
    return rows


TABLE = [
    ("dtype", "dtype", None),
    ("config", "config", None),
    ("tokens_per_layer", "tokens/layer", "{:.1f}"),
    ("llm_flops", "LLM FLOPs", None),
    ("flops_ratio", "FLOPs ratio", "{:.3f}"),
    ("prefill_ms", "prefill ms", "{:.1f}"),
    ("prefill_iqr_ms", "IQR ms", "{:.1f}"),
    ("llm_ms", "LLM ms", "{:.1f}"),
    ("time_ratio", "time ratio", "{:.3f}"),
    ("llm_time_ratio", "LLM time ratio", "{:.3f}"),
    ("llm_gflops_per_s", "LLM GFLOP/s", "{:.1f}"),
]


def render(rows: list[dict]) -> str:
    """The result table, fixed decimals per column."""
    return render_table(rows, TABLE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small model, few repeats (smoke test)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (default both)")
    p.add_argument("--configs", default=None,
                   help="LVTC settings as expand_layer:stride items, e.g. 12:2,19:2,19:4; LVTC off is always measured")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per dtype")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds per dtype")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch intra-op threads (default: all available cores)")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--kv-heads", dest="kv_heads", type=int, default=None)
    p.add_argument("--vocab", type=int, default=None)
    p.add_argument("--tiles", type=int, default=None, help="tiles of the one image (256 tokens each)")
    p.add_argument("--text-tokens", dest="text_tokens", type=int, default=None,
                   help=f"non-visual tokens of the prompt (>= {_FIXED_TEXT})")
    p.add_argument("--projector", choices=("mlp", "pvtc"), default="mlp")
    p.add_argument("--cache", action="store_true", help="prefill with use_cache=True (default: no cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.text_tokens is not None and args.text_tokens < _FIXED_TEXT:
        p.error(f"--text-tokens must be >= {_FIXED_TEXT}")
    unknown = [d for d in args.dtypes.split(",") if d not in DTYPES]
    if unknown:
        p.error(f"--dtypes: unknown {unknown}; known: {list(DTYPES)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sizes = resolve_sizes(args)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    config = build_config(sizes, args.projector)
    torch.manual_seed(args.seed)
    model = InternVLXForConditionalGeneration(config).eval()
    variants = parse_configs(sizes["configs"])
    prepare(model, variants, sizes["tiles"], sizes["text_tokens"])
    size = config.tile_size
    pixel_values = torch.randn(sizes["tiles"], 3, size, size, generator=torch.Generator().manual_seed(args.seed))

    info = machine_info(args.threads)
    text = config.text_config
    attn = getattr(text, "_attn_implementation", None) or "default"
    params = sum(p.numel() for p in model.language_model.parameters())
    header = [
        machine_line(info),
        f"LLM: Llama {text.num_hidden_layers} layers, hidden {text.hidden_size}, intermediate "
        f"{text.intermediate_size}, heads {text.num_attention_heads}/{text.num_key_value_heads} kv, "
        f"vocab {text.vocab_size} ({params / 1e6:.0f} M params), attention {attn}; ViT 1 layer x 64, "
        f"projector {args.projector}",
        f"prompt: 1 image x {sizes['tiles']} tiles x {config.tokens_per_tile} tokens + "
        f"{sizes['text_tokens']} text tokens; prefill with logits_to_keep=1, use_cache={args.cache}; "
        f"{sizes['warmup']} warm-up + {sizes['repeats']} timed rounds, interleaved",
    ]
    print("\n".join(header), flush=True)

    rows: list[dict] = []
    vision: dict[str, float] = {}
    for dtype_name in args.dtypes.split(","):
        model.to(DTYPES[dtype_name])  # same weights, rounded when going to bf16
        print(f"measuring {dtype_name}: ViT+projector and {', '.join(v.name for v in variants)}", flush=True)
        vision_ms = measure(model, variants, pixel_values, dtype_name, sizes["warmup"], sizes["repeats"], args.cache)
        vision[dtype_name] = statistics.median(vision_ms)
        rows += summarise(dtype_name, variants, vision_ms)

    wall = time.perf_counter() - started
    print()
    print(render(rows))
    print(
        "vision (ViT+projector, in prefill ms, subtracted for LLM ms) median: "
        + ", ".join(f"{d} {ms:.1f} ms" for d, ms in vision.items())
        + f"; wall time {wall:.0f} s"
    )
    result = {"machine": info, "sizes": sizes, "projector": args.projector, "use_cache": args.cache,
              "wall_s": wall, "rows": rows}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
