"""`internvlx` command line: a thin layer over the library's public functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import InternVLXError

Handler = Callable[[argparse.Namespace], int]


def _convert_official(args: argparse.Namespace) -> int:
    from .convert import convert_official

    convert_official(
        args.src, args.dst, image_token_id=args.image_token_id, dtype=args.dtype, progress=print
    )
    return 0


def _convert_to_official(args: argparse.Namespace) -> int:
    from .convert import convert_to_official

    convert_to_official(args.src, args.dst, llm_type=args.llm_type)
    print(f"wrote {args.dst}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert checkpoints between the authors' layout and ours")
    conv = p.add_subparsers(dest="direction", required=True)
    o = conv.add_parser("official", help="official InternVL-X / InternVL2 checkpoint -> internvlx directory")
    o.add_argument("src", help="official checkpoint directory (config.json + safetensors)")
    o.add_argument("dst", help="output directory")
    o.add_argument("--image-token-id", type=int, default=None,
                   help="<IMG_CONTEXT> id, needed only when the checkpoint ships no tokenizer")
    o.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="cast floating tensors (default: keep the checkpoint's dtype)")
    o.set_defaults(func=_convert_official)
    t = conv.add_parser("to-official", help="internvlx directory -> the authors' layout")
    t.add_argument("src")
    t.add_argument("dst")
    t.add_argument("--llm-type", choices=["internlm2", "llama"], default="internlm2",
                   help="write the LLM as InternLM2 (fused wqkv) or keep Llama/Qwen2 keys")
    t.set_defaults(func=_convert_to_official)


def _no_grad(handler: Handler) -> Handler:
    """Run a command without autograd, leaving the caller's global grad mode untouched."""

    def run(args: argparse.Namespace) -> int:
        import torch

        with torch.no_grad():
            return handler(args)

    return run


@_no_grad
def _chat(args: argparse.Namespace) -> int:
    from transformers import TextStreamer

    from .accounting import count_visual_tokens, prefill_flops
    from .configuration import InternVLXConfig
    from .images import load_image
    from .modeling import InternVLXForConditionalGeneration
    from .processing import InternVLXProcessor

    overrides = {"lvtc": {"enabled": args.lvtc == "on"}} if args.lvtc else {}
    model = InternVLXForConditionalGeneration.from_pretrained(args.model, **overrides).eval()
    processor = InternVLXProcessor.from_config(
        model.config, InternVLXProcessor.from_pretrained(args.model).tokenizer)
    tiling = {k: v for k, v in (("policy", args.policy), ("max_tiles", args.max_tiles)) if v is not None}
    if "max_tiles" in tiling:
        tiling["min_tiles"] = min(processor.settings.min_tiles, tiling["max_tiles"])
    images = [load_image(path, max_pixels=processor.settings.max_pixels) for path in args.image]
    if args.show_tokens:
        baseline = InternVLXConfig.from_preset("internvl2-2b")
        for path, img in zip(args.image, images, strict=True):
            ours = count_visual_tokens(img.width, img.height, model.config, **tiling,
                                       max_visual_tokens=args.max_visual_tokens)
            base = count_visual_tokens(img.width, img.height, baseline)
            print(f"[{path}] {img.width}x{img.height}: {ours.cols}x{ours.rows} tiles"
                  f"{' + thumbnail' if ours.thumbnail else ''} = {ours.tiles} tiles; visual tokens at the "
                  f"LLM input {ours.llm_input_tokens}, mean per layer {ours.mean_per_layer:.0f} "
                  f"(InternVL2 stock tiling: {base.tiles} tiles, {base.llm_input_tokens} tokens)")
            flops = prefill_flops(model.config, [ours.tiles], 64)
            print(f"  analytic prefill FLOPs (64 text tokens): {flops.total:.3e}")
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    generation = {"max_new_tokens": args.max_new_tokens}
    if args.temperature > 0:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    if args.question:
        model.chat(processor, images, args.question, streamer=streamer, tiling=tiling,
                   max_visual_tokens=args.max_visual_tokens, **generation)
        return 0
    history: list[tuple[str, str]] = []
    print("interactive chat: /reset clears the history, /quit or an empty line ends", flush=True)
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            break
        if question in ("", "/quit"):
            break
        if question == "/reset":
            history = []
            continue
        _, history = model.chat(processor, images, question, history=history, return_history=True,
                                streamer=streamer, tiling=tiling, max_visual_tokens=args.max_visual_tokens,
                                **generation)
    return 0


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask questions about images (streams the answer)")
    p.add_argument("model", help="model directory (weights, tokenizer, processor_config.json)")
    p.add_argument("question", nargs="?", default=None, help="omit for an interactive multi-turn chat")
    p.add_argument("--image", action="append", default=[], help="image file; repeat for several images")
    p.add_argument("--policy", choices=["stock", "length", "area"], default=None, help="tiling policy (RVTC: length/area)")
    p.add_argument("--max-tiles", type=int, default=None)
    p.add_argument("--max-visual-tokens", type=int, default=None, help="visual-token budget of the request")
    p.add_argument("--lvtc", choices=["on", "off"], default=None, help="override the model's LVTC setting")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--show-tokens", action="store_true", help="print the visual-token and FLOPs accounting")
    p.set_defaults(func=_chat)


