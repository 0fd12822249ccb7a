"""Efficiency benchmark: the InternVL2 baseline and InternVL-X side by side, in one process.

`run_benchmark(preset, ...)` builds one set of random weights and runs, interleaved, on the
same weights and the same images:

* `hf-internvl2`: transformers' own `InternVLForConditionalGeneration` (MLP projector, stock
  tiling) holding our baseline's weights (`to_transformers_internvl`, then the very same
  tensors are shared, so it costs no extra memory);
* `internvl2`: our InternVL2 baseline (MLP projector, stock tiling);
* InternVL-X: `pvtc-r0.5` (PVTC, r = 0.5), `pvtc-r0.25` (its own PVTC projector, r = 0.25) and
  `pvtc+lvtc` (the r = 0.5 model with LVTC switched on by `configure_lvtc`), each with the
  `stock`, `length` and `area` tilings (RVTC is `length`/`area`): `pvtc-r0.5/length`, ...

All models share the ViT and LLM modules of the baseline (same tensors, not copies). The images
are synthetic gradients of real sizes (640x480, 1024x768, 1920x1080, 448x1344), one request per
image, prepared by the real `InternVLXProcessor` with a small BPE tokenizer (internlm2-chat
template, default system message).

Figures per configuration (one JSON row each; per-request values are means over the images):

* `visual_tokens`: `<IMG_CONTEXT>` slots at the LLM input; `visual_tokens_per_layer`;
* `flops`: analytic prefill FLOPs (`internvlx.accounting.prefill_flops`) by part;
* `ttft_s`: time to first token = wall time of the prefill forward from pixel tensors (ViT,
  projector, LLM with `use_cache=True`, `logits_to_keep=1`); median over rounds of the mean
  over the images, with IQR, min, max and the samples; `llm_s`: the LLM part of it (forward
  hooks: first decoder layer to LM head), `vision_s` the rest;
* `decode_tok_s`: `(N - 1) / T_decode` for `generate(max_new_tokens=N, min_new_tokens=N)`
  (greedy) on one image, where `T_decode` runs from the first generated token to the last (a
  logits processor stamps every step; the prefill yields the first token, so `N - 1` steps).
  This is `T_generate - TTFT` measured inside the same call: subtracting a TTFT measured in
  other rounds goes wrong (even negative) when the machine's load changes between rounds;
* `train_samples_s`: forward + backward (no optimizer step) on a small right-padded batch;
* `peak_mem_bytes`: `weight_bytes` of the configuration's model + `activation_peak_bytes`, the
  peak that the prefill of its largest request adds (`internvlx.benchutils.PeakMemory`: CPU resident-set high-water mark
  with glibc told to return freed tensors at once, GPU `torch.cuda.max_memory_allocated`);
  measured after all timings;
* `*_ratio_vs_hf` and `*_ratio_vs_baseline`: median over rounds of the per-round ratio to the
  transformers row and to our baseline; time ratios (lower is faster; for decode the ratio of
  the time per decoded token); `prefill_ratio_gap` = measured TTFT ratio / analytic FLOPs ratio
  to the baseline - 1;
* `gemm_fraction`: LLM FLOP/s achieved (analytic LLM FLOPs / `llm_s`) over the measured GEMM
  throughput of the machine at the LLM's shapes and dtype (the "physical limit").

Timing: warm-up rounds, then rounds in which every configuration runs once, in an order rotated
by one each round, so that machine noise falls on all of them alike. On a GPU the clock is
CUDA events. Output: two tables on the terminal, `results.json` (the rows), `run.json` (machine,
settings, GEMM, rows) and, with matplotlib, `tokens_vs_ttft.png` and `flops_vs_time.png`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from .accounting import count_visual_tokens, prefill_flops, tokens_per_tile_by_layer
from .benchutils import (
    Clock,
    PeakMemory,
    iqr,
    machine_info,
    machine_line,
    render_table,
    tensor_bytes,
)
from .configuration import InternVLXConfig
from .errors import ConfigError
from .hf_interop import _rename, to_transformers_internvl
from .modeling import InternVLXForConditionalGeneration
from .processing import IGNORE_INDEX, InternVLXProcessor, ProcessedImage
from .tokenizer import train_bpe_tokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
POLICIES = ("stock", "length", "area")
REAL_IMAGE_SIZES = ((640, 480), (1024, 768), (1920, 1080), (448, 1344))
QUESTION = "Describe the image in detail."
ANSWER = (
    "The image shows a smooth colour gradient from dark blue in the top left corner to bright "
    "orange in the bottom right, crossed by soft diagonal stripes."
)
RESULTS_JSON, RUN_JSON = "results.json", "run.json"
PLOTS = ("tokens_vs_ttft.png", "flops_vs_time.png")


# ------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class RunSizes:
    """How much a run measures: untimed and timed prefill rounds; decoded tokens, untimed and
    timed decode rounds; training batch size, untimed and timed training rounds."""

    warmup: int
    repeats: int
    decode_tokens: int
    decode_warmup: int
    decode_repeats: int
    train_batch: int
    train_warmup: int
    train_repeats: int


@dataclass(frozen=True)
class BenchPreset:
    """Model shapes (`InternVLXConfig.from_preset(model_preset, **overrides)`), the images, and
    the run sizes of a full run and of `--quick`."""

    description: str
    model_preset: str
    overrides: dict[str, Any]
    full: RunSizes
    quick: RunSizes
    image_sizes: tuple[tuple[int, int], ...] = REAL_IMAGE_SIZES
    max_tiles: int = 12
    decode_image: int = 1  # index into image_sizes: the request that decode is measured on


BENCH_PRESETS: dict[str, BenchPreset] = {
    # Tests: the tiny model (56 px tiles). The images are the real sizes scaled by 56/448 = 1/8,
    # which gives exactly the tile grids that the real sizes get with 448 px tiles.
    "tiny": BenchPreset(
        description="tests: tiny model, images at 1/8 scale (56 px tiles)",
        model_preset="tiny",
        overrides={},
        full=RunSizes(warmup=1, repeats=2, decode_tokens=4, decode_warmup=1,
                      decode_repeats=2, train_batch=2, train_warmup=1, train_repeats=1),
        quick=RunSizes(warmup=0, repeats=1, decode_tokens=3, decode_warmup=0,
                       decode_repeats=1, train_batch=2, train_warmup=0, train_repeats=1),
        image_sizes=((80, 60), (128, 96), (240, 135), (56, 168)),
    ),
    # A small CPU (2 cores): real 448 px tiles, patch 14 and tilings, so the token counts are
    # those of the real models; a 1-layer ViT and an 8-layer, 384-wide LLM keep a --quick run
    # at a few minutes.
    "cpu": BenchPreset(
        description="CPU: 448 px tiles / patch 14 (real token counts), ViT 1x192, Llama 8x384 "
                    "(MLP 1024, 6/2 heads), vocab 8192",
        model_preset="internvlx-2b",
        overrides={
            "vision_config": {"hidden_size": 192, "num_hidden_layers": 1, "num_attention_heads": 4,
                              "intermediate_size": 768},
            "text_config": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 8,
                            "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 8192},
            "projector": {"num_heads": 6},
        },
        full=RunSizes(warmup=1, repeats=5, decode_tokens=32, decode_warmup=1,
                      decode_repeats=3, train_batch=2, train_warmup=1, train_repeats=3),
        quick=RunSizes(warmup=1, repeats=2, decode_tokens=8, decode_warmup=0,
                       decode_repeats=1, train_batch=1, train_warmup=0, train_repeats=1),
    ),
    # GPU: the real shapes (InternViT-300M + InternLM2-1.8B / 7B as Llama).
    "internvlx-2b": BenchPreset(
        description="GPU: InternVL-X-2B shapes (InternViT-300M, InternLM2-1.8B)",
        model_preset="internvlx-2b",
        overrides={},
        full=RunSizes(warmup=2, repeats=10, decode_tokens=128, decode_warmup=1,
                      decode_repeats=5, train_batch=4, train_warmup=1, train_repeats=5),
        quick=RunSizes(warmup=1, repeats=3, decode_tokens=32, decode_warmup=1,
                       decode_repeats=2, train_batch=2, train_warmup=1, train_repeats=2),
    ),
    "internvlx-8b": BenchPreset(
        description="GPU: InternVL-X-8B shapes (InternViT-300M, InternLM2-7B)",
        model_preset="internvlx-8b",
        overrides={},
        full=RunSizes(warmup=2, repeats=10, decode_tokens=128, decode_warmup=1,
                      decode_repeats=5, train_batch=2, train_warmup=1, train_repeats=5),
        quick=RunSizes(warmup=1, repeats=3, decode_tokens=32, decode_warmup=1,
                       decode_repeats=2, train_batch=1, train_warmup=1, train_repeats=2),
    ),
}


@dataclass(frozen=True)
class BenchSettings:
    """Everything one run uses (recorded in `run.json`)."""

    preset: str
    quick: bool
    device: str
    dtype: str
    model_preset: str
    overrides: dict[str, Any]
    image_sizes: tuple[tuple[int, int], ...]
    max_tiles: int
    policies: tuple[str, ...]
    warmup: int
    repeats: int
    decode_tokens: int
    decode_warmup: int
    decode_repeats: int
    decode_image: int
    train_batch: int
    train_warmup: int
    train_repeats: int
    seed: int


def resolve_settings(
    preset: str | None = None,
    *,
    quick: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    policies: Sequence[str] | None = None,
    seed: int = 0,
    **sizes: int | None,
) -> BenchSettings:
    """The settings of a run: the preset (default `cpu` on CPU, `internvlx-2b` on CUDA), its
    full or `quick` run sizes, and explicit `sizes` (the fields of `RunSizes`; None keeps the
    preset's)."""
    device = device or "cpu"
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    name = preset or ("internvlx-2b" if dev.type == "cuda" else "cpu")
    if name not in BENCH_PRESETS:
        raise ConfigError(f"unknown benchmark preset {name!r}; available: {sorted(BENCH_PRESETS)}")
    p = BENCH_PRESETS[name]
    dtype = dtype or ("bf16" if dev.type == "cuda" else "fp32")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    policies = tuple(policies or POLICIES)
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ConfigError(f"unknown tiling policies {unknown}; known: {list(POLICIES)}")
    run = dataclasses.asdict(p.quick if quick else p.full)
    unknown = sorted(set(sizes) - set(run))
    if unknown:
        raise ConfigError(f"unknown run size(s) {unknown}; known: {sorted(run)}")
    run.update({k: v for k, v in sizes.items() if v is not None})
    if run["repeats"] < 1 or run["decode_repeats"] < 1 or run["train_repeats"] < 1 or run["train_batch"] < 1:
        raise ConfigError("repeats, decode_repeats, train_repeats and train_batch must be >= 1")
    if min(run["warmup"], run["decode_warmup"], run["train_warmup"]) < 0 or run["decode_tokens"] < 1:
        raise ConfigError("warm-up rounds must be >= 0 and decode_tokens >= 1")
    return BenchSettings(
        preset=name, quick=quick, device=str(dev), dtype=dtype, model_preset=p.model_preset,
        overrides=p.overrides, image_sizes=p.image_sizes, max_tiles=p.max_tiles, policies=policies,
        decode_image=p.decode_image, seed=seed, **run,
    )


# ------------------------------------------------------------------------------ inputs
def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth RGB gradient with soft diagonal stripes (deterministic)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    phase = 0.7 * seed
    r = 255 * (0.15 + 0.8 * (u + v) / 2)
    g = 255 * (0.5 + 0.4 * np.sin(2 * math.pi * (3 * u - 2 * v) + phase))
    b = 255 * (0.9 - 0.8 * u * v)
    rgb = np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


def bench_tokenizer():
    """A small byte-level BPE tokenizer trained on the benchmark's texts."""
    from .templates import get_template

    system = get_template("internlm2-chat").system_message
    return train_bpe_tokenizer([system, QUESTION, ANSWER] * 8, vocab_size=512)


@dataclass
class Request:
    """One image's prefill for one configuration, with its analytic accounting."""

    image: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    tiles: int
    text_tokens: int
    visual_tokens: int
    visual_tokens_per_layer: list[int]
    flops: dict[str, int]


@dataclass
class Variant:
    """One benchmarked configuration and its measurements."""

    name: str
    family: str
    model_key: str  # hf, mlp, pvtc50, pvtc25
    lvtc: bool
    config: InternVLXConfig
    requests: list[Request] = field(default_factory=list)
    train_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    ttft_s: list[list[float]] = field(default_factory=list)  # [round][image]
    llm_s: list[list[float]] = field(default_factory=list)
    generate_s: list[float] = field(default_factory=list)  # whole generate() calls
    decode_s: list[float] = field(default_factory=list)  # first to last token inside them
    train_s: list[float] = field(default_factory=list)
    activation_peak_bytes: int | None = None
    weight_bytes: int = 0
    train_error: str | None = None


def variant_config(settings: BenchSettings, tokenizer, projector: str, ratio: float, lvtc: bool,
                   policy: str) -> InternVLXConfig:
    """The model config of one configuration; vocabulary and special ids follow `tokenizer`."""
    overrides = json.loads(json.dumps(settings.overrides))  # deep copy
    text = overrides.setdefault("text_config", {})
    preset_vocab = text.get("vocab_size") or InternVLXConfig.from_preset(settings.model_preset).text_config.vocab_size
    text.update(vocab_size=max(preset_vocab, len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    overrides.setdefault("projector", {}).update(type=projector, downsample_ratio=ratio)
    overrides["tiling"] = {"policy": policy, "max_tiles": settings.max_tiles, "min_tiles": 1, "thumbnail": True}
    overrides["lvtc"] = {"enabled": lvtc}
    overrides["image_token_id"] = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    overrides["template"] = "internlm2-chat"
    return InternVLXConfig.from_preset(settings.model_preset, **overrides)


def plan_variants(settings: BenchSettings, tokenizer) -> list[Variant]:
    """The configurations of a run, in table order (transformers first, our baseline second)."""
    out = [
        Variant("hf-internvl2", "hf", "hf", False, variant_config(settings, tokenizer, "mlp", 0.5, False, "stock")),
        Variant("internvl2", "internvl2", "mlp", False, variant_config(settings, tokenizer, "mlp", 0.5, False, "stock")),
    ]
    for family, key, ratio, lvtc in (("pvtc-r0.5", "pvtc50", 0.5, False), ("pvtc-r0.25", "pvtc25", 0.25, False),
                                     ("pvtc+lvtc", "pvtc50", 0.5, True)):
        for policy in settings.policies:
            cfg = variant_config(settings, tokenizer, "pvtc", ratio, lvtc, policy)
            out.append(Variant(f"{family}/{policy}", family, key, lvtc, cfg))
    return out


# ------------------------------------------------------------------------------ models
@contextlib.contextmanager
def _building(device: torch.device, dtype: torch.dtype):
    """Create parameters directly on `device` in `dtype` (no float32 CPU detour)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def share_weights(hf_model: torch.nn.Module, ours: InternVLXForConditionalGeneration) -> None:
    """Make transformers' InternVL use our baseline's tensors (no copy); checks every
    parameter afterwards."""
    state = {_rename(k, reverse=False): v for k, v in ours.state_dict().items()}
    if hf_model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    hf_model.load_state_dict(state, strict=False, assign=True)
    ours_ptrs = {t.data_ptr() for t in ours.state_dict().values()}
    foreign = [n for n, p in hf_model.named_parameters() if p.data_ptr() not in ours_ptrs]
    if foreign:
        raise RuntimeError(f"weights not shared with transformers' InternVL: {foreign[:5]}")


def build_models(settings: BenchSettings, variants: list[Variant]) -> dict[str, torch.nn.Module]:
    """The four models of a run: our baseline (`mlp`), transformers' copy of it (`hf`), and the
    PVTC r = 0.5 / 0.25 models (`pvtc50`, `pvtc25`) sharing the baseline's ViT and LLM."""
    device, dtype = torch.device(settings.device), DTYPES[settings.dtype]
    by_key = {v.model_key: v.config for v in variants if not v.lvtc}
    torch.manual_seed(settings.seed)
    with _building(device, dtype):
        mlp = InternVLXForConditionalGeneration(by_key["mlp"])
    mlp = mlp.to(device=device, dtype=dtype).eval()
    with _building(device, dtype):
        hf = to_transformers_internvl(mlp)
    share_weights(hf, mlp)
    models: dict[str, torch.nn.Module] = {"hf": hf.eval(), "mlp": mlp}
    for i, key in enumerate(("pvtc50", "pvtc25")):
        if key not in by_key:
            continue
        torch.manual_seed(settings.seed + 1 + i)
        with _building(device, dtype):
            model = InternVLXForConditionalGeneration(by_key[key])
        model.vision_model = mlp.vision_model
        model.language_model = mlp.language_model
        models[key] = model.to(device=device, dtype=dtype).eval()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return models


def _llm_modules(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(first decoder layer, LM head) of our model or of transformers' InternVL."""
    if isinstance(model, InternVLXForConditionalGeneration):
        return model.language_model.model.layers[0], model.language_model.lm_head
    return model.model.language_model.layers[0], model.lm_head


class LLMSpan:
    """Times the LLM part of a forward: from the first decoder layer's start to the LM head's
    end (forward hooks; inactive unless armed)."""

    def __init__(self, clock: Clock, first_layer: torch.nn.Module, lm_head: torch.nn.Module):
        self.clock, self.armed, self.start, self.end = clock, False, None, None
        self.handles = [first_layer.register_forward_pre_hook(self._pre),
                        lm_head.register_forward_hook(self._post)]

    def _pre(self, *_):
        if self.armed and self.start is None:
            self.start = self.clock.mark()

    def _post(self, *_):
        if self.armed:
            self.end = self.clock.mark()

    def arm(self) -> None:
        self.armed, self.start, self.end = True, None, None

    def seconds(self) -> float | None:
        self.armed = False
        if self.start is None or self.end is None:
            return None
        return self.clock.seconds(self.start, self.end)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _StepMarks(LogitsProcessor):
    """A logits processor that only records a clock mark at every generation step."""

    def __init__(self, clock: Clock):
        self.clock, self.marks = clock, []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.marks.append(self.clock.mark())
        return scores


class Suite:
    """Models, configurations and inputs of one run (`build_suite`)."""

    def __init__(self, settings: BenchSettings, tokenizer, models: dict[str, torch.nn.Module],
                 variants: list[Variant]):
        self.settings, self.tokenizer, self.models, self.variants = settings, tokenizer, models, variants
        self.device = torch.device(settings.device)
        self.clock = Clock(self.device)
        self.memory_method: str | None = None
        spans: dict[int, LLMSpan] = {}
        self.spans: dict[str, LLMSpan] = {}
        for key, model in models.items():
            first, head = _llm_modules(model)
            if id(first) not in spans:
                spans[id(first)] = LLMSpan(self.clock, first, head)
            self.spans[key] = spans[id(first)]

    def model(self, variant: Variant) -> torch.nn.Module:
        """The variant's model, with LVTC switched on or off as the variant needs."""
        model = self.models[variant.model_key]
        if isinstance(model, InternVLXForConditionalGeneration) and (model.lvtc is not None) != variant.lvtc:
            model.configure_lvtc(variant.lvtc)
        return model

    @staticmethod
    def _prefill(model: torch.nn.Module, request: Request):
        return model(input_ids=request.input_ids, attention_mask=request.attention_mask,
                     pixel_values=request.pixel_values, use_cache=True, logits_to_keep=1)

    def prefill(self, variant: Variant, request: Request):
        """One prefill forward (what TTFT times): logits of the last position and the cache."""
        return self._prefill(self.model(variant), request)

    def timed_prefill(self, variant: Variant, request: Request) -> tuple[float, float | None]:
        """Seconds of one prefill, and of its LLM part (None if the hooks did not fire)."""
        model, span = self.model(variant), self.spans[variant.model_key]
        span.arm()
        start = self.clock.mark()
        out = self._prefill(model, request)
        end = self.clock.mark()
        total, llm = self.clock.seconds(start, end), span.seconds()
        del out
        return total, llm

    def generate(self, variant: Variant, request: Request, tokens: int, **kwargs) -> torch.Tensor:
        return self.model(variant).generate(
            input_ids=request.input_ids, attention_mask=request.attention_mask,
            pixel_values=request.pixel_values, max_new_tokens=tokens, min_new_tokens=tokens,
            do_sample=False, eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
            **kwargs,
        )

    def timed_generate(self, variant: Variant, request: Request, tokens: int) -> tuple[float, float | None]:
        """Seconds of `generate(max_new_tokens=tokens, min_new_tokens=tokens)` and of its decode
        part: from the first token's logits to the last token's (`tokens - 1` decode steps),
        stamped by a logits processor, which generate calls once per token."""
        steps = _StepMarks(self.clock)
        start = self.clock.mark()
        self.generate(variant, request, tokens, logits_processor=LogitsProcessorList([steps]))
        end = self.clock.mark()
        total = self.clock.seconds(start, end)
        if tokens < 2 or len(steps.marks) != tokens:
            return total, None
        return total, self.clock.seconds(steps.marks[0], steps.marks[-1])

    def train_step(self, variant: Variant) -> float:
        """Seconds of one forward + backward on the variant's training batch."""
        model = self.model(variant)
        model.train()
        try:
            with torch.enable_grad():
                start = self.clock.mark()
                loss = model(**variant.train_inputs).loss
                loss.backward()
                end = self.clock.mark()
                seconds = self.clock.seconds(start, end)
        finally:
            model.eval()
            for p in model.parameters():
                p.grad = None
        return seconds

    def close(self) -> None:
        for span in {id(s): s for s in self.spans.values()}.values():
            span.remove()


def build_suite(settings: BenchSettings) -> Suite:
    """Tokenizer, configurations, models and inputs (requests, training batches) of a run."""
    tokenizer = bench_tokenizer()
    variants = plan_variants(settings, tokenizer)
    models = build_models(settings, variants)
    device, dtype = torch.device(settings.device), DTYPES[settings.dtype]
    images = [synthetic_image(w, h, seed=i) for i, (w, h) in enumerate(settings.image_sizes)]
    processed: dict[tuple[str, int], ProcessedImage] = {}
    pixels: dict[tuple[str, int], torch.Tensor] = {}
    messages = [{"role": "user", "content": QUESTION}]
    for v in variants:
        cfg = v.config
        processor = InternVLXProcessor.from_config(cfg, tokenizer)
        per_layer = tokens_per_tile_by_layer(cfg)
        for i, image in enumerate(images):
            key = (cfg.tiling.policy, i)
            sample = processor.encode(messages, [image])
            got = sample.images[0]
            if key not in processed:
                processed[key] = got
                pixels[key] = got.pixel_values.to(device=device, dtype=dtype)
            elif got.plan != processed[key].plan:
                raise RuntimeError(f"tiling of image {i} differs between configurations with policy {key[0]}")
            tiles = got.plan.num_tiles
            expected = count_visual_tokens(image.width, image.height, cfg)
            if expected.tiles != tiles:
                raise RuntimeError(f"processor tiles {tiles} != accounting {expected.tiles} for {v.name}")
            n_visual = tiles * cfg.input_tokens_per_tile
            text = len(sample.input_ids) - n_visual
            ids = torch.tensor([sample.input_ids], device=device)
            v.requests.append(Request(
                image=f"{image.width}x{image.height}", input_ids=ids, attention_mask=torch.ones_like(ids),
                pixel_values=pixels[key], tiles=tiles, text_tokens=text, visual_tokens=n_visual,
                visual_tokens_per_layer=[tiles * n for n in per_layer],
                flops={**prefill_flops(cfg, [tiles], text).as_dict()},
            ))
        v.train_inputs = _train_batch(processor, tokenizer, [
            (processed[(cfg.tiling.policy, i % len(images))], pixels[(cfg.tiling.policy, i % len(images))])
            for i in range(settings.train_batch)
        ], device)
    return Suite(settings, tokenizer, models, variants)


def _train_batch(processor: InternVLXProcessor, tokenizer, items: list[tuple[ProcessedImage, torch.Tensor]],
                 device: torch.device) -> dict[str, torch.Tensor]:
    """A right-padded batch of question + answer conversations with their labels."""
    conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    samples = [processor.encode_conversation(conversation, [image]) for image, _ in items]
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, :n] = torch.tensor(s.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device),
            "pixel_values": torch.cat([p for _, p in items])}


# ------------------------------------------------------------------------------ checks
@torch.inference_mode()
def logits_difference(suite: Suite) -> float:
    """Largest |logit difference| between transformers' InternVL and our baseline over all
    positions of every benchmark request (identical weights and inputs)."""
    hf, ours = suite.variants[0], suite.variants[1]
    worst = 0.0
    for a, b in zip(hf.requests, ours.requests, strict=True):
        if not (torch.equal(a.input_ids, b.input_ids) and torch.equal(a.pixel_values, b.pixel_values)):
            raise RuntimeError("transformers' and our baseline requests differ")
        kw = dict(input_ids=a.input_ids, attention_mask=a.attention_mask, pixel_values=a.pixel_values)
        x = suite.models["hf"](**kw).logits.float()
        y = suite.models["mlp"](**kw).logits.float()
        worst = max(worst, (x - y).abs().max().item())
    return worst


# ------------------------------------------------------------------------------ GEMM
def gemm_shapes(config: InternVLXConfig, tokens: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of the LLM's big matmuls over `tokens` positions: MLP up/gate, MLP down,
    attention q/o projection."""
    t = config.text_config
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    c, i, q = t.hidden_size, t.intermediate_size, t.num_attention_heads * head_dim
    return [(tokens, c, i), (tokens, i, c), (tokens, c, q)]


@torch.inference_mode()
def measure_gemm(shapes: Sequence[tuple[int, int, int]], device: torch.device, dtype: torch.dtype,
                 clock: Clock, min_seconds: float = 0.3) -> list[dict[str, Any]]:
    """Median FLOP/s of `a @ b` for each shape (2 warm-up calls, then at least 3 timed calls
    and `min_seconds`)."""
    out = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(k, n, generator=g).to(device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        clock.sync()
        times: list[float] = []
        while len(times) < 3 or sum(times) < min_seconds:
            times.append(clock.time(lambda a=a, b=b: a @ b))
            if len(times) >= 200:
                break
        out.append({"m": m, "k": k, "n": n, "flops_per_s": 2 * m * k * n / statistics.median(times)})
    return out


# ------------------------------------------------------------------------------ running
def _rounds(variants: list[Variant], rounds: int, step: Callable[[Variant, bool, int], None],
            warmup: int, desc: str, progress: bool) -> None:
    """Every round runs `step(variant, timed, round)` for every variant, in an order rotated by
    one each round; the first `warmup` rounds are untimed. Without warm-up rounds, one untimed
    call of the cheapest variant comes first, so that the process's one-time costs (first
    backward, first decode step, ...) do not fall on whichever variant happens to be first."""
    from tqdm import tqdm

    gc.collect()
    if warmup == 0:
        step(min(variants, key=lambda v: sum(r.flops["total"] for r in v.requests)), False, -1)
    with tqdm(total=rounds * len(variants), desc=desc, file=sys.stderr, disable=not progress) as bar:
        for r in range(rounds):
            shift = r % len(variants)
            for v in variants[shift:] + variants[:shift]:
                bar.set_postfix_str(v.name)
                step(v, r >= warmup, r)
                bar.update()


def measure_all(suite: Suite, progress: bool = True) -> None:
    """Prefill, decode and training rounds (interleaved), then memory; fills the variants."""
    s, variants = suite.settings, suite.variants

    def prefill(v: Variant, timed: bool, _r: int) -> None:
        times = [suite.timed_prefill(v, req) for req in v.requests]
        if timed:
            v.ttft_s.append([t for t, _ in times])
            v.llm_s.append([llm if llm is not None else math.nan for _, llm in times])

    with torch.inference_mode():
        _rounds(variants, s.warmup + s.repeats, prefill, s.warmup, "prefill", progress)

        def decode(v: Variant, timed: bool, _r: int) -> None:
            total, decode_part = suite.timed_generate(v, v.requests[s.decode_image], s.decode_tokens)
            if timed:
                v.generate_s.append(total)
                if decode_part is not None:
                    v.decode_s.append(decode_part)

        _rounds(variants, s.decode_warmup + s.decode_repeats, decode, s.decode_warmup, "decode", progress)

    def train(v: Variant, timed: bool, _r: int) -> None:
        if v.train_error:
            return
        try:
            seconds = suite.train_step(v)
        except torch.OutOfMemoryError as e:  # full-size presets on a small GPU: report, go on
            v.train_error = f"out of memory: {str(e).splitlines()[0]}"
            gc.collect()
            if suite.device.type == "cuda":
                torch.cuda.empty_cache()
            return
        if timed:
            v.train_s.append(seconds)

    _rounds(variants, s.train_warmup + s.train_repeats, train, s.train_warmup, "train", progress)

    meter = PeakMemory(suite.device)
    with torch.inference_mode():
        for v in variants:
            v.weight_bytes = tensor_bytes(suite.model(v))
            largest = max(v.requests, key=lambda r: (r.flops["total"], r.tiles))
            with meter:
                out = suite.prefill(v, largest)
                del out
            v.activation_peak_bytes = meter.peak_bytes
    suite.memory_method = meter.method


# ------------------------------------------------------------------------------ summary
def _ratio(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Median of the per-round ratios (None when the rounds do not pair up)."""
    if not values or len(values) != len(reference):
        return None
    pairs = [a / b for a, b in zip(values, reference, strict=True) if b and b > 0 and not math.isnan(a / b)]
    return statistics.median(pairs) if pairs else None


def summarise(suite: Suite, gemm_flops_per_s: float | None) -> list[dict[str, Any]]:
    """One row per configuration (see the module docstring for the fields)."""
    s = suite.settings
    n_images = len(s.image_sizes)
    hf, base = suite.variants[0], suite.variants[1]
    decode_steps = s.decode_tokens - 1

    def sums(per_round: list[list[float]]) -> list[float]:
        return [sum(r) for r in per_round]

    def mean_flops(v: Variant) -> dict[str, float]:
        return {k: sum(r.flops[k] for r in v.requests) / n_images for k in v.requests[0].flops}

    base_flops, hf_flops = mean_flops(base), mean_flops(hf)
    rows = []
    for v in suite.variants:
        ttft_means = [x / n_images for x in sums(v.ttft_s)]
        llm_means = [x / n_images for x in sums(v.llm_s)]
        ttft, llm = statistics.median(ttft_means), statistics.median(llm_means)
        flops = mean_flops(v)
        layers = len(v.requests[0].visual_tokens_per_layer)
        per_layer = [sum(r.visual_tokens_per_layer[i] for r in v.requests) / n_images for i in range(layers)]
        decode_median = statistics.median(v.decode_s) if v.decode_s else None
        weights = v.weight_bytes
        is_hf = v is hf
        row: dict[str, Any] = {
            "name": v.name,
            "implementation": "transformers" if is_hf else "internvlx",
            "projector": v.config.projector.type,
            "downsample_ratio": v.config.projector.downsample_ratio,
            "lvtc": v.lvtc,
            "tiling": v.config.tiling.policy,
            "device": s.device,
            "dtype": s.dtype,
            "images": [r.image for r in v.requests],
            "tiles": sum(r.tiles for r in v.requests) / n_images,
            "visual_tokens": sum(r.visual_tokens for r in v.requests) / n_images,
            "visual_tokens_full": sum(r.tiles for r in v.requests) * v.config.tokens_per_tile / n_images,
            "visual_tokens_per_layer": per_layer,
            "mean_visual_tokens_per_layer": sum(per_layer) / layers,
            "text_tokens": sum(r.text_tokens for r in v.requests) / n_images,
            "flops": flops,
            "flops_ratio_vs_hf": None if is_hf else flops["total"] / hf_flops["total"],
            "flops_ratio_vs_baseline": flops["total"] / base_flops["total"],
            "llm_flops_ratio_vs_baseline": flops["llm"] / base_flops["llm"],
            "ttft_s": ttft,
            "ttft_iqr_s": iqr(ttft_means),
            "ttft_min_s": min(ttft_means),
            "ttft_max_s": max(ttft_means),
            "ttft_samples_s": ttft_means,
            "llm_s": llm,
            "vision_s": statistics.median(t - m for t, m in zip(ttft_means, llm_means, strict=True)),
            "ttft_ratio_vs_hf": None if is_hf else _ratio(sums(v.ttft_s), sums(hf.ttft_s)),
            "ttft_ratio_vs_baseline": _ratio(sums(v.ttft_s), sums(base.ttft_s)),
            "llm_time_ratio_vs_baseline": _ratio(sums(v.llm_s), sums(base.llm_s)),
            "llm_flops_per_s": flops["llm"] / llm if llm > 0 else None,
            "gemm_fraction": None,
            "decode_tokens": s.decode_tokens,
            "decode_image": v.requests[s.decode_image].image,
            "decode_tok_s": decode_steps / decode_median if decode_median else None,
            "decode_ratio_vs_hf": None if is_hf else _ratio(v.decode_s, hf.decode_s),
            "generate_s": statistics.median(v.generate_s),
            "train_batch": s.train_batch,
            "train_samples_s": s.train_batch / statistics.median(v.train_s) if v.train_s else None,
            "train_ratio_vs_hf": None if is_hf or not v.train_s or not hf.train_s else _ratio(v.train_s, hf.train_s),
            "train_error": v.train_error,
            "weight_bytes": weights,
            "activation_peak_bytes": v.activation_peak_bytes,
            "peak_mem_bytes": weights + (v.activation_peak_bytes or 0),
            "memory_method": suite.memory_method,
            "per_image": [
                {"image": r.image, "tiles": r.tiles, "visual_tokens": r.visual_tokens, "text_tokens": r.text_tokens,
                 "flops_total": r.flops["total"], "llm_flops": r.flops["llm"],
                 "ttft_s": statistics.median(x[i] for x in v.ttft_s),
                 "llm_s": statistics.median(x[i] for x in v.llm_s)}
                for i, r in enumerate(v.requests)
            ],
        }
        row["mem_ratio_vs_hf"] = None  # filled below, once the transformers row is known
        measured, analytic = row["ttft_ratio_vs_baseline"], row["flops_ratio_vs_baseline"]
        row["prefill_ratio_gap"] = measured / analytic - 1 if measured else None
        llm_measured, llm_analytic = row["llm_time_ratio_vs_baseline"], row["llm_flops_ratio_vs_baseline"]
        row["llm_ratio_gap"] = llm_measured / llm_analytic - 1 if llm_measured else None
        if gemm_flops_per_s and row["llm_flops_per_s"]:
            row["gemm_fraction"] = row["llm_flops_per_s"] / gemm_flops_per_s
        rows.append(row)
    for row in rows[1:]:
        row["mem_ratio_vs_hf"] = row["peak_mem_bytes"] / rows[0]["peak_mem_bytes"]
    return rows


# ------------------------------------------------------------------------------ output
PREFILL_TABLE = [
    ("name", "config", None),
    ("tiles", "tiles", "{:.2f}"),
    ("visual_tokens", "vis tok", "{:.0f}"),
    ("mean_visual_tokens_per_layer", "vis tok/layer", "{:.0f}"),
    ("gflops", "GFLOP", "{:.1f}"),
    ("flops_ratio_vs_baseline", "FLOPs xbase", "{:.3f}"),
    ("ttft_ms", "TTFT ms", "{:.1f}"),
    ("ttft_iqr_ms", "IQR ms", "{:.1f}"),
    ("ttft_ratio_vs_hf", "TTFT xHF", "{:.3f}"),
    ("ttft_ratio_vs_baseline", "TTFT xbase", "{:.3f}"),
    ("prefill_ratio_gap", "vs FLOPs", "{:+.0%}"),
    ("llm_ms", "LLM ms", "{:.1f}"),
    ("llm_gflops_per_s", "LLM GFLOP/s", "{:.1f}"),
    ("gemm_fraction", "of GEMM", "{:.0%}"),
]
RUNTIME_TABLE = [
    ("name", "config", None),
    ("decode_tok_s", "decode tok/s", "{:.1f}"),
    ("decode_ratio_vs_hf", "decode xHF", "{:.3f}"),
    ("train_samples_s", "train samples/s", "{:.2f}"),
    ("train_ratio_vs_hf", "train xHF", "{:.3f}"),
    ("peak_mib", "peak MiB", "{:.0f}"),
    ("weight_mib", "weights MiB", "{:.0f}"),
    ("activation_mib", "activations MiB", "{:.0f}"),
    ("mem_ratio_vs_hf", "mem xHF", "{:.3f}"),
]


def _display(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    mib = 2**20
    out.update(
        gflops=row["flops"]["total"] / 1e9, ttft_ms=row["ttft_s"] * 1e3, ttft_iqr_ms=row["ttft_iqr_s"] * 1e3,
        llm_ms=row["llm_s"] * 1e3,
        llm_gflops_per_s=None if row["llm_flops_per_s"] is None else row["llm_flops_per_s"] / 1e9,
        peak_mib=row["peak_mem_bytes"] / mib, weight_mib=row["weight_bytes"] / mib,
        activation_mib=None if row["activation_peak_bytes"] is None else row["activation_peak_bytes"] / mib,
    )
    return out


def report(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The terminal report: header, two tables, and the summary lines."""
    s = info["settings"]
    shown = [_display(r) for r in rows]
    hf, base = rows[0], rows[1]
    lines = [
        machine_line(info["machine"]),
        f"preset {s['preset']}{' (quick)' if s['quick'] else ''}: {info['description']}; device {s['device']}, "
        f"dtype {s['dtype']}; images {', '.join(f'{w}x{h}' for w, h in s['image_sizes'])}; "
        f"{s['warmup']} warm-up + {s['repeats']} timed prefill rounds, {s['decode_repeats']} timed decode rounds "
        f"({s['decode_tokens']} tokens), {s['train_repeats']} training rounds (batch {s['train_batch']}); interleaved",
        f"per-request means over the images; TTFT = prefill forward from pixel tensors; ratios = median "
        f"of per-round ratios; memory: {hf['memory_method']}",
        "",
        render_table(shown, PREFILL_TABLE),
        "",
        render_table(shown, RUNTIME_TABLE),
        "",
    ]
    lines.append(
        f"ours vs transformers' InternVL (identical weights, max |logit diff| {info['logits_max_abs_diff']:.2e}): "
        f"TTFT x{_fmt(base['ttft_ratio_vs_hf'])}, decode x{_fmt(base['decode_ratio_vs_hf'])}, "
        f"train x{_fmt(base['train_ratio_vs_hf'])} (time ratios; target <= 1.05)"
    )
    internvlx = rows[2:]
    within = [r for r in internvlx if r["prefill_ratio_gap"] is not None and abs(r["prefill_ratio_gap"]) <= 0.15]
    worst = max(internvlx, key=lambda r: abs(r["prefill_ratio_gap"] or 0), default=None)
    if worst is not None:
        lines.append(
            f"InternVL-X measured prefill ratio vs analytic FLOPs ratio (to internvl2): {len(within)}/{len(internvlx)} "
            f"within 15%; largest gap {worst['name']} {worst['prefill_ratio_gap']:+.0%} (measured "
            f"{_fmt(worst['ttft_ratio_vs_baseline'])} vs FLOPs {_fmt(worst['flops_ratio_vs_baseline'])}; LLM part: "
            f"measured {_fmt(worst['llm_time_ratio_vs_baseline'])} vs FLOPs {_fmt(worst['llm_flops_ratio_vs_baseline'])})"
        )
    gemm = info["gemm"]
    if gemm["best_flops_per_s"]:
        fractions = [r["gemm_fraction"] for r in rows if r["gemm_fraction"] is not None]
        shapes = ", ".join(f"{g['m']}x{g['k']}x{g['n']}" for g in gemm["shapes"])
        lines.append(
            f"physical limit: {s['dtype']} GEMM {gemm['best_flops_per_s'] / 1e9:.1f} GFLOP/s (median, best of "
            f"{shapes}); LLM prefill achieves "
            f"{base['llm_flops_per_s'] / 1e9:.1f} GFLOP/s = {base['gemm_fraction']:.0%} of it for internvl2, "
            f"{min(fractions):.0%}-{max(fractions):.0%} across configurations"
        )
    m = info["machine"]
    load = m["load_average_at_start"][0]
    if m["logical_cpus"] and load + m["threads"] > m["logical_cpus"] + 0.5:
        lines.append(
            f"WARNING: the machine was busy (load average {load:.1f} on {m['logical_cpus']} logical CPUs, "
            f"{m['threads']} torch threads): timings are perturbed, and oversubscribed threads slow small "
            f"kernels (decode steps) by up to ~10x; rerun on an idle machine or with fewer --threads"
        )
    lines.append(f"wall time {info['wall_s']:.0f} s")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def write_plots(rows: list[dict[str, Any]], out_dir: Path, gemm_flops_per_s: float | None) -> list[Path]:
    """`tokens_vs_ttft.png` and `flops_vs_time.png`; needs matplotlib (`pip install
    'internvlx[bench]'`), raises ImportError without it."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    families = list(dict.fromkeys(r["name"].split("/")[0] for r in rows))
    colors = {f: matplotlib.colormaps["tab10"](i) for i, f in enumerate(families)}
    markers = {"stock": "o", "length": "s", "area": "^"}
    paths = []

    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    for r in rows:
        family = r["name"].split("/")[0]
        ax.scatter(r["visual_tokens"], r["ttft_s"] * 1e3, color=colors[family], marker=markers[r["tiling"]],
                   s=60, label=r["name"], edgecolors="black", linewidths=0.5)
        ax.errorbar(r["visual_tokens"], r["ttft_s"] * 1e3, yerr=[[r["ttft_s"] * 1e3 - r["ttft_min_s"] * 1e3],
                    [r["ttft_max_s"] * 1e3 - r["ttft_s"] * 1e3]], color=colors[family], capsize=2, lw=0.8)
        for p in r["per_image"]:
            ax.scatter(p["visual_tokens"], p["ttft_s"] * 1e3, color=colors[family], marker=markers[r["tiling"]],
                       s=12, alpha=0.35)
    ax.set_xlabel("visual tokens at the LLM input (per request)")
    ax.set_ylabel("time to first token, ms")
    ax.set_title(f"TTFT vs visual tokens ({rows[0]['device']}, {rows[0]['dtype']}); large: mean, small: per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out_dir / PLOTS[0])
    fig.savefig(paths[-1], dpi=120)

    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    xs, ys = [], []
    for r in rows:
        family = r["name"].split("/")[0]
        for p in r["per_image"]:
            xs.append(p["flops_total"] / 1e9)
            ys.append(p["ttft_s"] * 1e3)
        ax.scatter(r["flops"]["total"] / 1e9, r["ttft_s"] * 1e3, color=colors[family], marker=markers[r["tiling"]],
                   s=60, label=r["name"], edgecolors="black", linewidths=0.5)
    ax.scatter(xs, ys, color="grey", s=10, alpha=0.4, label="per image")
    top = max(xs) * 1.05
    if xs:
        slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
        ax.plot([0, top], [0, slope * top], "k--", lw=1, label=f"fit through 0: {1e3 / slope:.1f} GFLOP/s")
    if gemm_flops_per_s:
        ms_per_gflop = 1e3 / (gemm_flops_per_s / 1e9)
        ax.plot([0, top], [0, ms_per_gflop * top], "r:", lw=1,
                label=f"GEMM limit {gemm_flops_per_s / 1e9:.1f} GFLOP/s")
    ax.set_xlabel("analytic prefill FLOPs (ViT + projector + LLM), GFLOP")
    ax.set_ylabel("measured time to first token, ms")
    ax.set_title("FLOPs vs measured prefill time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out_dir / PLOTS[1])
    fig.savefig(paths[-1], dpi=120)
    return paths


def write_outputs(rows: list[dict[str, Any]], info: dict[str, Any], out_dir: str | Path, *, plots: bool = True,
                  log: Callable[[str], None] | None = print) -> list[Path]:
    """`results.json` (the rows), `run.json` (`info` + rows) and, when `plots` and matplotlib is
    installed, the PNG plots (without matplotlib: a message through `log`). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(rows, indent=2))
    (out / RUN_JSON).write_text(json.dumps({**info, "rows": rows}, indent=2))
    written = [out / RESULTS_JSON, out / RUN_JSON]
    if plots:
        try:
            written += write_plots(rows, out, info.get("gemm", {}).get("best_flops_per_s"))
        except ImportError:
            if log:
                log("plots skipped: matplotlib is not installed (pip install 'internvlx[bench]' or matplotlib)")
    if log:
        log("wrote " + ", ".join(str(p) for p in written))
    return written


def run_benchmark(
    preset: str | None = None,
    *,
    quick: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    out_dir: str | Path | None = None,
    threads: int | None = None,
    policies: Sequence[str] | None = None,
    warmup: int | None = None,
    repeats: int | None = None,
    decode_tokens: int | None = None,
    decode_warmup: int | None = None,
    decode_repeats: int | None = None,
    train_batch: int | None = None,
    train_warmup: int | None = None,
    train_repeats: int | None = None,
    seed: int = 0,
    plots: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run the efficiency benchmark (module docstring) and return its rows, one per
    configuration: transformers' InternVL2 first, our baseline second, then InternVL-X.

    `preset`: a key of `BENCH_PRESETS` (default `cpu` on CPU, `internvlx-2b` on CUDA); `quick`
    uses its short run sizes; the size keywords override single sizes. `threads` sets torch's
    intra-op threads (None: leave as is). With `out_dir`, writes `results.json` (the rows),
    `run.json` (machine, settings, GEMM, rows) and, when `plots` and matplotlib is installed,
    the PNG plots. `log` receives the report (None: silent). The caller's torch thread count is
    restored afterwards."""
    started = time.perf_counter()
    settings = resolve_settings(
        preset, quick=quick, device=device, dtype=dtype, policies=policies, seed=seed, warmup=warmup,
        repeats=repeats, decode_tokens=decode_tokens, decode_warmup=decode_warmup, decode_repeats=decode_repeats, train_batch=train_batch,
        train_warmup=train_warmup, train_repeats=train_repeats,
    )
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_benchmark(settings, started, out_dir, plots, progress, log)
    finally:  # the caller's thread count, not ours, once the benchmark is done
        torch.set_num_threads(previous_threads)


def _run_benchmark(settings, started: float, out_dir, plots: bool, progress: bool, log) -> list[dict[str, Any]]:
    info: dict[str, Any] = {
        "machine": machine_info(None, settings.device),
        "description": BENCH_PRESETS[settings.preset].description,
        "settings": dataclasses.asdict(settings),
    }
    if log:
        log(f"building models for preset {settings.preset} ({info['description']})")
    suite = build_suite(settings)
    try:
        info["logits_max_abs_diff"] = logits_difference(suite)
        dev, dt = torch.device(settings.device), DTYPES[settings.dtype]
        base_lengths = [r.input_ids.shape[1] for r in suite.variants[1].requests]
        shapes = gemm_shapes(suite.variants[1].config, int(statistics.median(base_lengths)))
        before = measure_gemm(shapes, dev, dt, suite.clock)
        measure_all(suite, progress=progress)
        after = measure_gemm(shapes, dev, dt, suite.clock)
    finally:
        suite.close()
    gemm = [{**a, "flops_per_s": max(a["flops_per_s"], b["flops_per_s"]),
             "flops_per_s_before": a["flops_per_s"], "flops_per_s_after": b["flops_per_s"]}
            for a, b in zip(before, after, strict=True)]
    best = max(g["flops_per_s"] for g in gemm)
    info["gemm"] = {"dtype": settings.dtype, "shapes": gemm, "best_flops_per_s": best}
    rows = summarise(suite, best)
    info["wall_s"] = time.perf_counter() - started
    info["models"] = {k: type(m).__module__ + "." + type(m).__name__ for k, m in suite.models.items()}
    if log:
        log("")
        log(report(rows, info))
    if out_dir is not None:
        write_outputs(rows, info, out_dir, plots=plots, log=log)
    return rows


# ------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `internvlx bench` and `benchmarks/efficiency.py`."""
    parser.add_argument("--preset", choices=sorted(BENCH_PRESETS), default=None,
                        help="model shapes and run sizes (default: cpu on CPU, internvlx-2b on CUDA)")
    parser.add_argument("--quick", action="store_true", help="the preset's short run (a few minutes on CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default fp32 on CPU, bf16 on CUDA (bf16 is slow on CPUs without AMX/AVX512-BF16)")
    parser.add_argument("--out", default=None, help="write results.json, run.json and the PNG plots here")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count(), help="torch intra-op threads (default: all available cores)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="InternVL-X tilings, comma list of stock,length,area")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed prefill rounds")
    parser.add_argument("--decode-tokens", type=int, default=None)
    parser.add_argument("--decode-warmup", type=int, default=None)
    parser.add_argument("--decode-repeats", type=int, default=None)
    parser.add_argument("--train-batch", type=int, default=None)
    parser.add_argument("--train-warmup", type=int, default=None)
    parser.add_argument("--train-repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    return run_benchmark(
        args.preset, quick=args.quick, device=args.device, dtype=args.dtype, out_dir=args.out,
        threads=args.threads, policies=[p for p in args.policies.split(",") if p], warmup=args.warmup,
        repeats=args.repeats, decode_tokens=args.decode_tokens, decode_warmup=args.decode_warmup,
        decode_repeats=args.decode_repeats,
        train_batch=args.train_batch, train_warmup=args.train_warmup, train_repeats=args.train_repeats,
        seed=args.seed,
        plots=not args.no_plots, progress=not args.no_progress,
    )
