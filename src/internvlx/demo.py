"""`make demo`: what InternVL-X's compressors buy, and the shipped demo model answering questions.

1. The visual-token and FLOPs accounting of the InternVL2-2B baseline against InternVL-X-2B
   variants (PVTC, RVTC length/area, LVTC) for common image sizes — computed from the real
   model configurations.
2. If the repository ships a trained demo model (`models/internvlx-demo/`), it answers a few
   questions about bundled synthetic scenes, streaming its answers, with each image's token
   accounting. Without one, it says so (nothing is made up).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .accounting import count_visual_tokens, format_table, human_number, prefill_flops
from .configuration import InternVLXConfig

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "internvlx-demo"
SIZES = [(640, 480), (1024, 768), (1920, 1080), (448, 1344)]
TEXT_TOKENS = 64


def variants() -> list[tuple[str, InternVLXConfig, dict]]:
    hd = InternVLXConfig.from_preset("internvlx-2b-hd", tiling={"max_tiles": 12})
    lvtc = InternVLXConfig.from_preset("internvlx-2b-hd", tiling={"max_tiles": 12}, lvtc={"enabled": True})
    return [
        ("InternVL2-2B (MLP, stock tiling)", InternVLXConfig.from_preset("internvl2-2b"), {"policy": "stock"}),
        ("InternVL-X-2B PVTC, stock tiling", hd, {"policy": "stock"}),
        ("+ RVTC length", hd, {"policy": "length"}),
        ("+ RVTC area", hd, {"policy": "area"}),
        ("+ RVTC length + LVTC (K=19, s=2)", lvtc, {"policy": "length"}),
    ]


def accounting_table() -> str:
    rows = []
    for w, h in SIZES:
        base_flops = None
        for name, cfg, tiling in variants():
            count = count_visual_tokens(w, h, cfg, **tiling)
            flops = prefill_flops(cfg, [count.tiles], TEXT_TOKENS)
            base_flops = base_flops or flops.llm
            rows.append({
                "image": f"{w}x{h}", "model": name, "tiles": count.tiles,
                "LLM input tokens": count.llm_input_tokens,
                "mean tokens/layer": round(count.mean_per_layer),
                "LLM prefill FLOPs": human_number(flops.llm),
                "vs baseline": f"{flops.llm / base_flops:.2f}x",
            })
    return format_table(rows)


def run_model_demo(model_dir: Path) -> None:
    from PIL import Image
    from transformers import TextStreamer

    from .modeling import InternVLXForConditionalGeneration
    from .processing import InternVLXProcessor

    model = InternVLXForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = InternVLXProcessor.from_pretrained(model_dir)
    baseline = InternVLXConfig.from_preset("internvl2-2b")
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    images_dir = model_dir / "demo_images"
    questions = sorted(images_dir.glob("*.txt")) if images_dir.exists() else []
    for qfile in questions:
        image = qfile.with_suffix(".png")
        with Image.open(image) as im:
            w, h = im.size
        ours = count_visual_tokens(w, h, model.config)
        base = count_visual_tokens(w, h, baseline)
        print(f"\n[{image.name}] {w}x{h}: {ours.tiles} tiles, {ours.llm_input_tokens} visual tokens at the LLM "
              f"input, {ours.mean_per_layer:.0f} per layer on average (InternVL2 stock tiling at this tile "
              f"size would spend {base.tiles} tiles; see the table above for 448-px tiles)")
        expected_file = qfile.with_suffix(".answers")
        expected = expected_file.read_text().splitlines() if expected_file.exists() else []
        history: list[tuple[str, str]] = []
        for i, question in enumerate(q for q in qfile.read_text().splitlines() if q.strip()):
            print(f"Q: {question}\nA: ", end="", flush=True)
            answer, history = model.chat(processor, image, question, history=history, return_history=True,
                                         streamer=streamer, max_new_tokens=24)
            if i < len(expected):
                verdict = "correct" if answer.strip().lower() == expected[i].strip().lower() else "wrong"
                print(f"   (ground truth: {expected[i]} -> {verdict})")


def main() -> int:
    start = time.perf_counter()
    print("InternVL-X visual-token accounting (448-px tiles, up to 12 tiles, "
          f"{TEXT_TOKENS} text tokens; analytic FLOPs of the LLM prefill)\n")
    print(accounting_table())
    if DEMO_MODEL.exists():
        run_model_demo(DEMO_MODEL)
    else:
        print(f"\nNo trained demo model in {DEMO_MODEL} yet: the question-answering part of the demo "
              "needs the shipped model (see the README's roadmap); only the accounting is shown.")
    print(f"\ndemo finished in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