def _data_synth(args: argparse.Namespace) -> int:
    from .synth import generate_synthetic

    # text-only and multi-image samples give way to captions (--caption-fraction 1.0 is caption-only)
    # and to where and hinted position samples
    room = max(0.0, 1.0 - args.caption_fraction - args.where_fraction - args.hinted_position_fraction)
    text_only, multi = args.text_only_fraction, args.multi_image_fraction
    if text_only + multi > room:
        scale = room / (text_only + multi)
        text_only, multi = text_only * scale, multi * scale
    stats = generate_synthetic(
        args.out, args.n, resolution=args.resolution, seed=args.seed, test_fraction=args.test_fraction,
        caption_fraction=args.caption_fraction, text_only_fraction=text_only, multi_image_fraction=multi,
        multi_turn_fraction=args.multi_turn_fraction, max_follow_ups=args.max_follow_ups,
        qtype_weights=args.qtype_weights, where_fraction=args.where_fraction,
        hinted_position_fraction=args.hinted_position_fraction, hint_drop=args.hint_drop, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"wrote {args.out}: {stats['train']['n']} train / {stats['test']['n']} test "
          f"samples in {stats['elapsed_s']:.1f} s; question types {stats['qtypes']}")
    return 0


def _qtype_weights(text: str) -> tuple[float, ...]:
    """`"shape=4,position=2"` -> one weight per synth.IMAGE_QTYPES entry (unnamed ones weigh 1)."""
    from .synth import IMAGE_QTYPES

    weights = dict.fromkeys(IMAGE_QTYPES, 1.0)
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or name not in weights or not weight >= 0:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected TYPE=WEIGHT with TYPE one of {', '.join(IMAGE_QTYPES)} and WEIGHT >= 0")
        weights[name] = weight
    return tuple(weights.values())


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets")
    data = p.add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="generate the synthetic visual-QA dataset (no download)")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, required=True, help="number of samples (train + test)")
    s.add_argument("--resolution", choices=["low", "high", "mixed", "simple", "easy"], default="low",
                   help="low: 224-448 px; high: 900-2000 px, small objects; mixed: 112-320 px (RVTC experiment); simple: low with plain backgrounds and at most one distractor; easy: simple on 112-224 px grey canvases with larger objects (the demo model's data)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--test-fraction", type=float, default=0.1)
    s.add_argument("--caption-fraction", type=float, default=0.15, help="1.0: caption-only (stage-1) data")
    s.add_argument("--text-only-fraction", type=float, default=0.05,
                   help="share of text-only samples (shrunk to fit next to --caption-fraction)")
    s.add_argument("--multi-image-fraction", type=float, default=0.05,
                   help="share of two-image samples (shrunk to fit next to --caption-fraction)")
    s.add_argument("--multi-turn-fraction", type=float, default=0.2,
                   help="share of single-image questions followed by more questions about the same image")
    s.add_argument("--max-follow-ups", type=int, default=2,
                   help="follow-up questions per multi-turn sample: 1 to N, at most one per question type (max 5)")
    s.add_argument("--qtype-weights", type=_qtype_weights, default=None, metavar="TYPE=W[,TYPE=W]",
                   help="relative shares of the single-image question types (unnamed types weigh 1), "
                        "e.g. shape=4: four shape questions for each colour question")
    s.add_argument("--where-fraction", type=float, default=0.0,
                   help="share of 'where' questions (is the <object> in the left or the right half of the "
                        "image?), which teach where one object is; text-only and multi-image samples shrink to fit")
    s.add_argument("--hinted-position-fraction", type=float, default=0.0,
                   help="share of hinted position samples: where questions about both objects of a position "
                        "question, then that question; text-only and multi-image samples shrink to fit")
    s.add_argument("--hint-drop", type=float, default=0.0,
                   help="probability of leaving out each of a hinted position sample's two where questions")
    s.add_argument("--overwrite", action="store_true", help="replace a previous synthetic dataset in --out")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_data_synth)


