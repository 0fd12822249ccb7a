"""Deterministic synthetic visual-QA data: shapes, colours, counts, positions and words.

The generator needs no download. It serves the test suite, the small demo model trained on
CPU, and the compression-vs-accuracy experiments: every answer depends on image detail
(a colour, a shape, a count, a relative position, a rendered word), and the ``"high"``
resolution draws *small* objects and words on *large* canvases, so a single 448 px thumbnail
loses what the question asks about while tiles keep it.
The ``"mixed"`` resolution draws ``"low"``-style scenes on 112-320 px canvases: small images
next to medium ones, where RVTC's tile caps differ from stock tiling at 112-px tiles (the
miniature RVTC experiment in ``benchmarks/compression_table.py``).
The ``"simple"`` resolution is ``"low"`` with plain backgrounds, at most one distractor and
counts up to 4 (plus a distractor). The ``"easy"`` resolution is ``"simple"`` on small
(112-224 px) canvases with a fixed mid-grey background and larger objects: a randomly
coloured background makes "which colour is the object" a figure-ground problem that a model
trained from scratch on a CPU does not solve in a few thousand steps, while on grey it learns
colours within ~2,000 steps (the shipped demo model and the compression table train on ``"easy"``).

Layout written by :func:`generate_synthetic` into ``out_dir``::

    images/train/000000.png       one PNG per image (multi-image samples: 000000_1.png, _2.png)
    images/test/000000.png
    train.jsonl, test.jsonl       InternVL conversation records (format below)
    meta_train.json               {"synth_train": {"root": ".", "annotation": "train.jsonl",
                                                   "data_augment": false, "repeat_time": 1,
                                                   "length": N}}
    meta_test.json                the same for the test split
    stats.json                    counts per question type, kind and split

**Paths.** Image paths inside the JSONL are relative to the meta entry's ``root``; ``root`` and
``annotation`` are relative to *the directory holding the meta file* (InternVL's own meta files
use absolute or working-directory-relative paths; ours are relocatable: move or copy
``out_dir`` anywhere). A reader resolves ``meta_dir / root / image`` and ``meta_dir / annotation``.

**Records.** InternVL's format plus evaluation fields::

    {"id": "train_000007", "image": "images/train/000007.png", "width": 301, "height": 254,
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the star?"},
                       {"from": "gpt", "value": "blue"}],
     "qtype": "colour", "answer": "blue", "turn_qtypes": ["colour"]}

``qtype``/``answer`` describe the first question (what an evaluator asks); ``turn_qtypes``
names the type of every question in a multi-turn record. Multi-image records have
``"image": [a, b]`` with ``width_list``/``height_list`` and the prompt
``Image-1: <image>\\nImage-2: <image>\\n...``; text-only records have no ``image`` key.

**Question types.** Image questions: ``colour``, ``shape``, ``count``, ``position``, ``text``
(the word written in the image) and ``caption`` ("Describe the image."); multi-image:
``compare`` ("Which image has more squares? Answer 1 or 2."); text-only: ``arith`` and
``word``; and, only where ``where_fraction`` asks for them, ``where`` ("Is the red star in the
left or the right half of the image?": one object's absolute place, a step towards the relative
``position`` questions); and, only where ``hinted_position_fraction`` asks for them, *hinted*
position samples: two ``where`` questions, one about each object of a ``position`` question
along its axis, then that question, so that the comparison can be learned from the earlier
answers before it must be made from the pixels alone. Every answer except captions is one lowercase word or a number.

**Determinism.** Sample ``i`` of a split depends only on ``(seed, split, i)`` and the options,
never on ``n``: a run with a larger ``n`` extends a smaller one. Train and test draw from
different random streams. PNGs carry no time stamp, so two runs give identical bytes with the
same Pillow, zlib and FreeType (the text font is Pillow's embedded default font).
:func:`generate_sample` returns the scene specification behind every record, so answers can
be checked against it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from internvlx.errors import ConfigError, DataError

#: Bumped whenever the same seed would produce different data; recorded in ``stats.json``.
#: 2: follow-up questions never ask what an earlier turn of the record already says, and
#: captions say "an orange ...". Images, first questions and every other record are as in 1.
SYNTH_VERSION = 2
#: Part of every random stream's seed: bumped only when the random draws themselves change
#: (version 2 changed which follow-ups are kept and caption wording, not the draws).
_STREAM_VERSION = 1

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 210, 40),
    "orange": (245, 140, 30),
    "purple": (150, 60, 200),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
PLURALS = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
#: Words rendered for ``text`` questions: common, 3-6 letters, none a colour or shape name.
WORDS = (
    "apple", "bird", "boat", "book", "bread", "cake", "chair", "city", "clock", "cloud",
    "coat", "cup", "dog", "door", "duck", "fish", "flag", "frog", "game", "glass",
    "hat", "horse", "house", "key", "king", "lamp", "leaf", "lion", "map", "milk",
    "moon", "mouse", "music", "night", "ocean", "paper", "piano", "queen", "rain", "river",
    "road", "rose", "ship", "shoe", "snow", "stone", "sun", "table", "tree", "water",
)  # fmt: skip

RESOLUTIONS = ("low", "high", "mixed", "simple", "easy")
#: Resolutions with plain backgrounds, at most one distractor and counts up to 4.
_SIMPLE = ("simple", "easy")
#: The fixed background of ``"easy"`` scenes (far from every colour in :data:`COLOURS`).
EASY_BACKGROUND: RGB = (128, 128, 128)
#: Canvas side range per resolution ("mixed": small and medium images for the RVTC experiment).
CANVAS_SIDES = {"low": (224, 448), "high": (900, 2000), "mixed": (112, 320), "simple": (224, 448),
                "easy": (112, 224)}
SPLITS = ("train", "test")
#: Question types asked about one image (and usable as follow-ups in multi-turn records).
IMAGE_QTYPES = ("colour", "shape", "count", "position", "text")
QTYPES = (*IMAGE_QTYPES, "caption", "compare", "arith", "word", "where")
#: The answers of ``where`` questions per axis: the half of the image an object lies wholly in.
WHERE_ANSWERS = {"x": ("left", "right"), "y": ("top", "bottom")}
BACKGROUNDS = ("plain", "gradient", "noise")

_SPLIT_CODE = {"train": 0, "test": 1}
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # golden-ratio step of the kind schedule
_OUTPUT_FILES = ("train.jsonl", "test.jsonl", "meta_train.json", "meta_test.json", "stats.json")
#: zlib level 1: ~4x faster than the default 6 and ~15% larger files.
_PNG_LEVEL = 1
_IMAGE_NAME = re.compile(r"^\d{6,}(_[12])?\.png$")


# --------------------------------------------------------------------------- specification


@dataclass(frozen=True)
class SceneObject:
    """A filled shape inside a ``size x size`` box whose top-left corner is ``(x, y)``."""

    shape: str
    colour: str
    x: int
    y: int
    size: int

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` with exclusive ends (numpy slicing order is ``[y0:y1, x0:x1]``)."""
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    @property
    def centre(self) -> tuple[int, int]:
        """A pixel inside the shape for every shape (its box centre)."""
        return (self.x + self.size // 2, self.y + self.size // 2)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class TextItem:
    """A word in Pillow's default font; ``(x, y, width, height)`` is its ink box."""

    word: str
    colour: str
    x: int
    y: int
    font_size: int
    width: int
    height: int

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)


