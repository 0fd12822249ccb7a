"""Pretrain the vision tower on dense synthetic labels (what a pretrained InternViT gives for free).

InternVL never trains its ViT from nothing through the LLM: InternViT arrives contrastively
pretrained. The demo model has no such checkpoint to start from, and a ViT trained only
through the language-model loss learns colours but not shapes (``benchmarks/shape_probe.py``:
23 % shape, 100 % colour after 18,000 steps). This module is the missing first stage: it
trains transformers' ``InternVLVisionModel`` on the synthetic scenes' *own specification*,
one label per patch:

* **shape** of the object covering the patch (``background``, ``text`` or one of
  :data:`internvlx.synth.SHAPES`),
* **colour** of that object or word (``background`` or one of :data:`internvlx.synth.COLOURS`),
* **word** written there (one of :data:`internvlx.synth.WORDS`; only on text patches),

with one linear head per label on the last layer's patch tokens -- the tokens the projector
reads. A patch belongs to the object or word covering the most of its pixels when that is at
least ``min_cover`` of the patch, else to the background. Scenes come from
:func:`internvlx.synth.generate_sample` (the same builders, canvases and sizes as
``internvlx data synth``), rendered on the fly, and go through the processor's own
single-tile preprocessing, so the ViT sees exactly the pixels it sees in the VLM.

    internvlx pretrain-vision --preset demo --out runs/demo-vision --threads 2

writes ``vision.safetensors`` + ``vision_config.json`` (load them with ``model.vision_init``
in a training config), ``heads.safetensors`` and ``metrics.json`` (held-out per-patch
accuracies every ``eval_every`` steps).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import AutoModel, InternVLVisionConfig

from .errors import CheckpointError, ConfigError
from .images import preprocess_image
from .synth import (
    COLOURS,
    SHAPES,
    WORDS,
    Scene,
    SynthOptions,
    _draw_object,
    _draw_text,
    format_qtype_weights,
    generate_sample,
    render_scene,
)

#: Per-patch classes of each head; index 0 is always "background" (the word head has no
#: background class: non-text patches are ignored there).
SHAPE_CLASSES = ("background", "text", *SHAPES)
COLOUR_CLASSES = ("background", *COLOURS)
WORD_CLASSES = WORDS
IGNORE = -100
#: Instances (objects + the word) a scene may hold, plus one for the background.
MAX_INSTANCES = 16
VISION_WEIGHTS = "vision.safetensors"
VISION_CONFIG = "vision_config.json"
HEADS_WEIGHTS = "heads.safetensors"
_TEXT_LABEL = 255  # label-map value of word ink (objects are 1..n in drawing order)


def label_map(scene: Scene) -> Image.Image:
    """An ``L``-mode image of the scene's size: 0 background, ``k + 1`` where object ``k`` is
    drawn, 255 on the word's ink -- drawn in :func:`internvlx.synth.render_scene`'s order, with
    the same primitives, so every label sits on exactly the pixels it names."""
    image = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(image)
    for k, obj in enumerate(scene.objects):
        _draw_object(draw, obj, fill=k + 1)
    if scene.text is not None:
        ink = Image.new("L", image.size, 0)  # text is antialiased: its ink is where coverage >= 1/2
        _draw_text(ImageDraw.Draw(ink), scene.text, 255)
        image.paste(_TEXT_LABEL, mask=ink.point(lambda v: 255 if v >= 128 else 0))
    return image


def patch_targets(scene: Scene, tile_size: int, patch_size: int, min_cover: float = 0.1) -> torch.Tensor:
    """``[4, grid * grid]`` int64 targets of the scene's single tile, patches row-major as the
    ViT orders them: shape class, colour class, word (``IGNORE`` off text) and instance (0 on
    background, ``k + 1`` on object ``k``, ``len(objects) + 1`` on the word). The label map is
    resized to the tile the way the processor resizes the image for one tile (the whole canvas
    to ``tile_size`` square)."""
    if tile_size % patch_size:
        raise ConfigError(f"tile_size {tile_size} is not a multiple of patch_size {patch_size}")
    if len(scene.objects) + 1 >= MAX_INSTANCES:
        raise ConfigError(f"a scene with {len(scene.objects)} objects exceeds MAX_INSTANCES={MAX_INSTANCES}")
    grid = tile_size // patch_size
    labels = np.asarray(label_map(scene).resize((tile_size, tile_size), Image.Resampling.NEAREST))
    patches = labels.reshape(grid, patch_size, grid, patch_size).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    out = torch.zeros((4, grid * grid), dtype=torch.long)
    out[2] = IGNORE
    need = min_cover * patch_size * patch_size
    for p, pixels in enumerate(patches):
        values, counts = np.unique(pixels[pixels > 0], return_counts=True)
        if not len(values) or counts.max() < need:
            continue
        label = int(values[counts.argmax()])
        if label == _TEXT_LABEL:
            text = scene.text
            out[:, p] = torch.tensor([SHAPE_CLASSES.index("text"), COLOUR_CLASSES.index(text.colour),
                                      WORD_CLASSES.index(text.word), len(scene.objects) + 1])
        else:
            obj = scene.objects[label - 1]
            out[:, p] = torch.tensor([SHAPE_CLASSES.index(obj.shape), COLOUR_CLASSES.index(obj.colour),
                                      IGNORE, label])
    return out


@dataclass
class VisionPretrainConfig:
    """Options of :func:`pretrain_vision` (the CLI flags of ``internvlx pretrain-vision``)."""

    out: str
    preset: str = "demo"
    init: str | None = None  # a model directory or a pretrain-vision --out whose ViT is trained on (not a fresh one)
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    resolution: str = "easy"
    data_seed: int = 0
    seed: int = 0
    min_cover: float = 0.1
    eval_every: int = 500
    eval_images: int = 512
    num_threads: int | None = None
    position_init: str = "sincos"  # "sincos" (fixed 2-D codes as the start) or "zeros" (transformers' init)
    # shares of the single-image scene kinds of the TRAINING scenes (as `internvlx data synth
    # --qtype-weights`, e.g. text=4 for more words); the held-out scenes keep the default mix,
    # so runs with different weights are scored on the same scenes
    qtype_weights: list[float] | None = None

    def validate(self) -> VisionPretrainConfig:
        for name in ("steps", "batch_size", "eval_every", "eval_images"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 <= self.min_cover <= 1 and self.warmup_steps >= 0 and self.weight_decay >= 0):
            raise ConfigError("need lr > 0, 0 <= min_cover <= 1, warmup_steps >= 0 and weight_decay >= 0")
        if self.position_init not in ("sincos", "zeros"):
            raise ConfigError(f"position_init must be 'sincos' or 'zeros', got {self.position_init!r}")
        self.synth_options().validate()
        return self

    def synth_options(self, held_out: bool = False) -> SynthOptions:
        weights = None if held_out or self.qtype_weights is None else tuple(float(w) for w in self.qtype_weights)
        return SynthOptions(resolution=self.resolution, seed=self.data_seed, qtype_weights=weights)


class SceneStream:
    """The single-tile pixels and patch targets of every scene in the synthetic samples
    ``0, 1, 2, ...`` of ``split`` (text-only samples have none; two-image samples give two)."""

    def __init__(self, split: str, options: SynthOptions, tile_size: int, patch_size: int, min_cover: float):
        self.split, self.options = split, options.validate()
        self.tile_size, self.patch_size, self.min_cover = tile_size, patch_size, min_cover
        self.index = 0
        self._pending: list[Scene] = []

    def next_scene(self) -> Scene:
        while not self._pending:
            self._pending = list(generate_sample(self.index, self.split, self.options).scenes)
            self.index += 1
        return self._pending.pop(0)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, targets = [], []
        for _ in range(n):
            scene = self.next_scene()
            tile, _ = preprocess_image(render_scene(scene), tile_size=self.tile_size, min_tiles=1, max_tiles=1,
                                       policy="stock", thumbnail=False)
            pixels.append(tile)
            targets.append(patch_targets(scene, self.tile_size, self.patch_size, self.min_cover))
        return torch.cat(pixels), torch.stack(targets)


class PatchHeads(torch.nn.Module):
    """One linear classifier per label on the ViT's patch tokens."""

    def __init__(self, hidden: int):
        super().__init__()
        self.shape = torch.nn.Linear(hidden, len(SHAPE_CLASSES))
        self.colour = torch.nn.Linear(hidden, len(COLOUR_CLASSES))
        self.word = torch.nn.Linear(hidden, len(WORD_CLASSES))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.shape(tokens), self.colour(tokens), self.word(tokens)