def _train(args: argparse.Namespace) -> int:
    from .train import RunConfig, train

    overrides = list(args.set)
    if args.data:
        from pathlib import Path

        meta = Path(args.data) / "meta_train.json" if Path(args.data).is_dir() else Path(args.data)
        overrides.append(f"data.meta={meta}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = RunConfig.from_yaml(args.config, overrides)
    summary = train(cfg, resume=args.resume)
    print(f"done: {summary['final_dir']} (steps {summary.get('steps')}, loss {summary.get('train_loss')})")
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Under torchrun, tear the process group down before exit: left to interpreter shutdown,
    gloo's threads sometimes abort a rank ("terminate called without an active exception")
    after training finished, failing the whole launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune from a YAML run description")
    p.add_argument("config", help="YAML file (see docs/training.md)")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    p.add_argument("--data", default=None, help="dataset: a meta JSON, or a folder holding meta_train.json")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.max_steps=20 (repeatable)")
    p.set_defaults(func=_train)


def _pretrain_vision(args: argparse.Namespace) -> int:
    from .vision_pretrain import FLAGS, VisionPretrainConfig, pretrain_vision

    # one table maps config fields to flags, here and in the command the model card writes back
    cfg = VisionPretrainConfig(out=args.out, **{name: getattr(args, flag[2:].replace("-", "_"))
                                                 for name, flag in FLAGS.items()})
    metrics = pretrain_vision(cfg, progress=not args.no_progress)
    for row in metrics["history"]:
        print("step {step:>6}: shape {shape_on_objects:.3f}  colour {colour_on_objects:.3f}  "
              "foreground {foreground:.3f}  word {word_on_text:.3f}".format(**row))
    print(f"wrote {args.out} ({metrics['elapsed_s']:.0f} s); use it with model.vision_init: {args.out}")
    return 0


def _add_pretrain_vision(sub: argparse._SubParsersAction) -> None:
    from .synth import RESOLUTIONS
    from .vision_pretrain import VisionPretrainConfig

    d = VisionPretrainConfig(out="")
    p = sub.add_parser("pretrain-vision", help="pretrain a preset's ViT on per-patch synthetic labels (shape, colour, word)")
    p.add_argument("--out", required=True, help="output directory (vision.safetensors, metrics.json)")
    p.add_argument("--preset", default=d.preset, help="the preset whose vision_config and tile size are trained")
    p.add_argument("--init", default=None, help="continue a model directory's ViT, or an earlier pretrain-vision "
                   "--out (its ViT and heads), instead of a fresh preset ViT")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate (warm-up, then cosine)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--resolution", choices=RESOLUTIONS, default=d.resolution, help="synthetic scenes to render")
    p.add_argument("--data-seed", type=int, default=d.data_seed, help="seed of the synthetic scenes")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the initialisation")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--min-cover", type=float, default=d.min_cover, help="share of a patch an object must cover to label it")
    p.add_argument("--position-init", choices=["sincos", "zeros"], default=d.position_init,
                   help="start of the ViT's absolute positions (transformers' own init is zeros)")
    p.add_argument("--qtype-weights", type=_qtype_weights, default=None, metavar="TYPE=W[,TYPE=W]",
                   help="shares of the training scenes' kinds, as for `data synth` (e.g. text=4: more words); "
                        "the held-out scenes keep the default mix")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-images", type=int, default=d.eval_images, help="held-out scenes of the periodic evaluation")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_pretrain_vision)


def _merge_lora(args: argparse.Namespace) -> int:
    from .train import merge_lora

    print(f"wrote {merge_lora(args.adapter, args.out, args.base)}")
    return 0


