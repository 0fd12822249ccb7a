"""The compression-vs-accuracy table in miniature: train every compressor with identical data,
steps and seeds, evaluate each with the evaluation harness, and write `docs/results.md` plus a
plot of accuracy against visual tokens.

    python benchmarks/compression_table.py run            # train + evaluate whatever is missing
    python benchmarks/compression_table.py report         # docs/results.md + docs/img/results_*.png
    python benchmarks/compression_table.py run --variants pvtc-r0.5 --seeds 0   # a subset

Every run is a real `internvlx train` job (from random initialisation, the `demo` preset's ViT
and LLM, float32 on CPU) on the synthetic data, followed by `internvlx.evaluation.evaluate`
on the held-out split. Runs are resumable: a finished run (its `result.json`) is skipped, so an
interrupted sweep continues where it stopped. `--jobs 2` runs two single-threaded jobs side
by side (faster than one two-threaded job on a 2-core CPU for models this small).

Variants (identical data, steps, seeds, batch and learning rates):

* easy set (112-224 px grey-background scenes), one 112-px tile per image, as InternVL-X-2B's 1-tile mode:
  `internvl2-mlp` (InternVL2's MLP projector, r = 0.5: 16 tokens/tile), `pvtc-r0.5`,
  `pvtc-r0.25` (4 tokens/tile), `mlp-r0.25` (the naive cut: pixel shuffle 4x4), `pvtc-lvtc`
  (PVTC r = 0.5 + LVTC K = 6, stride 2: 4 tokens/tile in layers 0-5, 16 in layers 6-7);
* the same easy set tiled up to 6 tiles + thumbnail (112-224 px canvases are small next to
  6 x 112-px tiles, so the caps differ), PVTC r = 0.5:
  `rvtc-stock`, `rvtc-length`, `rvtc-area` (tile-count caps, SPEC section 4).

Measured per run: held-out exact-match accuracy per question type; visual tokens at the LLM
input and averaged over LLM layers (from the evaluation); analytic prefill FLOPs
(`internvlx.accounting.prefill_flops`) at the mean tile count and prompt length; median
prefill time of one batch of 8 test prompts (one thread, 5 repeats); training samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Sections of the table: one tile per image (projector and LLM compression) and multi-tile (RVTC).
DATA = {"one_tile": ROOT / "data" / "synth-easy", "tiles": ROOT / "data" / "synth-easy"}
DATA_CMD = {
    "one_tile": "internvlx data synth --out data/synth-easy --n 64000 --seed 0 --test-fraction 0.03125 --resolution easy",
}
DATA_CMD["tiles"] = DATA_CMD["one_tile"]
RUNS = ROOT / "runs" / "table"  # `--runs` changes it
#: Learning rates of a sweep from random initialisation, and of one that starts from a trained
#: model (`--init`: its ViT and LLM are kept, the projector starts afresh, as InternVL-X does
#: with InternVL2's weights).
LR_SCRATCH = {"lr": 1e-3, "lr_vision": 3e-3, "lr_projector": 3e-3}
LR_FINETUNE = {"lr": 3e-4, "lr_vision": 3e-4, "lr_projector": 3e-3, "lr_lvtc": 3e-3}
DOC = ROOT / "docs" / "results.md"
PLOT = ROOT / "docs" / "img" / "results_accuracy_vs_tokens.png"
QTYPES = ("colour", "shape", "count", "position", "text", "caption", "compare", "arith", "word")

VARIANTS: dict[str, dict] = {
    "internvl2-mlp": {"label": "InternVL2 baseline (MLP, r=0.5)", "set": "one_tile",
                      "projector": {"type": "mlp", "downsample_ratio": 0.5}, "lvtc": False, "tiling": {"max_tiles": 1}},
    "pvtc-r0.5": {"label": "PVTC r=0.5", "set": "one_tile",
                  "projector": {"type": "pvtc", "downsample_ratio": 0.5}, "lvtc": False, "tiling": {"max_tiles": 1}},
    "pvtc-r0.25": {"label": "PVTC r=0.25", "set": "one_tile",
                   "projector": {"type": "pvtc", "downsample_ratio": 0.25}, "lvtc": False, "tiling": {"max_tiles": 1}},
    "mlp-r0.25": {"label": "MLP r=0.25 (naive cut)", "set": "one_tile",
                  "projector": {"type": "mlp", "downsample_ratio": 0.25}, "lvtc": False, "tiling": {"max_tiles": 1}},
    "pvtc-lvtc": {"label": "PVTC r=0.5 + LVTC (K=6, s=2)", "set": "one_tile",
                  "projector": {"type": "pvtc", "downsample_ratio": 0.5}, "lvtc": True, "tiling": {"max_tiles": 1}},
    # not trained: the pvtc-r0.5 checkpoints with LVTC switched on as they are (gate at its init)
    "pvtc-lvtc-free": {"label": "PVTC r=0.5, LVTC switched on without training", "set": "one_tile", "reuse": "pvtc-r0.5",
                       "projector": {"type": "pvtc", "downsample_ratio": 0.5}, "lvtc": True, "tiling": {"max_tiles": 1}},
    "rvtc-stock": {"label": "PVTC, stock tiling (<=6+1 tiles)", "set": "tiles",
                   "projector": {"type": "pvtc", "downsample_ratio": 0.5}, "lvtc": False,
                   "tiling": {"max_tiles": 6, "policy": "stock"}},
    "rvtc-length": {"label": "PVTC, RVTC length", "set": "tiles",
                    "projector": {"type": "pvtc", "downsample_ratio": 0.5}, "lvtc": False,
                    "tiling": {"max_tiles": 6, "policy": "length"}},
    "rvtc-area": {"label": "PVTC, RVTC area", "set": "tiles",
                  "projector": {"type": "pvtc", "downsample_ratio": 0.5}, "lvtc": False,
                  "tiling": {"max_tiles": 6, "policy": "area"}},
}


def run_config(name: str, seed: int, steps: int, out: Path, batch_size: int = 16, init: str | None = None) -> dict:
    """The `internvlx train` config of one run: from random initialisation (the `demo` preset),
    or, with `init`, from a trained model directory whose ViT and LLM are kept while the
    projector (and LVTC) of the projector/LLM variants start afresh; the tiling variants keep
    the whole model and change only how images are tiled."""
    v = VARIANTS[name]
    model = {"init": "preset:demo", "tokenizer": "bpe:1024", "system_message": "",
             "config_overrides": {"projector": v["projector"], "lvtc": {"enabled": v["lvtc"]}}}
    if init is not None:
        model = {"init": str(init), "system_message": "", "config_overrides": model["config_overrides"],
                 "reinit": ["projector", "lvtc"] if v["set"] == "one_tile" else []}
    return {
        "output_dir": str(out),
        "model": model,
        "data": {"meta": str(DATA[v["set"]] / "meta_train.json"), "max_seq_length": 512,
                 "tiling": {"policy": "length", **v["tiling"]}},
        "stage": "scratch",
        "optim": {**(LR_SCRATCH if init is None else LR_FINETUNE), "warmup_ratio": 0.05,
                  "weight_decay": 0.01, "scheduler": "cosine"},
        "train": {"max_steps": steps, "batch_size": batch_size, "logging_steps": 25, "save_steps": 10**9, "seed": seed,
                  "group_by_length": False, "num_threads": 1, "report_to": [], "disable_tqdm": True},
    }


def prefill_seconds(model, processor, samples, tiling: dict, repeats: int = 5) -> float:
    """Median wall time of one prefill forward of a batch of `samples` prompts."""
    import torch

    from internvlx.evaluation import get_task, question_prompt

    task = get_task("synth")
    batch = processor(
        [[{"role": "user", "content": question_prompt(s, task)}] for s in samples],
        images=[s.images for s in samples], padding_side="left", **tiling,
    )
    batch.pop("image_tiles", None)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            model(**batch, use_cache=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def mean_prefill_flops(config, processor, predictions: Path) -> tuple[float, float]:
    """Analytic prefill FLOPs (total, LLM) averaged over the evaluated image samples, each at its
    own tile count and prompt length."""
    from internvlx.accounting import prefill_flops
    from internvlx.evaluation import read_predictions

    rows = read_predictions(predictions)
    reports = []
    for r in rows:
        if not r["tiles"]:
            continue
        text = len(processor.tokenizer(r["question"])["input_ids"])
        reports.append(prefill_flops(config, [r["tiles"]], text))
    return statistics.mean(f.total for f in reports), statistics.mean(f.llm for f in reports)


def evaluate_run(name: str, seed: int, out: Path, limit: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from internvlx.evaluation import evaluate, get_task, sync_processor
    from internvlx.modeling import InternVLXForConditionalGeneration
    from internvlx.processing import InternVLXProcessor

    v = VARIANTS[name]
    trained = RUNS / f"{v['reuse']}-s{seed}" if "reuse" in v else out
    model = InternVLXForConditionalGeneration.from_pretrained(trained / "final").eval()
    processor = InternVLXProcessor.from_pretrained(trained / "final")
    if "reuse" in v and v["lvtc"] and not model.config.lvtc.enabled:
        model.configure_lvtc(True)
    processor = sync_processor(model, processor)  # prompts sized for the (possibly switched) LVTC
    tiling = {"policy": v["tiling"].get("policy", "length"), "max_tiles": v["tiling"]["max_tiles"]}
    test = DATA[v["set"]] / "test.jsonl"
    with torch.no_grad():
        summary = evaluate(model, processor, "synth", test, limit=limit, batch_size=16, out_dir=out / "eval",
                           progress=False, **tiling)
    flops_total, flops_llm = mean_prefill_flops(model.config, processor, out / "eval" / "predictions.jsonl")
    samples = [s for s in get_task("synth").reader(test) if s.images][:8]
    train = json.loads((trained / "train_summary.json").read_text())
    return {
        "variant": name, "seed": seed, "label": v["label"], "set": v["set"],
        "score": summary["score"],
        "per_type": {q: d["score"] for q, d in summary["breakdown"]["qtype"].items()},
        "count": summary["count"],
        "tokens_llm_input": summary["visual_tokens"]["llm_input_mean"],
        "tokens_mean_per_layer": summary["visual_tokens"]["mean_per_layer"],
        "tiles_mean": summary["visual_tokens"]["tiles_mean"],
        "flops_prefill": flops_total, "flops_llm": flops_llm,
        "prefill_ms_batch8": 1000 * prefill_seconds(model, processor, samples, tiling),
        "train_samples_per_s": None if "reuse" in v else train["train_samples_per_second"],
        "train_loss": train["train_loss"], "steps": train["steps"],
        "batch_size": yaml.safe_load((trained / "run.yaml").read_text())["train"]["batch_size"],
    }


def run_one(name: str, seed: int, steps: int, limit: int, batch_size: int, init: str | None = None) -> dict:
    out = RUNS / f"{name}-s{seed}"
    result_file = out / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    reuse = VARIANTS[name].get("reuse")
    if reuse:
        if not (RUNS / f"{reuse}-s{seed}" / "final" / "model.safetensors").exists():
            raise SystemExit(f"{name} evaluates the {reuse} seed {seed} checkpoint: run that variant first")
        out.mkdir(parents=True, exist_ok=True)
    elif not (out / "final" / "model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        cfg_path = out / "run.yaml"
        cfg_path.write_text(yaml.safe_dump(run_config(name, seed, steps, out, batch_size, init), sort_keys=False))
        log = (out / "train.log").open("w")
        print(f"[{time.strftime('%H:%M:%S')}] train {name} seed {seed} ({steps} steps)", flush=True)
        code = subprocess.call([sys.executable, "-m", "internvlx.cli", "train", str(cfg_path)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
        if code:
            raise SystemExit(f"training {name} seed {seed} failed (exit {code}); see {out / 'train.log'}")
    print(f"[{time.strftime('%H:%M:%S')}] evaluate {name} seed {seed}", flush=True)
    code = subprocess.call([sys.executable, __file__, "_evaluate", name, str(seed), "--limit", str(limit),
                            "--runs", str(RUNS)],
                           cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if code:
        raise SystemExit(f"evaluating {name} seed {seed} failed (exit {code})")
    return json.loads(result_file.read_text())


def cmd_run(args) -> None:
    for name in args.variants:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        data = DATA[VARIANTS[name]["set"]]
        if not (data / "meta_train.json").exists():
            raise SystemExit(f"{data} is missing; generate it with:\n  {DATA_CMD[VARIANTS[name]['set']]}")
    if args.init is not None and not (Path(args.init) / "config.json").exists():
        raise SystemExit(f"--init {args.init} is not a model directory (no config.json)")
    # checkpoints evaluated a second way (`reuse`) come after the runs that train them
    for reusing in (False, True):
        jobs = [(name, seed) for seed in args.seeds for name in args.variants
                if ("reuse" in VARIANTS[name]) == reusing]
        with ThreadPoolExecutor(args.jobs) as pool:
            for r in pool.map(lambda j: run_one(j[0], j[1], args.steps, args.limit, args.batch_size, args.init), jobs):
                print(f"  {r['variant']} seed {r['seed']}: accuracy {r['score']:.3f}, "
                      f"{r['tokens_llm_input']:.1f} visual tokens", flush=True)


def cmd_refresh_flops(args) -> None:
    """Recompute the FLOPs columns of finished runs from their predictions (no model is run)."""
    from internvlx.configuration import InternVLXConfig
    from internvlx.processing import InternVLXProcessor

    for f in sorted(RUNS.glob("*/result.json")):
        r = json.loads(f.read_text())
        v = VARIANTS[r["variant"]]
        trained = RUNS / f"{v['reuse']}-s{r['seed']}" if "reuse" in v else f.parent
        config = InternVLXConfig.from_pretrained(trained / "final")
        if "reuse" in v and v["lvtc"]:
            config.lvtc = {**vars(config.lvtc), "enabled": True}
        processor = InternVLXProcessor.from_pretrained(trained / "final")  # only its tokenizer is used
        r["flops_prefill"], r["flops_llm"] = mean_prefill_flops(config, processor, f.parent / "eval" / "predictions.jsonl")
        f.write_text(json.dumps(r, indent=2))
        print(f"{f.parent.name}: {r['flops_prefill'] / 1e9:.3f} GFLOPs")


def cmd_evaluate(args) -> None:
    out = RUNS / f"{args.name}-s{args.seed}"
    result = evaluate_run(args.name, int(args.seed), out, args.limit)
    (out / "result.json").write_text(json.dumps(result, indent=2))


# ------------------------------------------------------------------------- report


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    m = statistics.mean(values)
    return f"{100 * m:.1f} ± {100 * (max(values) - min(values)) / 2:.1f}" if len(values) > 1 else f"{100 * m:.1f}"


def load_results() -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for f in sorted(RUNS.glob("*/result.json")):
        r = json.loads(f.read_text())
        grouped.setdefault(r["variant"], []).append(r)
    return {name: grouped[name] for name in VARIANTS if name in grouped}


def _budget(grouped: dict[str, list[dict]], set_name: str) -> str:
    runs = [r for name, rs in grouped.items() if VARIANTS[name]["set"] == set_name for r in rs if "steps" in r]
    budgets = sorted({(r["steps"], r["batch_size"]) for r in runs})
    if not budgets:
        return "No finished runs."
    counts = sorted({r["count"] for r in runs})
    return ("Training budget: " + ", ".join(f"{s} steps x {b} samples" for s, b in budgets) + " per run; "
            "evaluated on " + " / ".join(f"{c:,}" for c in counts) + " held-out samples.")


def _train_speed(runs: list[dict]) -> str:
    speeds = [r["train_samples_per_s"] for r in runs if r["train_samples_per_s"] is not None]
    return f"{statistics.mean(speeds):.1f}" if speeds else "not trained"


def table(grouped: dict[str, list[dict]], set_name: str) -> str:
    base = None
    head = ("| variant | seeds | accuracy % | " + " | ".join(QTYPES[:5]) + " | visual tokens (LLM input) | "
            "tokens / layer | prefill FLOPs | vs baseline | prefill ms (batch 8) | train samples/s |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, runs in grouped.items():
        if VARIANTS[name]["set"] != set_name:
            continue
        flops = statistics.mean(r["flops_prefill"] for r in runs)
        base = base or flops
        per_type = [_mean_spread([r["per_type"].get(q, float("nan")) for r in runs if q in r["per_type"]])
                    for q in QTYPES[:5]]
        lines.append(
            f"| {VARIANTS[name]['label']} | {len(runs)} | {_mean_spread([r['score'] for r in runs])} | "
            + " | ".join(per_type)
            + f" | {statistics.mean(r['tokens_llm_input'] for r in runs):.1f}"
            f" | {statistics.mean(r['tokens_mean_per_layer'] for r in runs):.1f}"
            f" | {flops / 1e9:.2f} G | {flops / base:.2f}x"
            f" | {statistics.median(r['prefill_ms_batch8'] for r in runs):.1f}"
            f" | {_train_speed(runs)} |"
        )
    return "\n".join(lines)


def plot(grouped: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in grouped.items():
        xs = [r["tokens_mean_per_layer"] for r in runs]
        ys = [100 * r["score"] for r in runs]
        marker = "o" if VARIANTS[name]["set"] == "one_tile" else "s"
        ax.errorbar(statistics.mean(xs), statistics.mean(ys), yerr=(max(ys) - min(ys)) / 2 if len(ys) > 1 else 0,
                    fmt=marker, capsize=3, label=VARIANTS[name]["label"])
        ax.scatter(xs, ys, s=8, color="grey", alpha=0.6)
    ax.set_xlabel("visual tokens per sample, averaged over LLM layers")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_title("Miniature InternVL-X: accuracy vs visual tokens (circles: 1 tile; squares: up to 6 tiles + thumbnail)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)


def _inits() -> set[str]:
    return {yaml.safe_load(f.read_text())["model"]["init"] for f in RUNS.glob("*/run.yaml")}


def _commands(grouped: dict[str, list[dict]]) -> str:
    """The commands that reproduce the sweep in RUNS: one `run` per section, with the steps,
    batch size and evaluation size its runs recorded."""
    runs = f" --runs {RUNS.relative_to(ROOT) if RUNS.is_relative_to(ROOT) else RUNS}" if RUNS != ROOT / "runs" / "table" else ""
    init = "".join(f" --init {i}" for i in sorted(_inits()) if not i.startswith("preset:"))
    cmds = []
    for set_name in dict.fromkeys(v["set"] for v in VARIANTS.values()):
        names = [n for n in grouped if VARIANTS[n]["set"] == set_name]
        done = [r for n in names for r in grouped[n]]
        if not done:
            continue
        budgets = sorted({(r["steps"], r["batch_size"], r["count"]) for r in done})
        seeds = " ".join(str(s) for s in sorted({r["seed"] for r in done}))
        for steps, batch, count in budgets:
            cmds.append(f"`python benchmarks/compression_table.py run{init}{runs} --variants {' '.join(names)} "
                        f"--seeds {seeds} --steps {steps} --batch-size {batch} --limit {count}`")
    return ", ".join(cmds) + f", then `python benchmarks/compression_table.py report{runs}`"


def _protocol() -> str:
    """How the sweep in RUNS started, from the run configs it wrote."""
    inits = _inits()
    if inits <= {"preset:demo"}:
        return "Every run starts from random initialisation (the `demo` preset)."
    names = ", ".join(f"`{Path(i).relative_to(ROOT) if Path(i).is_absolute() and Path(i).is_relative_to(ROOT) else i}`"
                      for i in sorted(inits))
    return (f"Every run starts from the trained model {names} (`run --init`), as InternVL-X starts from "
            "InternVL2's weights: the projector/LLM variants keep its ViT and LLM and train a fresh projector "
            "(and fresh LVTC modules); the tiling variants keep the whole model and change only the tiling.")


def cmd_report(args) -> None:
    grouped = load_results()
    if not grouped:
        raise SystemExit(f"no finished runs in {RUNS}; run `python benchmarks/compression_table.py run` first")
    plot(grouped)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, float32, one thread per job"
    parts = [
        "# Compression vs accuracy, in miniature",
        "",
        f"Produced by {_commands(grouped)} "
        f"on {machine} ({time.strftime('%Y-%m-%d')}). {_protocol()} Every row is trained with the "
        f"project's trainer (same data order, learning rates, steps and seeds "
        "for every variant of a section), then evaluated on the held-out synthetic split with `internvlx.evaluation` "
        "(exact match; the first N test samples, N per section). Accuracy is the mean over seeds ± half the range.",
        "",
        "Data: " + "; ".join(f"`{c}`" for c in dict.fromkeys(DATA_CMD.values())) + ".",
        "",
        "## Projector and LLM compression (easy set, 112-224 px, one 112-px tile per image)",
        "",
        _budget(grouped, "one_tile"),
        "",
        table(grouped, "one_tile"),
        "",
        "## Tiling: stock vs RVTC (easy set, 112-224 px, up to 6 tiles + thumbnail)",
        "",
        _budget(grouped, "tiles"),
        "",
        table(grouped, "tiles"),
        "",
        f"![accuracy vs visual tokens](img/{PLOT.name})",
        "",
        "Columns: *visual tokens (LLM input)* are the `<IMG_CONTEXT>` slots per test sample; *tokens / layer* is "
        "their mean over LLM layers (LVTC's shallow layers see 4x fewer); *prefill FLOPs* are analytic "
        "(ViT + projector + LLM), averaged over the evaluated samples at their own tile counts and prompt lengths; *prefill ms* is the median of 5 "
        "forward passes over the same 8 test prompts, one thread; *train samples/s* is the trainer's own figure "
        "(two jobs ran side by side, so compare rows, not absolute values). The per-type columns are accuracy "
        "% for colour, shape, count, position and text questions.",
        "",
    ]
    notes = Path(args.notes)
    if notes.exists():
        parts += [notes.read_text().strip(), ""]
    DOC.write_text("\n".join(parts))
    print(DOC.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate the missing runs")
    r.add_argument("--variants", nargs="+", default=list(VARIANTS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    r.add_argument("--steps", type=int, default=600)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--limit", type=int, default=400, help="held-out samples to evaluate")
    r.add_argument("--jobs", type=int, default=2, help="runs side by side (one thread each)")
    r.add_argument("--init", default=None,
                   help="start every run from this trained model directory (ViT and LLM kept; the projector "
                        "variants get a fresh projector) instead of random initialisation")
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("_evaluate")
    e.add_argument("name")
    e.add_argument("seed")
    e.add_argument("--limit", type=int, default=400)
    e.set_defaults(func=cmd_evaluate)
    f = sub.add_parser("refresh-flops", help="recompute the FLOPs of finished runs from their predictions")
    f.set_defaults(func=cmd_refresh_flops)
    p = sub.add_parser("report", help="write docs/results.md and the plot from the finished runs")
    p.add_argument("--notes", default=str(ROOT / "benchmarks" / "compression_table_notes.md"),
                   help="markdown appended to the report (the interpretation)")
    p.set_defaults(func=cmd_report)
    for parser in (r, e, f, p):
        parser.add_argument("--runs", type=Path, default=RUNS, help="folder holding the runs of this sweep")
    args = ap.parse_args()
    _set_runs(args.runs)
    args.func(args)


def _set_runs(path: Path) -> None:
    global RUNS
    RUNS = Path(path).resolve()


if __name__ == "__main__":
    main()
