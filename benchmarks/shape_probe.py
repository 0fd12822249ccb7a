"""Does a model's vision pathway see shapes? Linear probes and a direct-supervision check.

    python benchmarks/shape_probe.py --model models/internvlx-demo
    python benchmarks/shape_probe.py --model runs/demo-stage4/final --train 3200 --test 800 --steps 1000
    python benchmarks/shape_probe.py --model runs/demo-stage5/final --steps 0 --llm
    python benchmarks/shape_probe.py --model runs/demo-stage6/final --steps 0 --projector-steps 1000

Renders single-object "easy" scenes (one shape of one colour on the grey background, the same
sizes and canvases as `internvlx data synth --resolution easy`), so every image has exactly one
shape label and one colour label. Then, on held-out scenes:

1. **Linear probes** (logistic regression on standardised features, trained on `--train` scenes)
   on the model's frozen visual tokens (projector output, what the LLM reads) and its frozen
   ViT patch tokens, for the shape and, as a positive control, the colour of the object; and
   the same probes on a randomly initialised ViT of the same config (the floor).
2. **Direct supervision**: the model's ViT plus a linear head on mean-pooled patch tokens,
   trained on the shape labels alone for `--steps` steps, against a randomly initialised ViT
   trained the same way: how quickly can this ViT learn shapes when told nothing else?

3. With `--llm`, the same probe on the LLM's hidden state at the answer position of "What shape
   is the <colour> object?", after every layer: does the LLM carry the shape to where it answers?

4. With `--position`, the same per-layer probe for "Is the <a> to the left or to the right of
   the <b>?" / "Is the <a> above or below the <b>?" (the training set's position scenes: two
   objects placed clear of each other along the asked axis, plus distractors), one binary
   probe per axis; and the model's forced choice between the two answers, split by whether the
   two objects' centres fall in the same half of the image along the axis -- with LVTC's 2 x 2
   shallow tokens (a 4 x 4 grid pooled by 2), a pair in one half shares its shallow tokens and
   only the deep layers' full grid can tell the objects' order.

5. With `--projector-steps N`, the model's projector (a copy) and fresh PVTC and MLP projectors,
   each with a linear head on its tokens, trained on the shape labels over the frozen ViT: can
   the projector pass on the shape the ViT has, when it is trained to?

If colour probes read the tokens and shape probes stay near chance (1/6), the model's answers
to shape questions cannot be grounded whatever the LLM does: the vision pathway has to learn
shapes first (docs/training.md, "Session 5: stage 4, and why shape questions stay at chance").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from internvlx import InternVLXForConditionalGeneration, InternVLXProcessor
from internvlx.synth import COLOURS, SHAPES, _build_position, _build_scene, render_scene

CHANCE = {"shape": 1 / len(SHAPES), "colour": 1 / len(COLOURS)}


def single_object_scenes(n: int, seed: int, resolution: str = "easy"):
    """`n` images, each of one object, with its shape and colour indices."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    images, shape_ids, colour_ids = [], [], []
    for _ in range(n):
        s, c = int(rng.integers(len(SHAPES))), int(rng.integers(len(colours)))
        images.append(render_scene(_build_scene(rng, resolution, [(SHAPES[s], colours[c])])))
        shape_ids.append(s)
        colour_ids.append(c)
    return images, torch.tensor(shape_ids), torch.tensor(colour_ids)


AXIS_ANSWERS = {"x": ("left", "right"), "y": ("above", "below")}


def position_scenes(n: int, seed: int, resolution: str = "easy"):
    """`n` position scenes as the training data builds them: images, questions, answer labels
    (index into :data:`AXIS_ANSWERS` of the axis), axes, and the half (0: left / top, 1: right /
    bottom) of the image that the centre of each of the pair, ``[n, 2]``, falls in along the axis."""
    rng = np.random.default_rng(seed)
    images, questions, labels, axes, halves = [], [], [], [], []
    for _ in range(n):
        scene, qa = _build_position(rng, resolution)
        axis = qa.params["axis"]
        a, b = scene.objects[qa.params["a"]], scene.objects[qa.params["b"]]
        extent, lo = (scene.width, "x") if axis == "x" else (scene.height, "y")
        images.append(render_scene(scene))
        questions.append(qa.question)
        labels.append(AXIS_ANSWERS[axis].index(qa.answer))
        axes.append(axis)
        halves.append([int(2 * (getattr(o, lo) + o.size / 2) >= extent) for o in (a, b)])
    return images, questions, torch.tensor(labels), axes, torch.tensor(halves)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 classes: int, steps: int = 200, weight_decay: float = 1e-4) -> float:
    """Held-out accuracy of an L2-regularised logistic regression on standardised features,
    fitted to convergence by full-batch L-BFGS."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    head = torch.nn.Linear(train_x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(train_x), train_y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


def tile_pixels(processor: InternVLXProcessor, images) -> torch.Tensor:
    """One float32 tile per image, at the processor's tile size."""
    return torch.cat([processor.process_image(im, max_tiles=1).pixel_values[:1] for im in images]).float()