@dataclass(frozen=True)
class Background:
    """Plain colour, linear gradient ``colour -> colour2`` or colour plus grey noise.

    Noise is uniform in ``[-noise, noise]``, constant over ``noise_block`` x ``noise_block``
    pixel cells (a light grain that PNG still compresses quickly).
    """

    kind: str
    colour: RGB
    colour2: RGB
    direction: str
    noise: int
    noise_block: int
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    """Everything :func:`render_scene` needs to draw one image, pixel for pixel."""

    width: int
    height: int
    background: Background
    objects: tuple[SceneObject, ...]
    text: TextItem | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QA:
    """One question and its answer; ``params`` says what was asked (e.g. ``{"shape": "star"}``)."""

    qtype: str
    question: str
    answer: str
    params: dict[str, Any] = field(default_factory=dict)


def format_qtype_weights(weights: Sequence[float]) -> str:
    """``(1, 4, 1, 1, 1)`` -> ``"colour=1,shape=4,count=1,position=1,text=1"``: the
    ``--qtype-weights`` flag value of one weight per :data:`IMAGE_QTYPES` entry."""
    return ",".join(f"{q}={float(w):g}" for q, w in zip(IMAGE_QTYPES, weights, strict=True))


@dataclass(frozen=True)
class SynthOptions:
    """What a dataset is drawn from; sample ``i`` is a function of these, the split and ``i``.

    ``caption_fraction``, ``text_only_fraction`` and ``multi_image_fraction`` are shares of all
    samples; the rest is split among :data:`IMAGE_QTYPES`, evenly or in proportion to
    ``qtype_weights`` (one non-negative weight per type, in that order; ``None``: equal, and the
    same samples as before the option existed). ``multi_turn_fraction`` is
    the share of those single-image questions that get follow-up questions about the same
    image: between one and ``max_follow_ups`` of them (at most one per question type of
    :data:`IMAGE_QTYPES`, fewer where a scene has nothing to ask of a type). More questions per
    image give the image pathway more supervision for the same vision forward pass (what the
    demo model's stage 3 trains on). ``where_fraction`` is the share of ``where`` questions
    (which get follow-ups like the other single-image ones); at 0, the default, the data are
    exactly those of before the option existed. ``hinted_position_fraction`` is the share of
    hinted position samples (see the module docstring; no further follow-ups), 0 by default
    with the same guarantee; ``hint_drop`` leaves out each of their two hints with that
    probability (fading the hints: at 1 they are plain position questions).
    """

    resolution: str = "low"
    seed: int = 0
    caption_fraction: float = 0.15
    text_only_fraction: float = 0.05
    multi_image_fraction: float = 0.05
    multi_turn_fraction: float = 0.2
    max_follow_ups: int = 2
    qtype_weights: tuple[float, ...] | None = None
    where_fraction: float = 0.0
    hinted_position_fraction: float = 0.0
    hint_drop: float = 0.0

    def validate(self) -> SynthOptions:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(
                f"unknown resolution {self.resolution!r}; choose one of {', '.join(RESOLUTIONS)}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        names = ("caption_fraction", "text_only_fraction", "multi_image_fraction",
                 "multi_turn_fraction", "where_fraction", "hinted_position_fraction", "hint_drop")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
        most = len(IMAGE_QTYPES)
        value = self.max_follow_ups
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ConfigError(
                f"max_follow_ups must be an integer from 1 to {most} (one per question type), "
                f"got {value!r}"
            )
        weights = self.qtype_weights
        if weights is not None:
            if (not isinstance(weights, tuple | list) or len(weights) != most
                    or any(isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 for w in weights)
                    or sum(weights) <= 0):  # fmt: skip
                raise ConfigError(
                    f"qtype_weights must be {most} non-negative numbers (for {', '.join(IMAGE_QTYPES)}) "
                    f"with a positive sum, got {weights!r}"
                )
        shares = self.special_shares()
        special = sum(share for _, share in shares)
        if special > 1 + 1e-9:
            names = " + ".join(f"{kind}_fraction" for kind, _ in shares)
            raise ConfigError(f"{names} must not exceed 1, got {special:g}")
        return self

    def special_shares(self) -> tuple[tuple[str, float], ...]:
        """The sample kinds with a share of their own, in schedule order; the single-image
        question types of :data:`IMAGE_QTYPES` split what they leave."""
        return (("caption", self.caption_fraction), ("text_only", self.text_only_fraction),
                ("multi_image", self.multi_image_fraction), ("where", self.where_fraction),
                ("hinted_position", self.hinted_position_fraction))  # fmt: skip