def _pool_instances(tokens: torch.Tensor, targets: torch.Tensor):
    """Mean patch token of every object and word instance, ``[B, MAX_INSTANCES, H]``, and each
    instance's shape and word targets (``IGNORE`` where the instance is absent)."""
    inst = torch.nn.functional.one_hot(targets[:, 3], MAX_INSTANCES)[..., 1:].to(tokens.dtype)  # [B, P, K]
    counts = inst.sum(1)  # [B, K]
    pooled = torch.einsum("bpk,bph->bkh", inst, tokens) / counts.clamp(min=1).unsqueeze(-1)
    present = counts > 0
    # every patch of an instance carries the same shape/word target: read it from the patches
    first = inst.argmax(1)  # [B, K] index of one of the instance's patches
    shape = torch.gather(targets[:, 0], 1, first).masked_fill(~present, IGNORE)
    word = torch.gather(targets[:, 2], 1, first).masked_fill(~present, IGNORE)
    return pooled, shape, word


def _losses(vision, heads, pixels, targets):
    """Per-patch shape/colour/word cross-entropies plus, on each instance's mean patch token,
    its shape and word -- the terms that a patch cannot answer from its own pixels."""
    tokens = vision(pixel_values=pixels).last_hidden_state[:, 1:]  # drop CLS, as the projector does
    logits = heads(tokens)
    pooled, inst_shape, inst_word = _pool_instances(tokens, targets)
    shape_i, _, word_i = heads(pooled)
    pairs = [(logits[0], targets[:, 0]), (logits[1], targets[:, 1]), (logits[2], targets[:, 2]),
             (shape_i, inst_shape), (word_i, inst_word)]
    losses = []
    for lg, t in pairs:
        if (t != IGNORE).any():
            losses.append(torch.nn.functional.cross_entropy(lg.flatten(0, 1), t.flatten(), ignore_index=IGNORE))
        else:
            losses.append(lg.sum() * 0.0)
    return (logits, (shape_i, inst_shape), (word_i, inst_word)), losses