@torch.no_grad()
def vit_states(vision: torch.nn.Module, pixels: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The ViT's last hidden state of every image, ``[n, 1 + patches, Cv]`` (token 0 is CLS)."""
    return torch.cat([vision(pixel_values=pixels[i:i + batch]).last_hidden_state for i in range(0, len(pixels), batch)])


@torch.no_grad()
def features(vision: torch.nn.Module, pixels: torch.Tensor, projector: torch.nn.Module | None = None,
             batch: int = 64, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flattened ViT patch tokens (without CLS) of every image, and its projector tokens when a
    projector is given (from ``hidden``, the :func:`vit_states`, when they are already computed)."""
    hidden = vit_states(vision, pixels, batch) if hidden is None else hidden
    proj = None
    if projector is not None:
        proj = torch.cat([projector(hidden[i:i + batch]).flatten(1) for i in range(0, len(hidden), batch)])
    return hidden[:, 1:].flatten(1), proj


def supervise(vision: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, n_train: int, steps: int,
              batch: int = 32, lr: float = 1e-3, every: int = 250, seed: int = 0) -> list[tuple[int, float]]:
    """Train `vision` + a linear head on mean-pooled patch tokens; held-out accuracy every `every` steps."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(vision.config.hidden_size, int(labels.max()) + 1)
    opt = torch.optim.AdamW([*vision.parameters(), *head.parameters()], lr=lr)

    def logits(x):
        return head(vision(pixel_values=x).last_hidden_state[:, 1:].mean(1))

    curve = []
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            vision.eval()
            with torch.no_grad():
                acc = (logits(pixels[n_train:]).argmax(1) == labels[n_train:]).float().mean().item()
            curve.append((step, acc))
            vision.train()
        if step == steps:
            break
        idx = torch.randint(0, n_train, (batch,))
        loss = torch.nn.functional.cross_entropy(logits(pixels[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curve


def train_projector_probe(projector: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, n_train: int,
                          steps: int, batch: int = 64, lr: float = 1e-3, seed: int = 0) -> float:
    """Train ``projector`` (in place) + a linear head on its flattened tokens on the labels, from
    the frozen ViT states ``hidden`` ``[n, 1 + patches, Cv]``; held-out accuracy at the end. Can
    this projector carry what the ViT has, when it is trained for it?"""
    torch.manual_seed(seed)
    projector.float().train()
    with torch.no_grad():
        width = projector(hidden[:1]).flatten(1).shape[1]
    head = torch.nn.Linear(width, int(labels.max()) + 1)
    opt = torch.optim.AdamW([*projector.parameters(), *head.parameters()], lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, n_train, (batch,))
        loss = torch.nn.functional.cross_entropy(head(projector(hidden[idx]).flatten(1)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    projector.eval()
    with torch.no_grad():
        pred = torch.cat([head(projector(hidden[i:i + 256]).flatten(1)).argmax(1)
                          for i in range(n_train, len(hidden), 256)])
    return (pred == labels[n_train:]).float().mean().item()


def shape_questions(colour_ids: torch.Tensor) -> list[str]:
    """ "What shape is the <colour> object?" for each single-object scene."""
    names = list(COLOURS)
    return [f"What shape is the {names[int(c)]} object?" for c in colour_ids]


@torch.no_grad()
def answer_states(model, processor, images, questions: list[str], batch: int = 32
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's hidden state at the answer position (the last prompt token) after every layer,
    ``[n, layers + 1, hidden]`` (index 0: the input embeddings), for one question about each
    image; and the next-token logits there, ``[n, vocab]``."""
    states, logits = [], []
    for i in range(0, len(images), batch):
        convs = [[{"role": "user", "content": f"<image>\n{q}"}] for q in questions[i:i + batch]]
        inputs = processor(convs, [[im] for im in images[i:i + batch]])
        out = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                    attention_mask=inputs["attention_mask"], output_hidden_states=True)
        states.append(torch.stack([h[:, -1] for h in out.hidden_states], 1))
        logits.append(out.logits[:, -1].float())
    return torch.cat(states), torch.cat(logits)


def forced_choice(logits: torch.Tensor, tokenizer, axes: list[str]) -> torch.Tensor:
    """Per sample, the index (into :data:`AXIS_ANSWERS` of its axis) of the answer whose first
    token the model scores higher at the answer position."""
    first = {}
    for axis, words in AXIS_ANSWERS.items():
        ids = [tokenizer.encode(w, add_special_tokens=False)[0] for w in words]
        if ids[0] == ids[1]:
            raise SystemExit(f"{words} start with the same token: a forced choice cannot tell them apart")
        first[axis] = ids
    return torch.tensor([int(logits[k, first[a][1]] > logits[k, first[a][0]]) for k, a in enumerate(axes)])


def position_report(model, processor, n_train: int, n_test: int, seed: int) -> None:
    """Print the per-layer answer-state probes and the forced-choice accuracy of position questions."""
    t = time.perf_counter()
    images, questions, labels, axes, halves = position_scenes(n_train + n_test, seed + 1)
    same_half = halves[:, 0] == halves[:, 1]
    states, logits = answer_states(model, processor, images, questions)
    chosen = forced_choice(logits, processor.tokenizer, axes)
    print(f"\nPosition questions ({n_train} training / {n_test} held-out scenes; "
          f"{time.perf_counter() - t:.0f} s): probe of the LLM's answer state by layer (0 = input "
          f"embeddings), chance 50 %\n")
    print("| probed label | " + " | ".join(str(k) for k in range(states.shape[1])) + " |")
    print("| --- |" + " ---: |" * states.shape[1])
    is_x = torch.tensor([a == "x" for a in axes])
    idx = torch.arange(len(axes))
    for axis, name in (("x", "left / right"), ("y", "above / below")):
        mask = is_x if axis == "x" else ~is_x
        tr, te = idx[:n_train][mask[:n_train]], idx[n_train:][mask[n_train:]]
        # the answer, and -- a step it needs -- the half each named object is in
        for label, y in ((f"{name}: the answer", labels), (f"{name}: first object's half", halves[:, 0]),
                         (f"{name}: second object's half", halves[:, 1])):
            print(f"| {label} | " + " | ".join(
                f"{100 * linear_probe(states[tr, k], y[tr], states[te, k], y[te], 2):.1f} %"
                for k in range(states.shape[1])) + " |")
    right = chosen == labels
    print("\nThe model's forced choice between the two answers (all scenes), by whether the pair's centres "
          "fall in the same half of the image along the axis\n")
    print("| axis | pair in different halves | pair in the same half | all |")
    print("| --- | ---: | ---: | ---: |")
    for axis, name in (("x", "left / right"), ("y", "above / below")):
        mask = is_x if axis == "x" else ~is_x
        cells = [right[mask & ~same_half], right[mask & same_half], right[mask]]
        print(f"| {name} | " + " | ".join(f"{100 * c.float().mean():.1f} % ({len(c)})" if len(c) else "-"
                                          for c in cells) + " |")


def parse_overrides(text: str) -> dict[str, int]:
    """`"hidden_size=256,image_size=224"` -> `{"hidden_size": 256, "image_size": 224}` (integers only)."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise SystemExit(f"--fresh {text!r}: expected KEY=INTEGER[,KEY=INTEGER], e.g. hidden_size=256")
        out[key.strip()] = int(value)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="a trained model directory")
    ap.add_argument("--train", type=int, default=3200, help="probe training scenes")
    ap.add_argument("--test", type=int, default=800, help="held-out scenes")
    ap.add_argument("--steps", type=int, default=1000, help="direct-supervision steps (0: skip)")
    ap.add_argument("--fresh", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="also train a random-init ViT with these vision-config changes on the shape labels, "
                         "e.g. hidden_size=256,intermediate_size=1024 or image_size=224 (the tile size; images "
                         "are re-processed at it); repeatable")
    ap.add_argument("--llm", action="store_true",
                    help="also probe the LLM's hidden state at the answer position of a shape question, per layer")
    ap.add_argument("--position", action="store_true",
                    help="also probe the LLM's answer state on position questions per layer, and split the "
                         "model's forced choice by whether the pair shares a half of the image")
    ap.add_argument("--projector-steps", type=int, default=0,
                    help="also train the model's projector (a copy) and a fresh one of each type, with a linear "
                         "head on their tokens, on the shape labels over the frozen ViT for this many steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    fresh = [parse_overrides(text) for text in args.fresh]
    if not (args.model / "config.json").exists():
        raise SystemExit(f"{args.model} is not a model directory (no config.json)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = InternVLXForConditionalGeneration.from_pretrained(args.model).float().eval()
    processor = InternVLXProcessor.from_pretrained(args.model)
    t0 = time.perf_counter()
    images, shapes, colours = single_object_scenes(args.train + args.test, args.seed)
    pixels = tile_pixels(processor, images)
    n = args.train
    random_patches, _ = features(AutoModel.from_config(model.config.vision_config).float().eval(), pixels)
    hidden = vit_states(model.vision_model, pixels)  # also what --projector-steps trains on
    vit, proj = features(model.vision_model, pixels, model.projector, hidden=hidden)
    rows = []
    for name, x in (("projector tokens (what the LLM reads)", proj), ("ViT patch tokens", vit),
                    ("ViT patch tokens, random-init ViT", random_patches)):
        accs = {label: linear_probe(x[:n], y[:n], x[n:], y[n:], int(y.max()) + 1)
                for label, y in (("shape", shapes), ("colour", colours))}
        rows.append((name, accs))
    print(f"\nLinear probes on frozen features of {args.model} ({n} training / {args.test} held-out "
          f"single-object scenes; {time.perf_counter() - t0:.0f} s)\n")
    print(f"| features | shape (chance {100 * CHANCE['shape']:.1f} %) | colour (chance {100 * CHANCE['colour']:.1f} %) |")
    print("| --- | ---: | ---: |")
    for name, accs in rows:
        print(f"| {name} | {100 * accs['shape']:.1f} % | {100 * accs['colour']:.1f} % |")
    if args.llm:
        t = time.perf_counter()
        states, _ = answer_states(model, processor, images, shape_questions(colours))
        print(f"\nLLM hidden state at the answer position of \"What shape is the <colour> object?\" "
              f"({time.perf_counter() - t:.0f} s): shape probe by layer (0 = input embeddings)\n")
        print("| layer | " + " | ".join(str(k) for k in range(states.shape[1])) + " |")
        print("| --- |" + " ---: |" * states.shape[1])
        print("| shape | " + " | ".join(f"{100 * linear_probe(states[:n, k], shapes[:n], states[n:, k], shapes[n:], len(SHAPES)):.1f} %"
                                        for k in range(states.shape[1])) + " |")
    if args.position:
        position_report(model, processor, args.train, args.test, args.seed)
    if args.projector_steps:
        import copy

        from internvlx.projectors import build_projector

        candidates = [(f"the model's projector ({model.config.projector.type})", copy.deepcopy(model.projector))]
        for kind in ("pvtc", "mlp"):
            config = copy.deepcopy(model.config)
            config.projector.type = kind
            torch.manual_seed(args.seed)
            candidates.append((f"fresh {kind} projector", build_projector(config)))
        print(f"\nTrained projector probes: projector + linear head on its tokens, shape labels, frozen ViT, "
              f"{args.projector_steps} steps x 64, AdamW lr 1e-3 (the frozen model's projector: see above)\n")
        print("| projector | held-out shape |")
        print("| --- | ---: |")
        for name, projector in candidates:
            t = time.perf_counter()
            acc = train_projector_probe(projector, hidden, shapes, n, args.projector_steps, seed=args.seed)
            print(f"  trained {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
            print(f"| {name} | {100 * acc:.1f} % |")
    if args.steps:
        curves = {}
        variants = [("the model's ViT", model.vision_model, pixels),
                    ("random-init ViT", AutoModel.from_config(model.config.vision_config), pixels)]
        for changes in fresh:
            name = "random-init ViT, " + ", ".join(f"{k}={v}" for k, v in changes.items())
            config = model.config.vision_config.to_dict() | changes
            if "image_size" in changes:
                size = changes["image_size"]
                config["image_size"] = [size, size]
                x = tile_pixels(InternVLXProcessor.from_pretrained(args.model, tile_size=size), images)
            else:
                x = pixels
            vision_config = type(model.config.vision_config).from_dict(config)
            variants.append((name, AutoModel.from_config(vision_config), x))
        for name, vision, x in variants:
            t = time.perf_counter()
            curves[name] = supervise(vision.float(), x, shapes, n, args.steps, seed=args.seed)
            print(f"  trained {name} on shape labels: {time.perf_counter() - t:.0f} s", file=sys.stderr)
        steps = [s for s, _ in curves["the model's ViT"]]
        print("\nDirect supervision: ViT + linear head on shape labels only, batch 32, AdamW lr 1e-3; "
              "held-out shape accuracy by step\n")
        print("| ViT | " + " | ".join(str(s) for s in steps) + " |")
        print("| --- |" + " ---: |" * len(steps))
        for name, curve in curves.items():
            print(f"| {name} | " + " | ".join(f"{100 * a:.1f} %" for _, a in curve) + " |")


if __name__ == "__main__":
    main()