@dataclass(frozen=True)
class SyntheticSample:
    """One record with the scenes (0, 1 or 2) and questions behind it."""

    id: str
    split: str
    index: int
    scenes: tuple[Scene, ...]
    turns: tuple[QA, ...]

    @property
    def image_paths(self) -> list[str]:
        """Paths relative to the dataset root, in prompt order."""
        stem = f"images/{self.split}/{self.index:06d}"
        if len(self.scenes) == 1:
            return [f"{stem}.png"]
        return [f"{stem}_{k}.png" for k in range(1, len(self.scenes) + 1)]

    def render(self) -> list[Image.Image]:
        return [render_scene(scene) for scene in self.scenes]

    def record(self) -> dict[str, Any]:
        """The JSONL record (InternVL conversation format plus ``qtype``/``answer``)."""
        rec: dict[str, Any] = {"id": self.id}
        paths = self.image_paths
        if len(self.scenes) == 1:
            rec["image"] = paths[0]
            rec["width"], rec["height"] = self.scenes[0].width, self.scenes[0].height
            prefix = "<image>\n"
        elif self.scenes:
            rec["image"] = paths
            rec["width_list"] = [s.width for s in self.scenes]
            rec["height_list"] = [s.height for s in self.scenes]
            prefix = "".join(f"Image-{k}: <image>\n" for k in range(1, len(self.scenes) + 1))
        else:
            prefix = ""
        conversations = []
        for k, qa in enumerate(self.turns):
            conversations.append(
                {"from": "human", "value": (prefix if k == 0 else "") + qa.question}
            )
            conversations.append({"from": "gpt", "value": qa.answer})
        rec["conversations"] = conversations
        rec["qtype"] = self.turns[0].qtype
        rec["answer"] = self.turns[0].answer
        rec["turn_qtypes"] = [qa.qtype for qa in self.turns]
        return rec


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise ConfigError(
            "Pillow was built without FreeType, so text cannot be drawn at a chosen size; "
            "install a Pillow wheel with FreeType support"
        )
    return font