@torch.no_grad()
def evaluate_patches(vision, heads, pixels: torch.Tensor, targets: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """Held-out accuracies: per patch, shape and colour on object patches, foreground vs
    background on all patches, word on text patches; per instance (mean patch token), the
    shape of each object and the word."""
    was_training = vision.training
    vision.eval()
    hits: dict[str, list[torch.Tensor]] = {k: [] for k in _METRICS}
    for i in range(0, len(pixels), batch):
        y = targets[i:i + batch]
        (patch, (shape_i, inst_shape), (word_i, inst_word)), _ = _losses(vision, heads, pixels[i:i + batch], y)
        pred = [lg.argmax(-1) for lg in patch]
        obj, text = y[:, 0] > 1, y[:, 2] != IGNORE
        hits["shape_on_objects"].append((pred[0] == y[:, 0])[obj])
        hits["colour_on_objects"].append((pred[1] == y[:, 1])[obj])
        hits["foreground"].append(((pred[0] > 0) == (y[:, 0] > 0)).flatten())
        hits["word_on_text"].append((pred[2] == y[:, 2])[text])
        is_obj = (inst_shape != IGNORE) & (inst_word == IGNORE)
        hits["object_shape"].append((shape_i.argmax(-1) == inst_shape)[is_obj])
        hits["word"].append((word_i.argmax(-1) == inst_word)[inst_word != IGNORE])
    vision.train(was_training)
    return {k: float(torch.cat(v).float().mean()) if sum(len(x) for x in v) else float("nan")
            for k, v in hits.items()}


_METRICS = ("shape_on_objects", "colour_on_objects", "foreground", "word_on_text", "object_shape", "word")


def _schedule(step: int, cfg: VisionPretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pretrain_vision(cfg: VisionPretrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train a fresh ViT of the preset's ``vision_config`` (or, with ``init``, a model's own ViT)
    on patch labels; returns the metrics (also written to ``out/metrics.json``)."""
    from .configuration import InternVLXConfig

    cfg.validate()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(cfg.seed)
    init = Path(cfg.init) if cfg.init else None
    resume = init is not None and (init / VISION_CONFIG).is_file()  # an earlier pretrain-vision --out
    if init is not None and not resume:  # continue a model's ViT (its weights and config) instead of a fresh one
        from .modeling import InternVLXForConditionalGeneration

        if not (init / "config.json").is_file():
            raise ConfigError(f"--init {cfg.init!r} is neither a model directory (no config.json) nor a "
                              f"`internvlx pretrain-vision` --out directory (no {VISION_CONFIG})")
        model = InternVLXForConditionalGeneration.from_pretrained(cfg.init, dtype=torch.float32)
        config, vision = model.config, model.vision_model
        del model
    else:
        config = InternVLXConfig.from_preset(cfg.preset)
        vcfg = InternVLVisionConfig.from_dict(config.vision_config.to_dict())
        vcfg.dtype = "float32"
        vision = AutoModel.from_config(vcfg).float()
        if resume:  # its ViT (checked against the preset's) and its heads
            load_vision_into(vision, init)
        elif cfg.position_init == "sincos":
            init_sincos_positions(vision)
    vcfg = vision.config
    heads = PatchHeads(vcfg.hidden_size)
    if resume:
        _load_heads(heads, init / HEADS_WEIGHTS)
    tile, patch = config.tile_size, vcfg.patch_size[0] if isinstance(vcfg.patch_size, (list, tuple)) else vcfg.patch_size
    train = SceneStream("train", cfg.synth_options(), tile, patch, cfg.min_cover)
    held_x, held_y = SceneStream("test", cfg.synth_options(held_out=True), tile, patch,
                                 cfg.min_cover).batch(cfg.eval_images)
    params = [*vision.parameters(), *heads.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pretrain-vision", disable=not progress)
    vision.train()
    for step in bar:
        if step % cfg.eval_every == 0:
            history.append({"step": step, **evaluate_patches(vision, heads, held_x, held_y)})
            bar.set_postfix(shape=f"{history[-1]['object_shape']:.3f}")
        pixels, targets = train.batch(cfg.batch_size)
        _, losses = _losses(vision, heads, pixels, targets)
        loss = sum(losses)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    history.append({"step": cfg.steps, **evaluate_patches(vision, heads, held_x, held_y)})
    metrics = {"config": asdict(cfg), "elapsed_s": round(time.perf_counter() - start, 1),
               "train_scenes_seen": cfg.steps * cfg.batch_size, "history": history, "final": history[-1]}
    save_vision(vision, out)
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(out / HEADS_WEIGHTS))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


#: VisionPretrainConfig fields (all but ``out``) and the `internvlx pretrain-vision` flags that set them.
FLAGS = {"preset": "--preset", "init": "--init", "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr",
         "warmup_steps": "--warmup-steps", "resolution": "--resolution", "data_seed": "--data-seed",
         "seed": "--seed", "eval_every": "--eval-every", "eval_images": "--eval-images", "num_threads": "--threads",
         "weight_decay": "--weight-decay", "min_cover": "--min-cover", "position_init": "--position-init",
         "qtype_weights": "--qtype-weights"}


def pretrain_command(directory: str | Path) -> str:
    """The ``internvlx pretrain-vision`` call that made ``directory``, from its metrics.json
    (flags left at their defaults are left out)."""
    path = Path(directory) / "metrics.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {directory} was not written by `internvlx pretrain-vision`")
    used = json.loads(path.read_text())["config"]
    defaults = asdict(VisionPretrainConfig(out=""))

    def value(name: str, v: Any) -> str:
        if name == "qtype_weights":
            return format_qtype_weights(v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    flags = "".join(f" {flag} {value(name, used[name])}"
                    for name, flag in FLAGS.items() if used.get(name, defaults[name]) != defaults[name])
    return f"internvlx pretrain-vision --out {directory}{flags}"


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (MAE's), ``[grid * grid, dim]``, patches row-major:
    the first half of the channels encodes the row, the second half the column."""
    if dim % 4:
        raise ConfigError(f"sine-cosine positions need a hidden size divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    angles = pos[:, None] * freqs[None, :]  # [grid, dim / 4]
    codes = torch.cat([angles.sin(), angles.cos()], 1)  # [grid, dim / 2]
    rows = codes[:, None, :].expand(grid, grid, dim // 2)
    cols = codes[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], -1).reshape(grid * grid, dim).float()


def init_sincos_positions(vision: torch.nn.Module) -> None:
    """Start the ViT's learned absolute positions at :func:`sincos_positions` (CLS at zero)
    instead of transformers' all-zero init, under which no patch knows where it is and
    shapes, which span several patches, are learnt far more slowly."""
    table = vision.embeddings.position_embeddings  # [1, 1 + grid * grid, H]
    grid = math.isqrt(table.shape[1] - 1)
    if grid * grid != table.shape[1] - 1:
        raise ConfigError(f"position table of {table.shape[1] - 1} patches is not a square grid")
    with torch.no_grad():
        table[0, 0].zero_()
        table[0, 1:] = sincos_positions(grid, table.shape[-1]).to(table.dtype)


def save_vision(vision: torch.nn.Module, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in vision.state_dict().items()},
              str(directory / VISION_WEIGHTS))
    (directory / VISION_CONFIG).write_text(json.dumps(vision.config.to_dict(), indent=2))


def load_vision_into(vision: torch.nn.Module, directory: str | Path) -> None:
    """Copy a :func:`pretrain_vision` checkpoint into ``vision`` (a model's ``vision_model``);
    the saved ViT config must match the model's in every architectural field."""
    directory = Path(directory)
    weights, conf = directory / VISION_WEIGHTS, directory / VISION_CONFIG
    for path in (weights, conf):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: point model.vision_init at a `internvlx pretrain-vision` --out directory")
    saved = json.loads(conf.read_text())
    mine = vision.config.to_dict()
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
            "image_size", "norm_type", "use_qk_norm", "attention_bias", "use_absolute_position_embeddings")
    diff = {k: (saved.get(k), mine.get(k)) for k in keys if _norm(saved.get(k)) != _norm(mine.get(k))}
    if diff:
        raise ConfigError(f"{directory} holds a different ViT than this model's (saved, model): {diff}; "
                          "pretrain one for this preset (`internvlx pretrain-vision --preset ...`)")
    _copy_checked(vision, weights)


def _load_heads(heads: PatchHeads, path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: --init needs the heads written beside the ViT by pretrain-vision")
    _copy_checked(heads, path)


def _copy_checked(module: torch.nn.Module, path: Path) -> None:
    """Copy the safetensors file ``path`` into ``module``: every tensor present, none extra, each
    of the module's shape (else a :class:`CheckpointError` naming the first offenders)."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on truncated/corrupt files
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the model's is {tuple(own[k].shape)}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
