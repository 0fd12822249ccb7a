"""Package a trained run as the shipped demo model (`models/internvlx-demo/`).

    python benchmarks/package_demo_model.py --config configs/demo.yaml \
        --eval eval_results/demo/summary.json --data data/synth-easy-mt --out models/internvlx-demo \
        --note benchmarks/notes/demo_model_card_note.md

Casts the weights to bfloat16, saves model + tokenizer + processor, copies a handful of
held-out synthetic scenes with questions for `make demo`, and writes the model card from the
training summary and the evaluation summary (nothing in the card is typed by hand).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import torch

from internvlx import InternVLXForConditionalGeneration, InternVLXProcessor
from internvlx.jsonl import iter_jsonl

DEMO_QTYPES = ("colour", "shape", "count", "position", "text")


def pick_demo_images(data: Path, out: Path, per_type: int = 1) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    picked: dict[str, int] = {}
    names = []
    for _, rec in iter_jsonl(data / "test.jsonl"):
        qtype = rec.get("qtype")
        if qtype not in DEMO_QTYPES or picked.get(qtype, 0) >= per_type or not isinstance(rec.get("image"), str):
            continue
        picked[qtype] = picked.get(qtype, 0) + 1
        name = f"{len(names) + 1:02d}_{qtype}"
        shutil.copyfile(data / rec["image"], out / f"{name}.png")
        questions = [t["value"].replace("<image>\n", "") for t in rec["conversations"] if t["from"] == "human"]
        answers = [t["value"] for t in rec["conversations"] if t["from"] == "gpt"]
        (out / f"{name}.txt").write_text("\n".join(questions) + "\n")
        (out / f"{name}.answers").write_text("\n".join(answers) + "\n")
        names.append(name)
    return names


#: `internvlx data synth` options recorded in stats.json, with the CLI defaults (left out when equal).
SYNTH_FLAGS = {"caption_fraction": 0.15, "text_only_fraction": 0.05, "multi_image_fraction": 0.05,
               "multi_turn_fraction": 0.2, "max_follow_ups": 2}


def synth_command(data: Path) -> str:
    """The `internvlx data synth` call that regenerates `data`, from its own stats.json."""
    stats = json.loads((data / "stats.json").read_text())
    n = stats["train"]["n"] + stats["test"]["n"]
    options = stats.get("options", {})
    extra = "".join(f" --{name.replace('_', '-')} {options[name]:g}" for name, default in SYNTH_FLAGS.items()
                    if name in options and options[name] != default)
    return (f"internvlx data synth --out {data} --n {n} --seed {stats['seed']} "
            f"--test-fraction {stats['test_fraction']:g} --resolution {stats['resolution']}{extra}")


def precision_text(config_path: Path) -> str:
    """How the run computed (from its config): "bf16 autocast, one thread" / "float32, 2 threads"."""
    import yaml

    train = (yaml.safe_load(config_path.read_text()) or {}).get("train", {})
    threads = train.get("num_threads")
    threads_text = "all threads" if not threads else ("one thread" if threads == 1 else f"{threads} threads")
    return f"{'bf16 autocast with float32 master weights' if train.get('bf16') else 'float32'}, {threads_text}"


def tiling_text(tiling) -> str:
    if tiling.max_tiles == 1:
        return f"RVTC `{tiling.policy}` capped at one tile per image"
    return f"RVTC `{tiling.policy}`, up to {tiling.max_tiles} tiles{' + thumbnail' if tiling.thumbnail else ''}"


def stage_line(config_path: Path, summary: dict) -> str:
    history = summary.get("log_history", [])
    losses = [h["loss"] for h in history if "loss" in h]
    runtime = next((h["train_runtime"] for h in history if "train_runtime" in h), float("nan"))
    return (f"* `{config_path}`: {summary.get('steps')} steps x {summary.get('batch_size', 16)}, loss "
            f"{losses[0] if losses else float('nan'):.2f} → {losses[-1] if losses else float('nan'):.2f} "
            f"(mean {summary.get('train_loss', float('nan')):.3f}), {summary.get('train_samples_per_second')} "
            f"samples/s, {runtime / 60:.0f} min")


def model_card(stages: list[tuple[Path, dict]], evaluation: dict, size_bytes: int, n_params: int, config,
               data: Path, run: Path, limit: int | None = None, note: Path | None = None) -> str:
    rows = "\n".join(
        f"| {q} | {v['count']} | {v['score']:.3f} |"
        for q, v in sorted(evaluation.get("breakdown", {}).get("qtype", {}).items())
    )
    train_cmds = "\n".join(f"internvlx train {c}" for c, _ in stages)
    stage_lines = "\n".join(stage_line(c, s) for c, s in stages)
    configs = "\n\n".join(f"`{c}`:\n\n```yaml\n{c.read_text().strip()}\n```" for c, _ in stages)
    total_steps = sum(s.get("steps") or 0 for _, s in stages)
    return f"""# internvlx-demo