def _background_image(scene: Scene) -> Image.Image:
    bg, w, h = scene.background, scene.width, scene.height
    if bg.kind == "plain":
        return Image.new("RGB", (w, h), bg.colour)
    if bg.kind == "noise":
        # Noise on a grid of k x k cells, scaled up with nearest-neighbour (exact repetition).
        k = bg.noise_block
        cw, ch = -(-w // k), -(-h // k)
        rng = np.random.default_rng(bg.noise_seed)
        noise = rng.integers(-bg.noise, bg.noise + 1, size=(ch, cw, 1), dtype=np.int16)
        cells = np.clip(np.asarray(bg.colour, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(cells).resize((cw * k, ch * k), Image.Resampling.NEAREST)
        return image.crop((0, 0, w, h))
    c1 = np.asarray(bg.colour, dtype=np.float32)
    c2 = np.asarray(bg.colour2, dtype=np.float32)
    if bg.direction == "diagonal":
        t = np.linspace(0.0, 0.5, w, dtype=np.float32)[None, :]
        t = t + np.linspace(0.0, 0.5, h, dtype=np.float32)[:, None]
    elif bg.direction == "horizontal":
        t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    else:
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    ramp = np.rint(c1 + (c2 - c1) * t[:, :, None]).astype(np.uint8)
    image = Image.fromarray(ramp)
    return image if image.size == (w, h) else image.resize((w, h), Image.Resampling.NEAREST)


def _polygon(shape: str, x: int, y: int, s: int) -> list[tuple[float, float]]:
    cx, cy, r = x + (s - 1) / 2, y + (s - 1) / 2, (s - 1) / 2
    if shape == "triangle":
        return [(cx, y), (x + s - 1, y + s - 1), (x, y + s - 1)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = math.radians(-90 + 36 * k)
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    if shape == "hexagon":
        return [(cx + r * math.cos(math.radians(60 * k)), cy + r * math.sin(math.radians(60 * k)))
                for k in range(6)]  # fmt: skip
    if shape == "cross":
        a, b, e = x + s / 3, x + 2 * s / 3, s - 1
        c, d = y + s / 3, y + 2 * s / 3
        return [(a, y), (b, y), (b, c), (x + e, c), (x + e, d), (b, d), (b, y + e), (a, y + e),
                (a, d), (x, d), (x, c), (a, c)]  # fmt: skip
    raise ValueError(f"no polygon for shape {shape!r}")


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: Any = None) -> None:
    """Draw one object in its colour (or in ``fill``: the label maps of ``vision_pretrain``)."""
    fill = COLOURS[obj.colour] if fill is None else fill
    x, y, s = obj.x, obj.y, obj.size
    if obj.shape == "circle":
        draw.ellipse((x, y, x + s - 1, y + s - 1), fill=fill)
    elif obj.shape == "square":
        inset = round(0.08 * s)
        draw.rectangle((x + inset, y + inset, x + s - 1 - inset, y + s - 1 - inset), fill=fill)
    else:
        draw.polygon(_polygon(obj.shape, x, y, s), fill=fill)


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene: background, then objects (exact colours, no antialiasing), then the word."""
    image = _background_image(scene)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj)
    if scene.text is not None:
        _draw_text(draw, scene.text, COLOURS[scene.text.colour])
    return image


def _draw_text(draw: ImageDraw.ImageDraw, text: TextItem, fill: Any) -> None:
    """Draw the word so that its ink box starts at ``(text.x, text.y)``."""
    font = _font(text.font_size)
    left, top, _, _ = font.getbbox(text.word)
    draw.text((text.x - left, text.y - top), text.word, font=font, fill=fill)


# --------------------------------------------------------------------------- scene layout


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _canvas_size(rng: np.random.Generator, resolution: str) -> tuple[int, int]:
    lo, hi = CANVAS_SIDES[resolution]
    w, h = rng.integers(lo, hi + 1, size=2)
    return int(w), int(h)


def _gap(size_a: int, size_b: int) -> int:
    """Clearance that makes "left of" / "above" unambiguous for two boxes."""
    return max(3, round(0.25 * max(size_a, size_b)))


def _holds(box: Sequence[int], ref: Sequence[int], rel: str, gap: int) -> bool:
    """Whether ``box`` is ``rel`` (left/right/above/below) of ``ref`` with ``gap`` to spare."""
    if rel == "left":
        return box[2] + gap <= ref[0]
    if rel == "right":
        return box[0] >= ref[2] + gap
    if rel == "above":
        return box[3] + gap <= ref[1]
    return box[1] >= ref[3] + gap


def _relation(a: SceneObject, b: SceneObject, axis: str) -> str | None:
    """``a``'s clear position relative to ``b`` along ``axis`` ("x" or "y"), or None if unclear."""
    gap = _gap(a.size, b.size)
    for rel in ("left", "right") if axis == "x" else ("above", "below"):
        if _holds(a.bbox, b.bbox, rel, gap):
            return rel
    return None


def _overlaps(a: Sequence[int], b: Sequence[int], pad: int) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def _free_spot(rng, width, height, margin, bw, bh, boxes, pad, accept=None, tries=100):
    if width - 2 * margin < bw or height - 2 * margin < bh:
        return None
    for _ in range(tries):
        x = int(rng.integers(margin, width - margin - bw + 1))
        y = int(rng.integers(margin, height - margin - bh + 1))
        box = (x, y, x + bw, y + bh)
        if accept is not None and not accept(box):
            continue
        if not any(_overlaps(box, other, pad) for other in boxes):
            return box
    return None


def _try_layout(rng, width, height, items, sizes, word, text_colour, font_size, constraints):
    margin = max(4, round(0.03 * min(width, height)))
    boxes: list[tuple[int, int, int, int]] = []
    text = None
    if word is not None:
        left, top, right, bottom = _font(font_size).getbbox(word)
        box = _free_spot(rng, width, height, margin, right - left, bottom - top, boxes, 0)
        if box is None:
            return None
        boxes.append(box)
        text = TextItem(word, text_colour, box[0], box[1], font_size, right - left, bottom - top)
    objects: list[SceneObject] = []
    for i, ((shape, colour), size) in enumerate(zip(items, sizes, strict=True)):
        refs = [(objects[j], rel) for (k, j, rel) in constraints if k == i]

        def accept(box, refs=refs, size=size):
            return all(_holds(box, ref.bbox, rel, _gap(size, ref.size)) for ref, rel in refs)

        pad = max(4, round(0.25 * size))
        box = _free_spot(rng, width, height, margin, size, size, boxes, pad, accept)
        if box is None:
            return None
        boxes.append(box)
        objects.append(SceneObject(shape, colour, box[0], box[1], size))
    return objects, text


def _pick_background(rng: np.random.Generator, colours: list[RGB], resolution: str) -> Background:
    """A background at least ~100 RGB units from every colour drawn on it (when possible)."""

    def contrast(c: Sequence[float]) -> float:
        return min((math.dist(c, o) for o in colours), default=255.0)

    if resolution == "easy":
        return Background("plain", EASY_BACKGROUND, EASY_BACKGROUND, "horizontal", 0, 2, 0)
    kind = "plain" if resolution in _SIMPLE else _pick(rng, BACKGROUNDS)
    best, best_contrast = None, -1.0
    for _ in range(40):
        cand = tuple(int(v) for v in rng.integers(35, 221, size=3))
        if (cc := contrast(cand)) > best_contrast:
            best, best_contrast = cand, cc
        if cc >= 110:
            break
    colour2, direction, noise = best, "horizontal", 0
    if kind == "gradient":
        direction = _pick(rng, ("horizontal", "vertical", "diagonal"))
        for _ in range(20):
            cand = tuple(
                int(v) for v in np.clip(np.asarray(best) + rng.integers(-70, 71, 3), 0, 255)
            )
            mid = [(p + q) / 2 for p, q in zip(best, cand, strict=True)]
            if min(contrast(cand), contrast(mid)) >= min(90.0, best_contrast):
                colour2 = cand
                break
    elif kind == "noise":
        noise = int(rng.integers(6, 16))
    block = 3 if resolution == "high" else 2
    return Background(kind, best, colour2, direction, noise, block, int(rng.integers(2**31)))


def _build_scene(
    rng: np.random.Generator,
    resolution: str,
    items: list[tuple[str, str]],
    *,
    word: str | None = None,
    text_colour: str | None = None,
    constraints: Sequence[tuple[int, int, str]] = (),
) -> Scene:
    """Lay ``items`` ((shape, colour) pairs) out without overlaps on a fresh canvas.

    ``constraints`` are ``(i, j, rel)`` with ``j < i``: object ``i`` is clearly ``rel`` of ``j``.
    Sizes shrink by 10% per failed attempt until everything fits.
    """
    width, height = _canvas_size(rng, resolution)
    min_side = min(width, height)
    if resolution == "easy":  # larger objects and words
        sizes = [min_side * float(rng.uniform(0.22, 0.32)) for _ in items]
        font_size = min_side * float(rng.uniform(0.14, 0.2))
    elif resolution != "high":  # object and font sizes relative to the canvas
        sizes = [min_side * float(rng.uniform(0.12, 0.22)) for _ in items]
        font_size = min_side * float(rng.uniform(0.09, 0.16))
    else:
        sizes = [float(rng.uniform(20, 60)) for _ in items]
        font_size = float(rng.integers(14, 29))
    for attempt in range(60):
        scale = 0.9**attempt
        laid = _try_layout(
            rng, width, height, items,
            [max(12, round(s * scale)) for s in sizes],
            word, text_colour, max(12, round(font_size * scale)), constraints,
        )  # fmt: skip
        if laid is not None:
            break
    else:  # pragma: no cover - the vocabularies are small enough that this cannot happen
        raise RuntimeError(f"cannot lay out {len(items)} objects on {width}x{height}")
    objects, text = laid
    colours = [COLOURS[c] for _, c in items] + ([COLOURS[text_colour]] if word else [])
    return Scene(width, height, _pick_background(rng, colours, resolution), tuple(objects), text)


def _distractors(
    rng: np.random.Generator,
    count: int,
    taken: list[tuple[str, str]],
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
) -> list[tuple[str, str]]:
    """``count`` new (shape, colour) pairs from the allowed ones, distinct from ``taken``."""
    pool = [(s, c) for s in shapes for c in colours if (s, c) not in taken]
    order = rng.permutation(len(pool))[:count]
    return [pool[int(k)] for k in order]


def _n_distractors(rng: np.random.Generator, resolution: str) -> int:
    return int(rng.integers(0, {"high": 6, "simple": 2, "easy": 2}.get(resolution, 4)))


# --------------------------------------------------------------------------- questions


def _ask_colour(rng: np.random.Generator, scene: Scene, shape: str | None = None) -> QA | None:
    counts = Counter(o.shape for o in scene.objects)
    if shape is None:
        options = [s for s in SHAPES if counts[s] == 1]
        if not options:
            return None
        shape = _pick(rng, options)
    obj = next(o for o in scene.objects if o.shape == shape)
    template = _pick(rng, ("What colour is the {}?", "What is the colour of the {}?"))
    return QA("colour", template.format(shape), obj.colour, {"shape": shape})


def _ask_shape(rng: np.random.Generator, scene: Scene, colour: str | None = None) -> QA | None:
    counts = Counter(o.colour for o in scene.objects)
    if colour is None:
        options = [c for c in COLOURS if counts[c] == 1]
        if not options:
            return None
        colour = _pick(rng, options)
    obj = next(o for o in scene.objects if o.colour == colour)
    template = _pick(rng, ("What shape is the {} object?", "Which shape is {}?"))
    return QA("shape", template.format(colour), obj.shape, {"colour": colour})


def _ask_count(
    rng: np.random.Generator, scene: Scene, mode: str | None = None, target: str | None = None
) -> QA | None:
    if not scene.objects:
        return None
    if mode is None:
        mode = _pick(rng, ("shape", "colour", "total"))
        if mode == "shape":
            target = _pick(rng, sorted({o.shape for o in scene.objects}))
        elif mode == "colour":
            target = _pick(rng, sorted({o.colour for o in scene.objects}))
    if mode == "shape":
        n = sum(o.shape == target for o in scene.objects)
        question = f"How many {PLURALS[target]} are there?"
    elif mode == "colour":
        n = sum(o.colour == target for o in scene.objects)
        question = f"How many {target} shapes are there?"
    else:
        n, question = len(scene.objects), "How many shapes are there?"
    return QA("count", question, str(n), {"mode": mode, "target": target})


def _ask_position(
    rng: np.random.Generator, scene: Scene, pair: tuple[int, int, str] | None = None
) -> QA | None:
    objs = scene.objects
    if pair is None:
        options = [(i, j, axis) for i in range(len(objs)) for j in range(len(objs))
                   for axis in ("x", "y") if i != j and _relation(objs[i], objs[j], axis)]  # fmt: skip
        if not options:
            return None
        pair = _pick(rng, options)
    i, j, axis = pair
    a, b = objs[i], objs[j]
    answer = _relation(a, b, axis)
    if answer is None:
        raise ValueError(
            "a position question needs a pair that is clearly separated along the axis"
        )
    if axis == "x":
        question = f"Is the {a.name} to the left or to the right of the {b.name}?"
    else:
        question = f"Is the {a.name} above or below the {b.name}?"
    return QA("position", question, answer, {"a": i, "b": j, "axis": axis})


def _side(obj: SceneObject, scene: Scene, axis: str) -> str | None:
    """The half of the image ``obj`` lies wholly in along ``axis`` (``WHERE_ANSWERS[axis]``), or
    None where it straddles the middle."""
    start, extent = (obj.x, scene.width) if axis == "x" else (obj.y, scene.height)
    if 2 * (start + obj.size) <= extent:
        return WHERE_ANSWERS[axis][0]
    if 2 * start >= extent:
        return WHERE_ANSWERS[axis][1]
    return None


def _ask_where(rng: np.random.Generator, scene: Scene) -> QA | None:
    options = [(i, axis) for i, obj in enumerate(scene.objects) for axis in ("x", "y")
               if _side(obj, scene, axis) is not None]  # fmt: skip
    if not options:
        return None
    return _where_qa(scene, *_pick(rng, options))


def _where_qa(scene: Scene, i: int, axis: str) -> QA:
    """The where question about object ``i`` along ``axis`` (it must lie wholly in one half)."""
    obj, (first, second) = scene.objects[i], WHERE_ANSWERS[axis]
    side = _side(obj, scene, axis)
    if side is None:
        raise ValueError(f"the {obj.name} straddles the middle of the image along {axis}")
    question = f"Is the {obj.name} in the {first} or the {second} half of the image?"
    return QA("where", question, side, {"object": i, "axis": axis})


def _ask_text(rng: np.random.Generator, scene: Scene) -> QA | None:
    if scene.text is None:
        return None
    template = _pick(rng, ("What word is written in the image?", "What does the text say?"))
    return QA("text", template, scene.text.word, {})


def _indefinite(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def describe_scene(scene: Scene) -> str:
    """The caption of a caption scene: 1 object, 2 objects and their relation, or 3 in a row.

    Caption scenes are built so that the relation (2 objects) or the left-to-right order
    (3 objects) is unambiguous; the word, if any, comes last: "a red circle above a blue
    square, with the word apple".
    """
    objs = scene.objects
    if len(objs) == 1:
        text = _indefinite(objs[0].name)
    elif len(objs) == 2:
        b, a = objs
        rel = _relation(a, b, "x") or _relation(a, b, "y") or "and"
        phrase = {"left": "to the left of", "right": "to the right of"}.get(rel, rel)
        text = f"{_indefinite(a.name)} {phrase} {_indefinite(b.name)}"
    else:
        ordered = sorted(objs, key=lambda o: (o.x, o.y))
        names = [_indefinite(o.name) for o in ordered]
        text = "from left to right: " + ", ".join(names[:-1]) + " and " + names[-1]
    if scene.text is not None:
        text += f", with the word {scene.text.word}"
    return text


_ASKERS = {
    "colour": _ask_colour,
    "shape": _ask_shape,
    "count": _ask_count,
    "position": _ask_position,
    "text": _ask_text,
}


# --------------------------------------------------------------------------- sample builders


def _build_colour(rng, res):
    shape, colour = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS))
    items = [(shape, colour)]
    others = [s for s in SHAPES if s != shape]
    items += _distractors(rng, _n_distractors(rng, res), items, shapes=others)
    scene = _build_scene(rng, res, items)
    return scene, _ask_colour(rng, scene, shape)


def _build_shape(rng, res):
    shape, colour = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS))
    items = [(shape, colour)]
    others = [c for c in COLOURS if c != colour]
    items += _distractors(rng, _n_distractors(rng, res), items, colours=others)
    scene = _build_scene(rng, res, items)
    return scene, _ask_shape(rng, scene, colour)