def _add_merge_lora(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge-lora", help="fold a LoRA adapter into its base model (plain model directory)")
    p.add_argument("adapter", help="directory with adapter_config.json (a training run's final/)")
    p.add_argument("out", help="output model directory")
    p.add_argument("--base", default=None, help="base model directory (default: the adapter's record)")
    p.set_defaults(func=_merge_lora)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_convert, _add_chat, _add_data, _add_train, _add_pretrain_vision, _add_merge_lora,
]


@_no_grad
def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluation import evaluate, load_for_eval

    model, processor = load_for_eval(args.model, dtype=args.dtype, device=args.device,
                                     lvtc=None if args.lvtc is None else args.lvtc == "on")
    out = args.out or str(Path("eval_results") / f"{Path(args.model).resolve().name}-{args.task}")
    summary = evaluate(
        model, processor, args.task, args.data, limit=args.limit, batch_size=args.batch_size, out_dir=out,
        image_root=args.image_root, annotations=args.annotations, policy=args.policy, max_tiles=args.max_tiles,
        max_visual_tokens=args.max_visual_tokens, max_new_tokens=args.max_new_tokens, variant=args.variant,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    score, vt = summary["score"], summary["visual_tokens"]
    print(f"{summary['task']}: {summary['metric']} = {'n/a' if score is None else f'{score:.4f}'} over "
          f"{summary['count']} samples ({summary['unscored']} unscored); visual tokens at the LLM input "
          f"{vt['llm_input_mean']:.1f}/sample, mean per layer {vt['mean_per_layer']:.1f}; "
          f"{summary['seconds_per_sample']:.3f} s/sample; wrote {out}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .evaluation import TASKS

    p = sub.add_parser("eval", help="run a benchmark: per-sample predictions (resumable) + summary JSON")
    p.add_argument("model", help="model directory (weights, tokenizer, processor_config.json)")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="benchmark from the task registry")
    p.add_argument("--data", required=True,
                   help="InternVL eval JSONL, VLMEvalKit TSV, meta JSON, or a folder (questions.jsonl / test.jsonl)")
    p.add_argument("--image-root", default=None, help="folder image paths are relative to (default: the data file's)")
    p.add_argument("--annotations", default=None, help="VQA-format annotation JSON holding the human answers")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--out", default=None, help="output folder (default: eval_results/MODEL-TASK)")
    p.add_argument("--overwrite", action="store_true", help="discard earlier predictions in --out instead of resuming")
    p.add_argument("--policy", choices=["stock", "length", "area"], default=None, help="tiling policy (RVTC: length/area)")
    p.add_argument("--max-tiles", type=int, default=None)
    p.add_argument("--max-visual-tokens", type=int, default=None, help="visual-token budget per sample")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override the task's answer length")
    p.add_argument("--lvtc", choices=["on", "off"], default=None, help="switch LVTC on/off (model.configure_lvtc)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--variant", choices=["internvl", "standard"], default="internvl",
                   help="metric variant (see internvlx.metrics)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_eval)


COMMANDS.append(_add_eval)


def _eval_compare(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .evaluation import compare_runs, render_comparison

    result = compare_runs(args.a, args.b, group_by=args.group_by or None, resamples=args.resamples, seed=args.seed)
    print(render_comparison(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _add_eval_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-compare", help="paired comparison of two eval runs (bootstrap interval of B - A)")
    p.add_argument("a", help="an `internvlx eval --out` folder (the baseline)")
    p.add_argument("b", help="another one, on the same data")
    p.add_argument("--group-by", default="qtype", help="meta field to break the comparison down by ('' for none)")
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    p.set_defaults(func=_eval_compare)


COMMANDS.append(_add_eval_compare)


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_from_args

    run_from_args(args)
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .bench import add_arguments

    p = sub.add_parser("bench", help="efficiency benchmark: transformers' InternVL2, our baseline and "
                       "InternVL-X side by side (tokens, FLOPs, TTFT, decode, memory, training)")
    add_arguments(p)
    p.set_defaults(func=_bench)


COMMANDS.append(_add_bench)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from .serve import add_serve_parser

    add_serve_parser(sub)


COMMANDS.append(_add_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="internvlx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `internvlx chat DIR --image X "question"`: a positional after options arrives as extra
    if extra and getattr(args, "question", "") is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.question, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except InternVLXError as e:
        print(f"internvlx: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
