"""Training on transformers' `Trainer`: stages, per-module learning rates, LoRA, resume.

A run is described by a YAML file (see `docs/training.md` and `configs/`):

```yaml
output_dir: runs/demo
model: {init: "preset:tiny", config_overrides: {...}, tokenizer: "bpe:1024", vision_init: runs/vit}
data: {meta: data/meta_train.json, max_seq_length: 1024, tiling: {policy: length}}
stage: 2                       # 1: projector; 2: projector + LLM; scratch: everything
lora: {llm: {r: 16, alpha: 32}}
optim: {lr: 2e-4, lr_projector: 1e-3, warmup_ratio: 0.03, scheduler: cosine}
train: {max_steps: 500, batch_size: 8, bf16: false, save_steps: 100}
```

`internvlx train CONFIG.yaml [--resume] [--set train.max_steps=10 ...]` runs it; `train(cfg)`
is the Python entry point. Distributed runs go through the same code under `torchrun`
(DDP, or FSDP/DeepSpeed through `train.fsdp` / `train.deepspeed`, handed to `TrainingArguments`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, get_scheduler

from . import trainstate
from .configuration import InternVLXConfig
from .errors import CheckpointError, ConfigError
from .modeling import InternVLXForConditionalGeneration
from .processing import InternVLXProcessor

logger = logging.getLogger(__name__)

MODULES = ("vision", "projector", "llm", "lvtc")
STAGES: dict[str, tuple[str, ...]] = {
    "1": ("projector", "lvtc"),  # projector only (LLM and ViT frozen), as InternVL's stage 1
    "2": ("projector", "llm", "lvtc"),  # projector + LLM, ViT frozen
    "scratch": ("vision", "projector", "llm", "lvtc"),  # from random init: everything
}
COMPLETE_MARKER = ".complete"


@dataclass
class RunConfig:
    output_dir: str
    model: dict[str, Any]
    data: dict[str, Any]
    stage: str = "2"
    trainable: list[str] | None = None
    lora: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown top-level training setting(s) {unknown}; known: {sorted(known)}")
        for key in ("output_dir", "model", "data"):
            if key not in raw:
                raise ConfigError(f"the training config needs `{key}`")
        cfg = cls(**{**raw, "stage": str(raw.get("stage", "2"))})
        if cfg.trainable is None and cfg.stage not in STAGES:
            raise ConfigError(f"stage must be one of {sorted(STAGES)} (or give `trainable`), got {cfg.stage!r}")
        bad = sorted(set(cfg.trainable or []) - set(MODULES))
        if bad:
            raise ConfigError(f"unknown trainable module(s) {bad}; known: {MODULES}")
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> RunConfig:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"training config {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of settings")
        for item in overrides or []:
            apply_override(raw, item)
        return cls.from_dict(raw)

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(self.trainable) if self.trainable is not None else STAGES[self.stage]


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.c=value` (value parsed as YAML) into a nested dict."""
    import yaml

    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


# ---------------------------------------------------------------------- model + tokenizer


def build_model_and_processor(cfg: RunConfig, texts_for_tokenizer=None):
    """From `model.init`: `preset:NAME` (random init, needs `model.tokenizer`) or a directory."""
    spec = cfg.model
    init = spec.get("init")
    if not init:
        raise ConfigError("model.init is required: 'preset:NAME' or a model directory")
    overrides = copy.deepcopy(spec.get("config_overrides") or {})
    tiling = (cfg.data.get("tiling") or {})
    if str(init).startswith("preset:"):
        tokenizer = _tokenizer(spec.get("tokenizer"), texts_for_tokenizer)
        text = overrides.setdefault("text_config", {})
        text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        overrides["image_token_id"] = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        config = InternVLXConfig.from_preset(init[len("preset:"):], **overrides)
        torch.manual_seed(int(cfg.train.get("seed", 0)))
        model = InternVLXForConditionalGeneration(config)
    else:
        if not Path(init).is_dir():
            raise ConfigError(f"model.init {init!r} is neither 'preset:NAME' nor a model directory")
        tokenizer = InternVLXProcessor.from_pretrained(init).tokenizer
        reinit = list(spec.get("reinit") or [])
        bad = sorted(set(reinit) - {"projector", "lvtc"})
        if bad:
            raise ConfigError(f"model.reinit can name 'projector' and 'lvtc', got {bad}")
        model = _load_for_training(Path(init), overrides, int(cfg.train.get("seed", 0)), tuple(reinit))
    if spec.get("vision_init"):  # a ViT from `internvlx pretrain-vision` replaces the one above
        from .vision_pretrain import load_vision_into

        load_vision_into(model.vision_model, spec["vision_init"])
    processor_settings = {k: v for k, v in tiling.items() if k in ("policy", "max_tiles", "min_tiles", "thumbnail")}
    if processor_settings:  # the saved config describes the tiling the model was trained with
        model.config.tiling = {**vars(model.config.tiling), **processor_settings}
    if "system_message" in spec:
        processor_settings["system_message"] = spec["system_message"]
    processor = InternVLXProcessor.from_config(model.config, tokenizer, **processor_settings)
    return model, processor