def _build_count(rng, res):
    k = int(rng.integers(1, 5 if res in _SIMPLE else 7))
    mode = _pick(rng, ("shape", "colour", "total"))
    target = None
    if mode == "shape":
        target = _pick(rng, SHAPES)
        colours = rng.permutation(len(COLOURS))[:k]
        items = [(target, tuple(COLOURS)[int(c)]) for c in colours]
        others = [s for s in SHAPES if s != target]
        items += _distractors(rng, _n_distractors(rng, res), items, shapes=others)
    elif mode == "colour":
        target = _pick(rng, tuple(COLOURS))
        items = [(SHAPES[int(s)], target) for s in rng.permutation(len(SHAPES))[:k]]
        others = [c for c in COLOURS if c != target]
        items += _distractors(rng, _n_distractors(rng, res), items, colours=others)
    else:
        items = _distractors(rng, k, [])
    order = rng.permutation(len(items))
    scene = _build_scene(rng, res, [items[int(i)] for i in order])
    return scene, _ask_count(rng, scene, mode, target)


def _build_position(rng, res):
    axis = _pick(rng, ("x", "y"))
    rel = _pick(rng, ("left", "right") if axis == "x" else ("above", "below"))
    items = _distractors(rng, 2, [])  # items[1] is placed `rel` of items[0]
    items += _distractors(rng, int(rng.integers(0, 2 if res in _SIMPLE else 3)), items)
    scene = _build_scene(rng, res, items, constraints=[(1, 0, rel)])
    return scene, _ask_position(rng, scene, (1, 0, axis))