A small InternVL-X model (PVTC projector + LVTC + RVTC length tiling) trained **from random
initialisation** with this repository's trainer on its synthetic visual-QA data. It exists to
show the pipeline working end to end offline; it knows nothing but the synthetic scenes.

* Parameters: {n_params:,} ({size_bytes / 2**20:.1f} MiB of bfloat16 safetensors)
* Architecture: ViT {config.vision_config.num_hidden_layers}x{config.vision_config.hidden_size} on
  {config.tile_size}-px tiles → PVTC (r = {config.projector.downsample_ratio},
  {config.tokens_per_tile} tokens per tile) → Llama-style LLM
  {config.text_config.num_hidden_layers}x{config.text_config.hidden_size} with LVTC (expand at layer
  {config.lvtc_expand_layer}, stride {config.lvtc.stride}: {config.input_tokens_per_tile} tokens per tile in the shallow layers);
  tiling: {tiling_text(config.tiling)}.
* Tokenizer: byte-level BPE ({config.text_config.vocab_size} tokens) trained on the training conversations.

## How it was trained

```bash
{synth_command(data)}
{train_cmds}
internvlx eval {run}/final --task synth --data {data}/test.jsonl{f' --limit {limit}' if limit else ''} --batch-size 16 --out eval_results/demo
python benchmarks/package_demo_model.py --config {' '.join(str(c) for c, _ in stages)} --eval eval_results/demo/summary.json --data {data}{f' --note {note}' if note else ''}
```

{stage_lines}

on {platform.processor() or platform.machine()} (2 CPU cores, {precision_text(stages[-1][0])}; another job
shared the machine while it ran).

## Held-out accuracy (synthetic test split, exact match)

Overall: **{evaluation.get('score', float('nan')):.3f}** over {evaluation.get('count')} samples;
{evaluation.get('visual_tokens', {}).get('llm_input_mean', float('nan')):.1f} visual tokens at the LLM input per
sample on average ({evaluation.get('visual_tokens', {}).get('mean_per_layer', float('nan')):.1f} averaged over layers).

| question type | samples | accuracy |
| --- | ---: | ---: |
{rows}

Limitations: trained on {total_steps} x {stages[-1][1].get('batch_size', 16)} synthetic samples only; answers about real photos
are meaningless. Retraining with the commands above reproduces it up to run-to-run noise.

## Training configs

{configs}
"""


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, nargs="+", default=[Path("configs/demo.yaml")],
                    help="the training configs, in order; the model is the last one's output_dir/final")
    ap.add_argument("--eval", type=Path, default=Path("eval_results/demo/summary.json"))
    ap.add_argument("--data", type=Path, default=Path("data/synth-easy-mt"))
    ap.add_argument("--out", type=Path, default=Path("models/internvlx-demo"))
    ap.add_argument("--note", type=Path, default=None,
                    help="markdown appended to the model card (the interpretation of the numbers)")
    args = ap.parse_args()
    runs = [Path(yaml.safe_load(c.read_text())["output_dir"]) for c in args.config]
    stages = [(c, json.loads((r / "train_summary.json").read_text())) for c, r in zip(args.config, runs, strict=True)]
    run = runs[-1]
    model = InternVLXForConditionalGeneration.from_pretrained(run / "final").to(torch.bfloat16)
    processor = InternVLXProcessor.from_pretrained(run / "final")
    settings = processor.settings  # the tiling it was trained with, also in the model config
    model.config.tiling = {**vars(model.config.tiling), "policy": settings.policy,
                           "max_tiles": settings.max_tiles, "min_tiles": settings.min_tiles,
                           "thumbnail": settings.thumbnail}
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    pick_demo_images(args.data, args.out / "demo_images")
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    evaluation = json.loads(args.eval.read_text())
    n_test = sum(1 for _ in iter_jsonl(args.data / "test.jsonl"))
    limit = evaluation.get("count") if evaluation.get("count", n_test) < n_test else None
    card = model_card(stages, evaluation, size, sum(p.numel() for p in model.parameters()), model.config,
                      args.data, run, limit, args.note)
    if args.note is not None:
        card += "\n" + args.note.read_text().strip() + "\n"
    (args.out / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
