"""Package a trained run as the shipped demo model (`models/internvlx-demo/`).

    python benchmarks/package_demo_model.py --config configs/demo-stage4.yaml \
        --history models/internvlx-demo --eval eval_results/demo/summary.json \
        --data data/synth-easy-mt --out models/internvlx-demo \
        --note benchmarks/notes/demo_model_card_note.md

Casts the weights to bfloat16, saves model + tokenizer + processor, copies a handful of
held-out synthetic scenes with questions for `make demo`, and writes the model card from the
training summaries and the evaluation summary (nothing in the card is typed by hand).

Every stage that made the model is recorded in the model directory's `training_stages.json`
(config path and text, data command, steps, losses, speed, precision). `--config` names the
stages trained here (their `output_dir/train_summary.json` must exist); `--history` is a model
directory whose `training_stages.json` lists the stages before them (e.g. the model the first
`--config` started from), so a model continued in a later session keeps its whole recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from internvlx import InternVLXForConditionalGeneration, InternVLXProcessor
from internvlx.jsonl import iter_jsonl
from internvlx.synth import SynthOptions, format_qtype_weights
from internvlx.vision_pretrain import pretrain_command

DEMO_QTYPES = ("colour", "shape", "count", "position", "text")
STAGES_JSON = "training_stages.json"


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


#: `internvlx data synth` options recorded in stats.json and their defaults (left out when equal);
#: resolution and seed are always written.
SYNTH_FLAGS = {k: v for k, v in asdict(SynthOptions()).items() if k not in ("resolution", "seed")}


def _flag_value(name: str, value: Any) -> str:
    if name == "qtype_weights":  # one weight per question type -> "colour=1,shape=4,..."
        return format_qtype_weights(value)
    return format(value, "g")


def synth_command(data: Path) -> str:
    """The `internvlx data synth` call that regenerates `data`, from its own stats.json."""
    stats = json.loads((data / "stats.json").read_text())
    n = stats["train"]["n"] + stats["test"]["n"]
    options = stats.get("options", {})
    extra = "".join(f" --{name.replace('_', '-')} {_flag_value(name, options[name])}"
                    for name, default in SYNTH_FLAGS.items() if name in options and options[name] != default)
    return (f"internvlx data synth --out {data} --n {n} --seed {stats['seed']} "
            f"--test-fraction {stats['test_fraction']:g} --resolution {stats['resolution']}{extra}")


def data_commands(meta: Path) -> str:
    """The `internvlx data synth` calls (one line each) that regenerate every data set of a train
    config's meta file, with paths as seen from the working directory."""
    from internvlx.data import read_meta

    roots = [Path(os.path.relpath(e.root.resolve())) for e in read_meta(meta)]
    return "\n".join(synth_command(root) for root in dict.fromkeys(roots))


def vision_commands(directory: str | Path) -> str:
    """The `internvlx pretrain-vision` calls that made a ViT directory, oldest first: an `--init`
    that is itself a pretrain-vision output is made before the run continuing it."""
    directory = Path(directory)
    command = pretrain_command(directory)
    init = json.loads((directory / "metrics.json").read_text())["config"].get("init")
    if init and (Path(init) / "metrics.json").is_file():
        return vision_commands(init) + "\n" + command
    return command


def precision_text(train: dict) -> str:
    """How a run computed, from its config's `train` section: "float32, one thread", ..."""
    threads = train.get("num_threads")
    threads_text = "all threads" if not threads else ("one thread" if threads == 1 else f"{threads} threads")
    return f"{'bf16 autocast with float32 master weights' if train.get('bf16') else 'float32'}, {threads_text}"


def stage_record(config_path: Path, summary: dict, data_command: str) -> dict[str, Any]:
    """What the model card says about one training stage, from its config and train_summary.json."""
    import yaml

    text = config_path.read_text()
    train = (yaml.safe_load(text) or {}).get("train", {})
    history = summary.get("log_history", [])
    losses = [h["loss"] for h in history if "loss" in h]
    runtime = next((h["train_runtime"] for h in history if "train_runtime" in h), None)
    vision_init = ((yaml.safe_load(text) or {}).get("model") or {}).get("vision_init")
    return {
        "config": str(config_path), "config_text": text.strip(), "data_command": data_command,
        "vision_command": vision_commands(vision_init) if vision_init else None,
        "steps": summary.get("steps"), "batch_size": summary.get("batch_size", train.get("batch_size", 16)),
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "train_loss": summary.get("train_loss"), "samples_per_s": summary.get("train_samples_per_second"),
        "runtime_min": runtime / 60 if runtime is not None else None, "precision": precision_text(train),
        "machine": f"{platform.processor() or platform.machine()}, 2 CPU cores",
    }


def _num(value: Any, fmt: str) -> str:
    return "?" if value is None else format(value, fmt)


def stage_line(stage: dict) -> str:
    return (f"* `{stage['config']}`: {stage['steps']} steps x {stage['batch_size']}, loss "
            f"{_num(stage['loss_first'], '.2f')} → {_num(stage['loss_last'], '.2f')} (mean "
            f"{_num(stage['train_loss'], '.3f')}), {_num(stage['samples_per_s'], '')} samples/s, "
            f"{_num(stage['runtime_min'], '.0f')} min, {stage['precision']} on {stage['machine']}")