def _build_where(rng, res):
    items = _distractors(rng, 1 + int(rng.integers(0, 2 if res in _SIMPLE else 3)), [])
    for _ in range(50):  # a new layout until some object lies wholly in one half
        scene = _build_scene(rng, res, items)
        qa = _ask_where(rng, scene)
        if qa is not None:
            return scene, qa
    raise RuntimeError(f"no object of {items} ever lay in one half of the image")  # pragma: no cover


def _build_hinted_position(rng, res) -> tuple[Scene, list[QA]]:
    """A position question after two where questions about its two objects along its axis."""
    for _ in range(50):  # new scenes until both objects lie wholly in one half each
        scene, qa = _build_position(rng, res)
        a, b, axis = qa.params["a"], qa.params["b"], qa.params["axis"]
        if all(_side(scene.objects[k], scene, axis) is not None for k in (a, b)):
            return scene, [_where_qa(scene, a, axis), _where_qa(scene, b, axis), qa]
    raise RuntimeError("no position scene ever had both objects in one half each")  # pragma: no cover


def _build_text(rng, res):
    items = _distractors(rng, int(rng.integers(0, 2 if res in _SIMPLE else 4)), [])
    scene = _build_scene(
        rng, res, items, word=_pick(rng, WORDS), text_colour=_pick(rng, tuple(COLOURS))
    )
    return scene, _ask_text(rng, scene)


def _build_caption(rng, res):
    m = int(rng.integers(1, 4))
    items = _distractors(rng, m, [])
    constraints: list[tuple[int, int, str]] = []
    if m == 2:
        constraints = [(1, 0, _pick(rng, ("left", "right", "above", "below")))]
    elif m == 3:
        constraints = [(1, 0, "right"), (2, 1, "right")]
    word = _pick(rng, WORDS) if rng.random() < 0.25 else None
    text_colour = _pick(rng, tuple(COLOURS)) if word else None
    scene = _build_scene(rng, res, items, word=word, text_colour=text_colour,
                         constraints=constraints)  # fmt: skip
    return scene, QA("caption", "Describe the image.", describe_scene(scene), {})


