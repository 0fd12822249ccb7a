"""Does the model use where-answers to answer relative position? Position accuracy three ways.

    python benchmarks/hinted_position.py --model models/internvlx-demo --n 300

Draws hinted position samples (`internvlx data synth --hinted-position-fraction`) from the
test stream of the synth seed (by default 8, `data/synth-easy-hint`'s, so never a training
sample of it; generated on the fly, no data folder needed) and asks each position question

* **alone**, as in the evaluation set (what `make demo` and `internvlx eval` measure);
* **after the true where answers** ("Is the red star in the left or the right half of the
  image?" / "left", the same for the other object): can the model compare two halves given
  in text? When the two objects lie in different halves, the hints decide the answer;
* **after its own where answers** (it answers both where questions, then the position one):
  a two-step answer built from a skill it has.

and prints accuracy for each, split by whether the two objects lie in different halves of the
image along the asked axis, with the share of the model's own where answers that were right.
Greedy decoding, float32, one thread per core.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def hinted_samples(n: int, options) -> list:
    """The first `n` hinted position samples of the test split under `options`."""
    from internvlx.synth import generate_sample, sample_kind

    out, index = [], 0
    while len(out) < n:
        if index > 50 * n + 1000:
            raise SystemExit("these synth options give (almost) no hinted position samples; "
                             "set --hinted-position-fraction above 0")
        if sample_kind(index, "test", options) == "hinted_position":
            out.append(generate_sample(index, "test", options))
        index += 1
    return out


def evaluate(model, processor, samples, progress: bool = True) -> dict:
    from tqdm import tqdm

    from internvlx.evaluation import normalize_synth_answer

    def same(prediction: str, answer: str) -> bool:
        return normalize_synth_answer(prediction) == normalize_synth_answer(answer)

    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    where_right = where_asked = 0
    for sample in tqdm(samples, desc="hinted position", unit="sample", disable=not progress):
        image = sample.render()[0]
        first, second, question = sample.turns
        split = "different halves" if first.answer != second.answer else "same half"

        def ask(q: str, history=None, image=image) -> str:
            return model.chat(processor, image, q, history=history, max_new_tokens=8)

        own: list[tuple[str, str]] = []
        for hint in (first, second):
            said = ask(hint.question, own)
            own.append((hint.question, said))
            where_right += same(said, hint.answer)
            where_asked += 1
        answers = {
            "alone": ask(question.question),
            "true hints": ask(question.question, [(first.question, first.answer), (second.question, second.answer)]),
            "own hints": ask(question.question, own),
        }
        for way, said in answers.items():
            for group in (split, "all"):
                cell = tally[(way, group)]
                cell[0] += same(said, question.answer)
                cell[1] += 1
    return {"tally": {f"{w}|{g}": v for (w, g), v in tally.items()},
            "where_accuracy": where_right / max(where_asked, 1)}


def render(result: dict, model: str, n: int) -> str:
    groups = ("all", "different halves", "same half")
    lines = [f"model {model}, {n} held-out hinted position samples (chance 50 %)", "",
             "| position question asked | " + " | ".join(groups) + " |",
             "| --- |" + " ---: |" * len(groups)]
    for way in ("alone", "true hints", "own hints"):
        cells = []
        for group in groups:
            right, total = result["tally"].get(f"{way}|{group}", [0, 0])
            cells.append(f"{100 * right / total:.1f} % ({right}/{total})" if total else "-")
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    lines += ["", f"the model's own where answers: {100 * result['where_accuracy']:.1f} % right"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "models" / "internvlx-demo"))
    p.add_argument("--n", type=int, default=300, help="held-out hinted position samples")
    p.add_argument("--seed", type=int, default=8, help="synth seed (data/synth-easy-hint: 8)")
    p.add_argument("--hinted-position-fraction", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be positive")

    import torch

    from internvlx.evaluation import load_for_eval
    from internvlx.synth import SynthOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    options = SynthOptions(resolution="easy", seed=args.seed, hinted_position_fraction=args.hinted_position_fraction,
                           multi_turn_fraction=1.0, max_follow_ups=5).validate()
    model, processor = load_for_eval(args.model, dtype="float32")
    samples = hinted_samples(args.n, options)
    print(render(evaluate(model, processor, samples, progress=not args.no_progress), args.model, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