def _load_for_training(
    path: Path, overrides: dict[str, Any], seed: int, reinit: tuple[str, ...] = ()
) -> InternVLXForConditionalGeneration:
    """Load a model directory; when `config_overrides` asks for another projector (e.g. PVTC on
    a converted InternVL2 checkpoint, as the paper does), keep the ViT and LLM weights and start
    a freshly initialised projector. `reinit` (`model.reinit` in the run config: "projector",
    "lvtc") starts those modules afresh even when their shapes match the checkpoint."""
    from .convert import read_safetensors_dir

    saved = InternVLXConfig.from_pretrained(path)
    wanted = {**vars(saved.projector), **overrides.get("projector", {})}
    drops_lvtc = saved.lvtc.enabled and not {**vars(saved.lvtc), **overrides.get("lvtc", {})}["enabled"]
    if wanted == vars(saved.projector) and not reinit and not drops_lvtc:
        # float32 master weights even from a bf16 checkpoint (e.g. the shipped demo model);
        # `train.bf16` trains under autocast on top of them
        return InternVLXForConditionalGeneration.from_pretrained(path, dtype=torch.float32, **overrides)
    config = InternVLXConfig.from_pretrained(path)
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            setattr(config, key, {**vars(current), **value})  # a section: merged, re-validated
        elif isinstance(value, dict) and hasattr(current, "to_dict"):
            for k, v in value.items():  # a sub-config (vision_config / text_config)
                setattr(current, k, v)
        else:
            setattr(config, key, value)
    config.validate_sections()
    torch.manual_seed(seed)
    model = InternVLXForConditionalGeneration(config)
    tensors, _ = read_safetensors_dir(path)
    prefixes = ["vision_model.", "language_model."]
    if "projector" not in reinit and wanted == vars(saved.projector):
        prefixes.append("projector.")
    if "lvtc" not in reinit and config.lvtc.enabled:
        prefixes.append("lvtc.")  # LVTC modules absent from the checkpoint start at their init
    kept = {k: v for k, v in tensors.items() if k.startswith(tuple(prefixes))}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [k for k in missing if not k.startswith(("projector.", "lvtc."))]
    if missing or unexpected:
        raise ConfigError(f"{path}: cannot reuse the ViT/LLM weights: missing {missing[:8]}, unexpected {unexpected[:8]}")
    if drops_lvtc:
        logger.warning("LVTC switched off: the checkpoint's LVTC weights are not used")
    if "projector." not in prefixes:
        logger.warning("new %s projector initialised (the checkpoint had %s); train stage 1 first",
                       config.projector.type, saved.projector.type)
    return model


def _tokenizer(spec: str | None, texts):
    from .templates import get_template
    from .tokenizer import train_bpe_tokenizer

    if not spec:
        raise ConfigError("model.tokenizer is required with a preset: 'bpe:VOCAB' or a tokenizer directory")
    if spec.startswith("bpe:"):
        if texts is None:
            raise ConfigError("a 'bpe:' tokenizer is trained on the training texts, none were given")
        tok = train_bpe_tokenizer(list(texts), int(spec[4:]))
        tok.chat_template = get_template("internlm2-chat").chat_template
        return tok
    return InternVLXProcessor.from_pretrained(spec).tokenizer


def conversation_texts(meta_path: str | Path, limit: int = 20000):
    """The human/gpt strings of a dataset (for training a tokenizer), template words included."""
    from .templates import get_template

    meta_path = Path(meta_path)
    meta = json.loads(meta_path.read_text())
    tpl = get_template("internlm2-chat")
    yield tpl.system_message
    for entry in meta.values():
        path = Path(entry["annotation"])
        path = path if path.is_absolute() else meta_path.parent / path
        with open(path) as f:
            for i, line in enumerate(f):
                if i >= limit:
                    break
                for turn in json.loads(line).get("conversations", []):
                    yield turn["value"]


# ---------------------------------------------------------------------- freezing / LoRA


def module_of(name: str) -> str:
    for prefix, module in (("vision_model.", "vision"), ("projector.", "projector"),
                           ("language_model.", "llm"), ("lvtc.", "lvtc")):
        if prefix in name:
            return module
    raise ConfigError(f"parameter {name} belongs to no known module")