def _build_compare(rng, res):
    mode = _pick(rng, ("shape", "total"))
    top = 6 if res == "high" else 5
    first, second = (
        int(v) for v in rng.choice(top + 1 if mode == "shape" else top, 2, replace=False)
    )
    if mode == "total":
        first, second = first + 1, second + 1
    shape = _pick(rng, SHAPES) if mode == "shape" else None
    scenes = []
    for count in (first, second):
        if mode == "shape":
            items = [(shape, tuple(COLOURS)[int(c)]) for c in rng.permutation(len(COLOURS))[:count]]
            others = [s for s in SHAPES if s != shape]
            n_extra = int(rng.integers(1 if count == 0 else 0, 3))
            items += _distractors(rng, n_extra, items, shapes=others)
        else:
            items = _distractors(rng, count, [])
        order = rng.permutation(len(items))
        scenes.append(_build_scene(rng, res, [items[int(i)] for i in order]))
    what = PLURALS[shape] if shape else "shapes"
    answer = "1" if first > second else "2"
    qa = QA("compare", f"Which image has more {what}? Answer 1 or 2.", answer,
            {"mode": mode, "shape": shape})  # fmt: skip
    return scenes, qa


def _text_only_qa(rng: np.random.Generator) -> QA:
    if rng.random() < 0.5:
        op = _pick(rng, ("+", "-", "times"))
        if op == "+":
            a, b = (int(v) for v in rng.integers(0, 21, 2))
            result = a + b
        elif op == "-":
            a = int(rng.integers(0, 21))
            b = int(rng.integers(0, a + 1))
            result = a - b
        else:
            a, b = (int(v) for v in rng.integers(1, 10, 2))
            result = a * b
        return QA("arith", f"What is {a} {op} {b}?", str(result), {"a": a, "b": b, "op": op})
    word = _pick(rng, WORDS)
    if rng.random() < 0.5:
        return QA("word", f"How many letters are in the word {word}?", str(len(word)),
                  {"word": word, "ask": "length"})  # fmt: skip
    return QA("word", f"What is the first letter of the word {word}?", word[0],
              {"word": word, "ask": "first"})  # fmt: skip


_BUILDERS = {
    "colour": _build_colour,
    "shape": _build_shape,
    "count": _build_count,
    "position": _build_position,
    "text": _build_text,
    "where": _build_where,  # only drawn when where_fraction > 0 (not one of IMAGE_QTYPES)
}


def _given_away(qa: QA, said: list[str]) -> bool:
    """Whether an earlier turn already says ``qa``'s answer: "Is the red star left of ..."
    tells the colour of the star, so "What colour is the star?" after it could be answered
    from the text alone, teaching the model to copy instead of to look (likewise a second
    question about the one word in the image)."""
    if qa.qtype not in ("colour", "shape", "text"):
        return False
    return any(qa.answer in re.findall(r"[a-z]+", text.lower()) for text in said)


def _follow_ups(rng: np.random.Generator, scene: Scene, first: QA, most: int = 2) -> list[QA]:
    wanted = int(rng.integers(1, most + 1))
    said, turns = [first.question, first.answer], []  # the record's text so far
    for k in rng.permutation(len(IMAGE_QTYPES)):
        qa = _ASKERS[IMAGE_QTYPES[int(k)]](rng, scene)
        if qa is not None and qa.question not in said and not _given_away(qa, said):
            said += [qa.question, qa.answer]
            turns.append(qa)
            if len(turns) == wanted:
                break
    return turns


@lru_cache(maxsize=256)
def _schedule_offset(seed: int, split: str) -> float:
    return float(np.random.default_rng([_STREAM_VERSION, seed, _SPLIT_CODE[split], 2**32]).random())


def sample_kind(index: int, split: str, options: SynthOptions) -> str:
    """What sample ``index`` is: a question type of :data:`IMAGE_QTYPES`, ``caption``,
    ``text_only``, ``multi_image``, ``where`` or ``hinted_position``.

    Kinds follow a golden-ratio (low-discrepancy) sequence, so every prefix of a split holds
    each kind in proportion, within a couple of samples.
    """
    u = (_schedule_offset(options.seed, split) + index * _INV_PHI) % 1.0
    rest = 1.0
    for kind, share in options.special_shares():
        if u < share:
            return kind
        u -= share
        rest -= share  # the same subtractions, in the same order, as before: bit-identical kinds
    if options.qtype_weights is None:  # equal shares: the original arithmetic, bit for bit
        k = int(u / rest * len(IMAGE_QTYPES)) if rest > 0 else 0
        return IMAGE_QTYPES[min(k, len(IMAGE_QTYPES) - 1)]
    point = u / rest * sum(options.qtype_weights) if rest > 0 else 0.0
    for qtype, weight in zip(IMAGE_QTYPES, options.qtype_weights, strict=True):
        if point < weight:
            return qtype
        point -= weight
    # rounding left `point` at the very end: the last type that has any share
    return [q for q, w in zip(IMAGE_QTYPES, options.qtype_weights, strict=True) if w > 0][-1]


