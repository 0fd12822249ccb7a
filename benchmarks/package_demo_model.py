"""Package a trained run as the shipped demo model (`models/internvlx-demo/`).

    python benchmarks/package_demo_model.py --run runs/demo --eval eval_results/demo/summary.json \
        --data data/synth-easy --out models/internvlx-demo --note benchmarks/notes/demo_model_card_note.md

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


def synth_command(data: Path) -> str:
    """The `internvlx data synth` call that regenerates `data`, from its own stats.json."""
    stats = json.loads((data / "stats.json").read_text())
    n = stats["train"]["n"] + stats["test"]["n"]
    return (f"internvlx data synth --out {data} --n {n} --seed {stats['seed']} "
            f"--test-fraction {stats['test_fraction']:g} --resolution {stats['resolution']}")


def tiling_text(tiling) -> str:
    if tiling.max_tiles == 1:
        return f"RVTC `{tiling.policy}` capped at one tile per image"
    return f"RVTC `{tiling.policy}`, up to {tiling.max_tiles} tiles{' + thumbnail' if tiling.thumbnail else ''}"


def model_card(run: Path, summary: dict, evaluation: dict, size_bytes: int, n_params: int, config,
               data: Path, limit: int | None = None) -> str:
    cmd = json.loads((run / "command.json").read_text()) if (run / "command.json").exists() else None
    rows = "\n".join(
        f"| {q} | {v['count']} | {v['score']:.3f} |"
        for q, v in sorted(evaluation.get("breakdown", {}).get("qtype", {}).items())
    )
    losses = [h for h in summary.get("log_history", []) if "loss" in h]
    runtime = next((h.get("train_runtime") for h in summary.get("log_history", []) if "train_runtime" in h), None)
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
internvlx train configs/demo.yaml
internvlx eval runs/demo/final --task synth --data {data}/test.jsonl{f' --limit {limit}' if limit else ''} --batch-size 16 --out eval_results/demo
python benchmarks/package_demo_model.py --run runs/demo --eval eval_results/demo/summary.json --data {data} --note NOTE.md
```

Training: {summary.get('steps')} steps, final logged loss {losses[-1]['loss'] if losses else 'n/a'},
mean training loss {summary.get('train_loss'):.3f}, {summary.get('train_samples_per_second')} samples/s,
{runtime} s wall time on {platform.processor() or platform.machine()} (2 CPU cores, float32,
shared with other jobs while it ran).{f' Recorded command: {cmd}.' if cmd else ''}

## Held-out accuracy (synthetic test split, exact match)

Overall: **{evaluation.get('score', float('nan')):.3f}** over {evaluation.get('count')} samples;
{evaluation.get('visual_tokens', {}).get('llm_input_mean', float('nan')):.1f} visual tokens at the LLM input per
sample on average ({evaluation.get('visual_tokens', {}).get('mean_per_layer', float('nan')):.1f} averaged over layers).

| question type | samples | accuracy |
| --- | ---: | ---: |
{rows}

Limitations: trained on {summary.get('steps')} x {summary.get('batch_size', 16)} synthetic samples only; answers about real photos
are meaningless. Retraining with the commands above reproduces it up to run-to-run noise.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--eval", type=Path, default=Path("eval_results/demo/summary.json"))
    ap.add_argument("--data", type=Path, default=Path("data/synth-easy"))
    ap.add_argument("--out", type=Path, default=Path("models/internvlx-demo"))
    ap.add_argument("--note", type=Path, default=None,
                    help="markdown appended to the model card (the interpretation of the numbers)")
    args = ap.parse_args()
    model = InternVLXForConditionalGeneration.from_pretrained(args.run / "final").to(torch.bfloat16)
    processor = InternVLXProcessor.from_pretrained(args.run / "final")
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
    summary = json.loads((args.run / "train_summary.json").read_text())
    evaluation = json.loads(args.eval.read_text())
    n_test = sum(1 for _ in iter_jsonl(args.data / "test.jsonl"))
    limit = evaluation.get("count") if evaluation.get("count", n_test) < n_test else None
    card = model_card(args.run, summary, evaluation, size, sum(p.numel() for p in model.parameters()), model.config,
                      args.data, limit)
    if args.note is not None:
        card += "\n" + args.note.read_text().strip() + "\n"
    (args.out / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