def set_trainable(model: torch.nn.Module, modules: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(MODULES, 0)
    for name, p in model.named_parameters():
        owner = module_of(name)
        p.requires_grad_(owner in modules)
        if p.requires_grad:
            counts[owner] += p.numel()
    return counts


_LLM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_VIT_TARGETS = ("q_proj", "k_proj", "v_proj", "projection_layer", "fc1", "fc2")


def apply_lora(model, lora: dict[str, Any], full_modules: tuple[str, ...]):
    """Wrap the model with PEFT LoRA on the LLM and/or ViT linears; other trainable modules
    (projector, LVTC, anything in `full_modules` without LoRA) are saved in full."""
    from peft import LoraConfig, get_peft_model

    parts = []
    settings = {}
    if lora.get("llm"):
        parts.append(rf"language_model\..*\.({'|'.join(_LLM_TARGETS)})")
        settings = lora["llm"]
    if lora.get("vision"):
        parts.append(rf"vision_model\..*\.({'|'.join(_VIT_TARGETS)})")
        settings = settings or lora["vision"]
    if not parts:
        raise ConfigError("lora needs `llm` and/or `vision` settings, e.g. lora: {llm: {r: 16}}")
    saved = [m for m in ("projector", "lvtc") if m in full_modules and getattr(model, m, None) is not None]
    config = LoraConfig(
        r=int(settings.get("r", 16)), lora_alpha=int(settings.get("alpha", 32)),
        lora_dropout=float(settings.get("dropout", 0.05)), target_modules="|".join(f"({p})" for p in parts),
        modules_to_save=saved or None, bias="none",
    )
    return get_peft_model(model, config)


# ---------------------------------------------------------------------- optimizer


def build_optimizer(model, optim: dict[str, Any], total_steps: int):
    """AdamW with one parameter group per module (`lr_vision`, `lr_projector`, `lr_llm`,
    `lr_lvtc` override `lr`), warm-up then cosine (or `scheduler`)."""
    base_lr = float(optim.get("lr", 1e-4))
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(module_of(name), []).append(p)
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen")
    param_groups = [
        {"params": ps, "lr": float(optim.get(f"lr_{m}", base_lr)), "name": m,
         "weight_decay": float(optim.get("weight_decay", 0.0))}
        for m, ps in groups.items()
    ]
    opt = torch.optim.AdamW(param_groups, betas=(0.9, float(optim.get("beta2", 0.999))))
    warmup = math.ceil(float(optim.get("warmup_ratio", 0.03)) * total_steps)
    sched = get_scheduler(optim.get("scheduler", "cosine"), opt, num_warmup_steps=warmup,
                          num_training_steps=total_steps)
    return opt, sched


# ---------------------------------------------------------------------- trainer


class VLTrainer(Trainer):
    """`Trainer` that also counts visual tokens, for samples/s and visual tokens/s in the logs."""

    def __init__(self, *args, image_token_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_token_id = image_token_id
        self._seen = {"samples": 0, "visual_tokens": 0, "tokens": 0}
        self._clock = time.perf_counter()

    # ---- pickle-free checkpoints (internvlx.trainstate); DeepSpeed and FSDP keep their own formats
    def _own_state_files(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _rank(self) -> int | None:
        return self.args.process_index if self.args.world_size > 1 else None

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._own_state_files():
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            trainstate.save_optimizer(self.optimizer, output_dir)
            trainstate.save_scheduler(self.lr_scheduler, output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._own_state_files():
            return super()._load_optimizer_and_scheduler(checkpoint)
        folder = Path(checkpoint)
        if not (folder / trainstate.OPTIMIZER_FILE).exists():
            pickled = [name for name in trainstate.PICKLED_FILES if (folder / name).exists()]
            if pickled:
                raise CheckpointError(
                    f"{folder} keeps its optimizer state as pickle ({', '.join(pickled)}), which internvlx does "
                    "not load; train again without --resume (or from this checkpoint as model.init)")
            raise CheckpointError(f"{folder} has no {trainstate.OPTIMIZER_FILE}: it is not a complete checkpoint")
        trainstate.load_optimizer(self.optimizer, folder)
        trainstate.load_scheduler(self.lr_scheduler, folder)

    def _save_rng_state(self, output_dir: str) -> None:
        if not self._own_state_files():
            return super()._save_rng_state(output_dir)
        trainstate.save_rng(output_dir, self._rank())

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._own_state_files():
            return super()._load_rng_state(checkpoint)
        if not (Path(checkpoint) / trainstate.rng_file(self._rank())).exists():
            # e.g. a checkpoint of another process count: the run goes on, not bit-for-bit
            logger.warning("%s has no %s: resuming with fresh random states", checkpoint,
                           trainstate.rng_file(self._rank()))
            return
        trainstate.load_rng(checkpoint, self._rank())

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is None or not self._own_state_files():
            return super()._save_scaler(output_dir)
        if self.args.should_save:
            trainstate.save_json_state(scaler.state_dict(), Path(output_dir) / trainstate.SCALER_FILE)

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if checkpoint is None or scaler is None or not self._own_state_files():
            return super()._load_scaler(checkpoint)
        if (Path(checkpoint) / trainstate.SCALER_FILE).exists():
            scaler.load_state_dict(trainstate.load_json_state(Path(checkpoint) / trainstate.SCALER_FILE))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        if self.args.should_save and (folder / "training_args.bin").exists():
            (folder / "training_args.bin").unlink()  # Trainer's pickle of the arguments; JSON instead
            trainstate.save_training_args(self.args, folder)

    def _get_train_sampler(self, train_dataset=None):
        # transformers measures lengths by loading every item (decoding every image); our
        # dataset knows them from the annotations
        from .data import length_grouped_sampler

        ds = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(ds, "lengths"):
            return length_grouped_sampler(ds, self.args.train_batch_size * self.args.gradient_accumulation_steps)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs["input_ids"]
        self._seen["samples"] += ids.shape[0]
        self._seen["visual_tokens"] += int((ids == self.image_token_id).sum())
        self._seen["tokens"] += int(inputs["attention_mask"].sum())
        inputs = {k: v for k, v in inputs.items() if k != "image_tiles"}
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        now = time.perf_counter()
        elapsed = max(now - self._clock, 1e-9)
        if "loss" in logs and self._seen["samples"]:
            logs["samples_per_s"] = round(self._seen["samples"] / elapsed, 3)
            logs["visual_tokens_per_s"] = round(self._seen["visual_tokens"] / elapsed, 1)
            logs["tokens_per_s"] = round(self._seen["tokens"] / elapsed, 1)
            self._seen = dict.fromkeys(self._seen, 0)
            self._clock = now
        super().log(logs, *args, **kwargs)


class CompleteMarker(TrainerCallback):
    """Add the processor (so every checkpoint is a loadable model directory, e.g. for `internvlx
    eval`), then mark the folder complete once everything in it is written; `--resume` only
    trusts marked checkpoints, so a run killed while saving resumes from the previous one."""

    def __init__(self, processor: InternVLXProcessor | None = None):
        self.processor = processor

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                if self.processor is not None:
                    self.processor.save_pretrained(folder)
                tmp = folder / (COMPLETE_MARKER + ".tmp")
                tmp.write_text(json.dumps({"step": state.global_step}))
                os.replace(tmp, folder / COMPLETE_MARKER)
        return control


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    found = []
    for p in Path(output_dir).glob("checkpoint-*"):
        if p.is_dir() and p.name.split("-")[-1].isdigit():
            if (p / COMPLETE_MARKER).exists():
                found.append((int(p.name.split("-")[-1]), p))
            else:
                logger.warning("ignoring incomplete checkpoint %s (no %s marker)", p, COMPLETE_MARKER)
    return max(found)[1] if found else None


def training_arguments(cfg: RunConfig, total_steps: int) -> TrainingArguments:
    t = cfg.train
    report = t.get("report_to", ["tensorboard"])
    if "tensorboard" in report:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            report = [r for r in report if r != "tensorboard"]
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        max_steps=total_steps,
        per_device_train_batch_size=int(t.get("batch_size", 4)),
        gradient_accumulation_steps=int(t.get("grad_accum", 1)),
        logging_steps=int(t.get("logging_steps", 10)),
        save_steps=int(t.get("save_steps", 500)),
        save_total_limit=t.get("save_total_limit", 2),
        save_strategy="steps",
        bf16=bool(t.get("bf16", False)),
        seed=int(t.get("seed", 0)),
        data_seed=int(t.get("seed", 0)),
        dataloader_num_workers=int(t.get("num_workers", 0)),
        remove_unused_columns=False,
        report_to=report,
        max_grad_norm=float(t.get("max_grad_norm", 1.0)),
        activation_checkpointing=bool(t.get("gradient_checkpointing", False)),
        use_cpu=bool(t.get("use_cpu", not torch.cuda.is_available())),
        disable_tqdm=bool(t.get("disable_tqdm", False)),
    )
    # Off by default: on templated data equal lengths mean equal question types, and batches of
    # one type slowed learning ~2x in our synthetic runs (docs/training.md).
    if t.get("group_by_length", False):
        kwargs["train_sampling_strategy"] = "group_by_length"
    for key in ("fsdp", "fsdp_config", "deepspeed", "ddp_backend"):
        if key in t:
            kwargs[key] = t[key]
    return TrainingArguments(**kwargs)


def train(cfg: RunConfig, resume: bool = False, callbacks: list[TrainerCallback] | None = None) -> dict[str, Any]:
    """Run one training job; returns a summary (final loss, throughput, output paths).
    `callbacks` are extra transformers `TrainerCallback`s."""
    from .data import InternVLDataset, TrainingCollator

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.train.get("num_threads"):  # e.g. 1 to run two small jobs side by side on a small CPU
        torch.set_num_threads(int(cfg.train["num_threads"]))
    meta = cfg.data.get("meta")
    if not meta:
        raise ConfigError("data.meta (an InternVL meta JSON) is required")
    resume_from = latest_complete_checkpoint(out) if resume else None
    if resume and resume_from is None:
        logger.warning("--resume: no complete checkpoint in %s, starting from scratch", out)
    texts = None
    if str(cfg.model.get("tokenizer", "")).startswith("bpe:"):
        saved = out / "tokenizer"
        if saved.exists():  # a resumed run must reuse the tokenizer of its first start
            cfg.model["tokenizer"] = str(saved)
        else:
            texts = list(conversation_texts(meta))
    model, processor = build_model_and_processor(cfg, texts)
    if texts is not None:
        processor.save_pretrained(out / "tokenizer")
    data_kwargs = {k: cfg.data[k] for k in ("max_seq_length", "truncation", "max_bad_fraction") if k in cfg.data}
    tiling = {k: v for k, v in (cfg.data.get("tiling") or {}).items() if k in ("max_visual_tokens",)}
    dataset = InternVLDataset(meta, processor, seed=int(cfg.train.get("seed", 0)), **data_kwargs, **tiling)
    counts = set_trainable(model, cfg.modules)
    if cfg.lora and str(cfg.model["init"]).startswith("preset:"):
        raise ConfigError("LoRA adapts an existing model: set model.init to a model directory")
    if cfg.lora:
        model = apply_lora(model, cfg.lora, cfg.modules)
    t = cfg.train
    per_step = int(t.get("batch_size", 4)) * int(t.get("grad_accum", 1)) * max(int(os.environ.get("WORLD_SIZE", 1)), 1)
    total = int(t["max_steps"]) if "max_steps" in t else math.ceil(len(dataset) * float(t.get("epochs", 1)) / per_step)
    args = training_arguments(cfg, total)
    optimizers = build_optimizer(model, cfg.optim, total)
    pad = processor.tokenizer.pad_token_id
    trainer = VLTrainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=TrainingCollator(pad),
        optimizers=optimizers, callbacks=[CompleteMarker(processor), *(callbacks or [])],
        image_token_id=processor.image_token_id,
    )
    logger.info("trainable parameters per module: %s", counts)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    final = out / "final"
    if trainer.is_world_process_zero():
        save_final(trainer.model, processor, final, bool(cfg.lora))
        report = dataset.report() if hasattr(dataset, "report") else {}
        summary = {
            "final_dir": str(final), "steps": result.global_step, "train_loss": result.training_loss,
            "train_samples_per_second": result.metrics.get("train_samples_per_second"),
            "trainable_parameters": counts, "data": report,
            "log_history": trainer.state.log_history,
        }
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary
    return {"final_dir": str(final)}


def save_final(model, processor: InternVLXProcessor, directory: Path, lora: bool) -> None:
    """Save the trained model (or, with LoRA, the PEFT adapter) plus the processor."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def merge_lora(adapter_dir: str | Path, out_dir: str | Path, base_dir: str | Path | None = None) -> Path:
    """Fold a PEFT adapter into its base model and write a plain model directory."""
    from peft import PeftConfig, PeftModel

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    peft_cfg = PeftConfig.from_pretrained(str(adapter_dir))
    base = Path(base_dir or peft_cfg.base_model_name_or_path or "")
    if not base.is_dir():
        raise ConfigError(f"base model directory {base} not found; pass it with --base")
    model = InternVLXForConditionalGeneration.from_pretrained(base)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    source = adapter_dir if (adapter_dir / "processor_config.json").exists() else base
    InternVLXProcessor.from_pretrained(source).save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":  # `torchrun --nproc_per_node N -m internvlx.train CONFIG.yaml ...`
    import sys

    from .cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