def generate_sample(
    index: int, split: str = "train", options: SynthOptions | None = None
) -> SyntheticSample:
    """Sample ``index`` of ``split``: its scenes (specifications, see :func:`render_scene`) and
    questions. Pure function of ``(options, split, index)``."""
    options = (options or SynthOptions()).validate()
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"index must be a non-negative integer, got {index!r}")
    rng = np.random.default_rng([_STREAM_VERSION, options.seed, _SPLIT_CODE[split], index])
    res = options.resolution
    kind = sample_kind(index, split, options)
    if kind == "text_only":
        scenes, turns = [], [_text_only_qa(rng)]
    elif kind == "multi_image":
        scenes, qa = _build_compare(rng, res)
        turns = [qa]
    elif kind == "caption":
        scene, qa = _build_caption(rng, res)
        scenes, turns = [scene], [qa]
    elif kind == "hinted_position":
        scene, turns = _build_hinted_position(rng, res)
        scenes = [scene]
        if options.hint_drop > 0:  # no draw at 0: the samples stay those of before the option
            keep = [rng.random() >= options.hint_drop for _ in range(2)]
            turns = [qa for qa, k in zip(turns, [*keep, True], strict=True) if k]
    else:
        scene, qa = _BUILDERS[kind](rng, res)
        scenes, turns = [scene], [qa]
        if rng.random() < options.multi_turn_fraction:
            turns += _follow_ups(rng, scene, qa, options.max_follow_ups)
    return SyntheticSample(f"{split}_{index:06d}", split, index, tuple(scenes), tuple(turns))


# --------------------------------------------------------------------------- writing a dataset


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a directory; choose a directory")
    if (out / "images").exists() and not (out / "images").is_dir():
        raise DataError(f"{out / 'images'} exists and is not a directory; remove it")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            raise DataError(
                f"output directory {out} is not empty ({len(entries)} entries, e.g. "
                f"{entries[0]!r}); choose an empty or new directory, or pass overwrite=True "
                "to replace a previous synthetic dataset there"
            )
        # Annotations go first, so no JSONL ever points at images being replaced.
        for name in _OUTPUT_FILES:
            for path in (out / name, out / (name + ".tmp")):
                path.unlink(missing_ok=True)
        for split in SPLITS:
            folder = out / "images" / split
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.is_file() and _IMAGE_NAME.match(path.name):
                        path.unlink()
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _split_stats(samples_qtypes: list[list[str]], n_images: int, annotation: str) -> dict:
    first = Counter(q[0] for q in samples_qtypes)
    every = Counter(q for qs in samples_qtypes for q in qs)
    kinds = Counter()
    for qs in samples_qtypes:
        if qs[0] in ("arith", "word"):
            kinds["text_only"] += 1
        elif qs[0] == "compare":
            kinds["multi_image"] += 1
        else:
            kinds["single_image"] += 1
            kinds["multi_turn"] += len(qs) > 1
    return {
        "n": len(samples_qtypes),
        "annotation": annotation,
        "images": n_images,
        "qtypes": {q: first[q] for q in QTYPES},
        "turn_qtypes": {q: every[q] for q in QTYPES},
        "kinds": {k: kinds[k] for k in ("single_image", "multi_turn", "text_only", "multi_image")},
    }


def generate_synthetic(
    out_dir: str | os.PathLike,
    n: int,
    *,
    resolution: str = "low",
    seed: int = 0,
    test_fraction: float = 0.1,
    caption_fraction: float = 0.15,
    text_only_fraction: float = 0.05,
    multi_image_fraction: float = 0.05,
    multi_turn_fraction: float = 0.2,
    max_follow_ups: int = 2,
    qtype_weights: Sequence[float] | None = None,
    where_fraction: float = 0.0,
    hinted_position_fraction: float = 0.0,
    hint_drop: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a synthetic visual-QA dataset of ``n`` samples (train + test) into ``out_dir``.

    ``round(n * test_fraction)`` samples (at most ``n - 1``) form the test split. Images are
    written first and each JSONL last through a temporary file and a rename, so an
    interrupted run never leaves annotations that point at missing images. ``out_dir`` must be
    empty or new unless ``overwrite`` (which removes only this generator's files there).
    Returns the statistics also written to ``stats.json``, plus ``out_dir`` and ``elapsed_s``.
    """
    options = SynthOptions(resolution, seed, caption_fraction, text_only_fraction,
                           multi_image_fraction, multi_turn_fraction, max_follow_ups,
                           None if qtype_weights is None else tuple(qtype_weights),
                           where_fraction, hinted_position_fraction, hint_drop).validate()  # fmt: skip
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n (number of samples) must be a positive integer, got {n!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not (0 <= test_fraction < 1)
    ):
        raise ConfigError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    start = time.perf_counter()
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    n_test = min(round(n * test_fraction), n - 1)
    counts = {"train": n - n_test, "test": n_test}
    stats: dict[str, Any] = {"version": SYNTH_VERSION, "resolution": resolution, "seed": seed,
                             "options": asdict(options), "test_fraction": test_fraction}  # fmt: skip
    bar = tqdm(total=n, desc=f"synth {resolution}", unit="sample", disable=not progress)
    lines: dict[str, list[str]] = {}
    try:
        for split in SPLITS:
            lines[split], qtypes, n_images = [], [], 0
            for index in range(counts[split]):
                sample = generate_sample(index, split, options)
                for path, image in zip(sample.image_paths, sample.render(), strict=False):
                    image.save(out / path, format="PNG", compress_level=_PNG_LEVEL)
                    n_images += 1
                lines[split].append(json.dumps(sample.record(), ensure_ascii=False))
                qtypes.append([qa.qtype for qa in sample.turns])
                bar.update(1)
            stats[split] = _split_stats(qtypes, n_images, f"{split}.jsonl")
    finally:
        bar.close()
    for split in SPLITS:
        _write_atomic(out / f"{split}.jsonl", "".join(line + "\n" for line in lines[split]))
    for split in SPLITS:
        meta = {f"synth_{split}": {"root": ".", "annotation": f"{split}.jsonl",
                                   "data_augment": False, "repeat_time": 1,
                                   "length": counts[split]}}  # fmt: skip
        _write_atomic(out / f"meta_{split}.json", json.dumps(meta, indent=2) + "\n")
    stats["qtypes"] = {q: stats["train"]["qtypes"][q] + stats["test"]["qtypes"][q] for q in QTYPES}
    _write_atomic(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    return {**stats, "out_dir": str(out), "elapsed_s": round(time.perf_counter() - start, 3)}