def tiling_text(tiling) -> str:
    if tiling.max_tiles == 1:
        return f"RVTC `{tiling.policy}` capped at one tile per image"
    return f"RVTC `{tiling.policy}`, up to {tiling.max_tiles} tiles{' + thumbnail' if tiling.thumbnail else ''}"


def recipe(stages: list[dict]) -> str:
    """The commands, in order: each data set and each pretrained ViT (`model.vision_init`) is made
    right before the first stage that uses it, and only once."""
    lines, made = [], set()
    for s in stages:
        for command in [*s["data_command"].splitlines(), *(s.get("vision_command") or "").splitlines()]:
            if command not in made:
                made.add(command)
                lines.append(command)
        lines.append(f"internvlx train {s['config']}")
    return "\n".join(lines)


def model_card(stages: list[dict], evaluation: dict, size_bytes: int, n_params: int, config,
               data: Path, run: Path, limit: int | None = None, note: Path | None = None,
               package_args: str = "") -> str:
    rows = "\n".join(
        f"| {q} | {v['count']} | {v['score']:.3f} |"
        for q, v in sorted(evaluation.get("breakdown", {}).get("qtype", {}).items())
    )
    stage_lines = "\n".join(stage_line(s) for s in stages)
    configs = "\n\n".join(f"`{s['config']}`:\n\n```yaml\n{s['config_text']}\n```" for s in stages)
    total_steps = sum(s.get("steps") or 0 for s in stages)
    vt = evaluation.get("visual_tokens", {})
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
{recipe(stages)}
internvlx eval {run}/final --task synth --data {data}/test.jsonl{f' --limit {limit}' if limit else ''} --batch-size 16 --out eval_results/demo
python benchmarks/package_demo_model.py {package_args}--eval eval_results/demo/summary.json --data {data}{f' --note {note}' if note else ''}
```

{stage_lines}

(another job shared the machine while some stages ran; `{STAGES_JSON}` beside this card holds
these records.)

## Held-out accuracy (synthetic test split, exact match)

Overall: **{evaluation.get('score', float('nan')):.3f}** over {evaluation.get('count')} samples;
{vt.get('llm_input_mean', float('nan')):.1f} visual tokens at the LLM input per
sample on average ({vt.get('mean_per_layer', float('nan')):.1f} averaged over layers).

| question type | samples | accuracy |
| --- | ---: | ---: |
{rows}

Limitations: trained on {total_steps} x {stages[-1].get('batch_size', 16)} synthetic samples only; answers about real photos
are meaningless. Retraining with the commands above reproduces it up to run-to-run noise.

## Training configs

{configs}
"""


def read_history(model_dir: Path | None) -> list[dict]:
    if model_dir is None:
        return []
    path = model_dir / STAGES_JSON
    if not path.exists():
        raise SystemExit(f"--history {model_dir}: no {STAGES_JSON} there (the stages that made that model)")
    return json.loads(path.read_text())


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, nargs="+", default=[Path("configs/demo-stage4.yaml")],
                    help="the stages trained here, in order; the model is the last one's output_dir/final")
    ap.add_argument("--history", type=Path, default=None,
                    help=f"model directory whose {STAGES_JSON} lists the stages before --config")
    ap.add_argument("--eval", type=Path, default=Path("eval_results/demo/summary.json"))
    ap.add_argument("--data", type=Path, default=Path("data/synth-easy-mt"),
                    help="the last stage's data set (its test split was evaluated; demo scenes come from it)")
    ap.add_argument("--out", type=Path, default=Path("models/internvlx-demo"))
    ap.add_argument("--note", type=Path, default=None,
                    help="markdown appended to the model card (the interpretation of the numbers)")
    args = ap.parse_args()
    stages = read_history(args.history)
    runs = []
    for c in args.config:
        cfg = yaml.safe_load(c.read_text())
        run = Path(cfg["output_dir"])
        stages.append(stage_record(c, json.loads((run / "train_summary.json").read_text()),
                                   data_commands(Path(cfg["data"]["meta"]))))
        runs.append(run)
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
    (args.out / STAGES_JSON).write_text(json.dumps(stages, indent=2) + "\n")
    pick_demo_images(args.data, args.out / "demo_images")
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    evaluation = json.loads(args.eval.read_text())
    n_test = sum(1 for _ in iter_jsonl(args.data / "test.jsonl"))
    limit = evaluation.get("count") if evaluation.get("count", n_test) < n_test else None
    package_args = f"--config {' '.join(str(c) for c in args.config)} " + (
        f"--history {args.history} " if args.history else "")
    card = model_card(stages, evaluation, size, sum(p.numel() for p in model.parameters()), model.config,
                      args.data, run, limit, args.note, package_args)
    if args.note is not None:
        card += "\n" + args.note.read_text().strip() + "\n"
    (args.out / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
