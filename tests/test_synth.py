"""Synthetic visual-QA generator: format, determinism, ground truth and argument checks."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from internvlx.errors import ConfigError, DataError
from internvlx.synth import (
    COLOURS,
    IMAGE_QTYPES,
    PLURALS,
    QTYPES,
    SHAPES,
    WORDS,
    Scene,
    SynthOptions,
    generate_sample,
    generate_synthetic,
    render_scene,
    sample_kind,
)

N_LOW = 240


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def image_list(rec: dict) -> list[str]:
    if "image" not in rec:
        return []
    return rec["image"] if isinstance(rec["image"], list) else [rec["image"]]


@pytest.fixture(scope="module")
def low_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "low"
    stats = generate_synthetic(out, N_LOW, seed=3, progress=False)
    return out, stats


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = generate_synthetic(tmp_path / "a", 30, seed=0, progress=False)
    generate_synthetic(tmp_path / "b", 30, seed=0, progress=False)
    generate_synthetic(tmp_path / "c", 30, seed=1, progress=False)
    ha, hb, hc = (file_hashes(tmp_path / k) for k in "abc")
    assert ha == hb
    assert ha["train.jsonl"] != hc["train.jsonl"]
    images_a = {v for k, v in ha.items() if k.endswith(".png")}
    images_c = {v for k, v in hc.items() if k.endswith(".png")}
    assert not images_a & images_c
    assert a["train"]["n"] == 27 and a["test"]["n"] == 3


def test_samples_do_not_depend_on_n(tmp_path):
    generate_synthetic(tmp_path / "small", 12, test_fraction=0, progress=False)
    generate_synthetic(tmp_path / "large", 20, test_fraction=0, progress=False)
    small = read_jsonl(tmp_path / "small" / "train.jsonl")
    large = read_jsonl(tmp_path / "large" / "train.jsonl")
    assert small == large[:12]
    hs, hl = file_hashes(tmp_path / "small"), file_hashes(tmp_path / "large")
    assert all(hl[k] == v for k, v in hs.items() if k.endswith(".png"))


def test_png_has_no_time_chunk(low_dataset):
    out, _ = low_dataset
    data = next((out / "images" / "train").glob("*.png")).read_bytes()
    assert data.startswith(b"\x89PNG") and b"tIME" not in data


# --------------------------------------------------------------------------- format


def test_records_are_valid_internvl_conversations(low_dataset):
    out, _ = low_dataset
    root = out.resolve()
    seen_ids, kinds = set(), set()
    for split in ("train", "test"):
        for rec in read_jsonl(out / f"{split}.jsonl"):
            assert rec["id"] not in seen_ids
            seen_ids.add(rec["id"])
            images = image_list(rec)
            if len(images) > 1:
                sizes = list(zip(rec["width_list"], rec["height_list"], strict=True))
            else:
                sizes = [(rec["width"], rec["height"]) for _ in images]
            for rel, size in zip(images, sizes, strict=True):
                assert not Path(rel).is_absolute() and rel.startswith(f"images/{split}/")
                path = (out / rel).resolve()
                assert path.is_relative_to(root) and path.is_file()
                with Image.open(path) as im:
                    assert im.size == tuple(size) and im.mode == "RGB"
            conv = rec["conversations"]
            assert len(conv) >= 2 and len(conv) % 2 == 0
            assert [c["from"] for c in conv] == ["human", "gpt"] * (len(conv) // 2)
            humans = [c["value"] for c in conv[::2]]
            assert humans[0].count("<image>") == len(images)
            assert all("<image>" not in h for h in humans[1:])
            if len(images) == 2:
                assert humans[0].startswith("Image-1: <image>\nImage-2: <image>\n")
            elif len(images) == 1:
                assert humans[0].startswith("<image>\n")
            answers = [c["value"] for c in conv[1::2]]
            assert all(a and a == a.strip() for a in answers)
            assert rec["qtype"] in QTYPES and rec["answer"] == answers[0]
            assert rec["turn_qtypes"][0] == rec["qtype"] and len(rec["turn_qtypes"]) == len(answers)
            for q, a in zip(rec["turn_qtypes"], answers, strict=True):
                if q != "caption":
                    assert re.fullmatch(r"[a-z]+|\d+", a), a
            kinds.add(
                "multi_image"
                if len(images) == 2
                else "text_only"
                if not images
                else "multi_turn"
                if len(answers) > 1
                else "single"
            )
    assert kinds == {"multi_image", "text_only", "multi_turn", "single"}
    assert not list(out.rglob("*.tmp"))


def test_meta_files(low_dataset):
    out, stats = low_dataset
    for split in ("train", "test"):
        meta_path = out / f"meta_{split}.json"
        meta = json.loads(meta_path.read_text())
        assert list(meta) == [f"synth_{split}"]
        entry = meta[f"synth_{split}"]
        assert entry["repeat_time"] == 1 and entry["data_augment"] is False
        # root and annotation resolve relative to the meta file's directory
        ann = meta_path.parent / entry["annotation"]
        records = read_jsonl(ann)
        assert entry["length"] == len(records) == stats[split]["n"]
        for rec in records[:20]:
            for rel in image_list(rec):
                assert (meta_path.parent / entry["root"] / rel).is_file()
    assert stats["train"]["n"] + stats["test"]["n"] == N_LOW


def test_stats_file_and_qtype_balance(low_dataset):
    out, stats = low_dataset
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk == {k: v for k, v in stats.items() if k not in ("out_dir", "elapsed_s")}
    opts = SynthOptions()
    for split in ("train", "test"):
        n = stats[split]["n"]
        counts = stats[split]["qtypes"]
        assert sum(counts.values()) == n
        expected = {q: n * (1 - 0.25) / len(IMAGE_QTYPES) for q in IMAGE_QTYPES}
        expected["caption"] = n * opts.caption_fraction
        expected["compare"] = n * opts.multi_image_fraction
        for q, e in expected.items():
            assert abs(counts[q] - e) <= 2 + 0.1 * e, (split, q, counts[q], e)
        assert abs(counts["arith"] + counts["word"] - n * opts.text_only_fraction) <= 2
    assert stats["train"]["kinds"]["multi_turn"] > 0


def test_train_and_test_images_differ(low_dataset):
    out, _ = low_dataset
    h = file_hashes(out / "images")
    train = {v for k, v in h.items() if k.startswith("train/")}
    test = {v for k, v in h.items() if k.startswith("test/")}
    assert train and test and not train & test


# --------------------------------------------------------------------------- ground truth


def check_turn(qa, scenes: tuple[Scene, ...]) -> None:
    """Recompute the answer from the scene specification, independently of the generator."""
    p = qa.params
    if qa.qtype in ("arith", "word"):
        assert not scenes
        if qa.qtype == "arith":
            a, b = p["a"], p["b"]
            assert f"{a} {p['op']} {b}" in qa.question
            want = {"+": a + b, "-": a - b, "times": a * b}[p["op"]]
            assert qa.answer == str(want) and want >= 0
        else:
            assert p["word"] in qa.question
            want = str(len(p["word"])) if p["ask"] == "length" else p["word"][0]
            assert qa.answer == want
        return
    if qa.qtype == "compare":
        assert len(scenes) == 2

        def count(s):
            return sum(o.shape == p["shape"] for o in s.objects) if p["shape"] else len(s.objects)

        c1, c2 = (count(s) for s in scenes)
        assert c1 != c2 and qa.answer == ("1" if c1 > c2 else "2")
        return
    (scene,) = scenes
    objs = scene.objects
    if qa.qtype == "colour":
        matches = [o for o in objs if o.shape == p["shape"]]
        assert len(matches) == 1 and matches[0].colour == qa.answer and p["shape"] in qa.question
    elif qa.qtype == "shape":
        matches = [o for o in objs if o.colour == p["colour"]]
        assert len(matches) == 1 and matches[0].shape == qa.answer and p["colour"] in qa.question
    elif qa.qtype == "count":
        if p["mode"] == "shape":
            n = sum(o.shape == p["target"] for o in objs)
            assert PLURALS[p["target"]] in qa.question
        elif p["mode"] == "colour":
            n = sum(o.colour == p["target"] for o in objs)
            assert p["target"] in qa.question
        else:
            n = len(objs)
        assert qa.answer == str(n)
    elif qa.qtype == "position":
        a, b = objs[p["a"]], objs[p["b"]]
        assert qa.question.index(f"{a.colour} {a.shape}") < qa.question.index(
            f"{b.colour} {b.shape}"
        )
        ax0, ay0, ax1, ay1 = a.bbox
        bx0, by0, bx1, by1 = b.bbox
        clear = {"left": ax1 <= bx0, "right": ax0 >= bx1, "above": ay1 <= by0, "below": ay0 >= by1}
        assert clear[qa.answer]
        assert qa.answer in (("left", "right") if p["axis"] == "x" else ("above", "below"))
    elif qa.qtype == "where":
        o = objs[p["object"]]
        assert f"{o.colour} {o.shape}" in qa.question
        # the object's every pixel lies in the answered half (checked on the drawn pixels)
        drawn = np.argwhere((np.asarray(render_scene(scene)) == COLOURS[o.colour]).all(axis=-1))
        drawn = drawn[(drawn[:, 1] >= o.bbox[0]) & (drawn[:, 1] < o.bbox[2])
                      & (drawn[:, 0] >= o.bbox[1]) & (drawn[:, 0] < o.bbox[3])]
        coord, extent = (drawn[:, 1], scene.width) if p["axis"] == "x" else (drawn[:, 0], scene.height)
        first = qa.answer in ("left", "top")
        assert qa.answer in (("left", "right") if p["axis"] == "x" else ("top", "bottom"))
        assert (2 * (coord + 1) <= extent).all() if first else (2 * coord >= extent).all()
    elif qa.qtype == "text":
        assert scene.text is not None and qa.answer == scene.text.word and qa.answer in WORDS
    elif qa.qtype == "caption":
        assert qa.question == "Describe the image."
        articles = qa.answer.count(" a ") + qa.answer.count(" an ")
        assert articles + qa.answer.startswith(("a ", "an ")) == len(objs)
        for o in objs:
            assert f"{'an' if o.colour == 'orange' else 'a'} {o.colour} {o.shape}" in qa.answer
        if scene.text is not None:
            assert qa.answer.endswith(f"the word {scene.text.word}")
    else:  # pragma: no cover
        raise AssertionError(qa.qtype)


def check_pixels(scene: Scene, image: Image.Image) -> None:
    assert image.size == (scene.width, scene.height)
    arr = np.asarray(image)
    boxes = [o.bbox for o in scene.objects] + ([scene.text.bbox] if scene.text else [])
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height
        # the object is drawn in its exact colour (no antialiasing) at its centre
        assert image.getpixel(o.centre) == COLOURS[o.colour], o
        assert (arr[y0:y1, x0:x1] == COLOURS[o.colour]).all(axis=-1).sum() >= 0.2 * o.size**2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    if scene.text is not None:
        x0, y0, x1, y1 = scene.text.bbox
        crop = arr[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2]
        assert (crop == COLOURS[scene.text.colour]).all(axis=-1).sum() > 0
        assert scene.text.font_size >= 12


@pytest.mark.parametrize("split", ["train", "test"])
def test_answers_match_scene_and_pixels(split):
    opts = SynthOptions(seed=5)
    seen = set()
    for index in range(90):
        sample = generate_sample(index, split, opts)
        for qa in sample.turns:
            check_turn(qa, sample.scenes)
            seen.add(qa.qtype)
        for scene, image in zip(sample.scenes, sample.render(), strict=True):
            check_pixels(scene, image)
        if sample.turns[0].qtype == "colour":
            rgb = COLOURS[sample.turns[0].answer]
            assert (np.asarray(sample.render()[0]) == rgb).all(axis=-1).any()
    assert seen >= {*IMAGE_QTYPES, "caption", "compare"}


def test_answer_distribution_is_not_degenerate():
    opts = SynthOptions(seed=2)
    answers: dict[str, set[str]] = {}
    for index in range(400):
        qa = generate_sample(index, "train", opts).turns[0]
        answers.setdefault(qa.qtype, set()).add(qa.answer)
    assert answers["colour"] == set(COLOURS)
    assert answers["shape"] == set(SHAPES)
    assert answers["count"] >= {str(k) for k in range(1, 7)}
    assert answers["position"] == {"left", "right", "above", "below"}
    assert answers["compare"] == {"1", "2"}
    assert len(answers["text"]) >= 30


def test_sample_kind_follows_fractions():
    opts = SynthOptions(caption_fraction=1.0, text_only_fraction=0, multi_image_fraction=0)
    assert {sample_kind(i, "train", opts) for i in range(50)} == {"caption"}
    opts = SynthOptions(caption_fraction=0, text_only_fraction=0, multi_image_fraction=0)
    assert {sample_kind(i, "test", opts) for i in range(50)} == set(IMAGE_QTYPES)


def test_render_is_a_pure_function_of_the_scene():
    scene = generate_sample(3, "train", SynthOptions(seed=9)).scenes[0]
    assert render_scene(scene).tobytes() == render_scene(scene).tobytes()


# --------------------------------------------------------------------------- high resolution


def test_high_resolution_has_large_images_and_small_objects(tmp_path):
    opts = SynthOptions(resolution="high", seed=1)
    for index in range(40):
        for scene in generate_sample(index, "train", opts).scenes:
            assert max(scene.width, scene.height) > 896 and min(scene.width, scene.height) >= 900
            for o in scene.objects:
                assert o.size <= 60 and o.size <= 0.07 * max(scene.width, scene.height)
            if scene.text is not None:
                assert scene.text.font_size <= 28 and scene.text.height <= 40
    stats = generate_synthetic(
        tmp_path / "hi", 4, resolution="high", test_fraction=0, progress=False
    )
    assert stats["resolution"] == "high"
    for rec in read_jsonl(tmp_path / "hi" / "train.jsonl"):
        for rel in image_list(rec):
            with Image.open(tmp_path / "hi" / rel) as im:
                assert max(im.size) > 896


def test_mixed_resolution_spans_small_and_medium_canvases():
    opts = SynthOptions(resolution="mixed", seed=1)
    sides = []
    for index in range(60):
        for scene in generate_sample(index, "train", opts).scenes:
            assert 112 <= scene.width <= 320 and 112 <= scene.height <= 320
            sides += [scene.width, scene.height]
            for o in scene.objects:  # objects scale with the canvas, as in "low"
                assert o.size <= 0.22 * min(scene.width, scene.height) + 1
    assert min(sides) < 224 and max(sides) > 224


def test_simple_scenes_have_plain_backgrounds_and_few_objects():
    opts = SynthOptions(resolution="simple", seed=2)
    for index in range(80):
        sample = generate_sample(index, "train", opts)
        for scene in sample.scenes:
            assert scene.background.kind == "plain"
            assert 224 <= min(scene.width, scene.height) and max(scene.width, scene.height) <= 448
            limit = {"count": 5, "compare": 7}.get(sample.turns[0].qtype, 3)
            assert len(scene.objects) <= limit


def test_easy_scenes_are_simple_scenes_on_grey_with_larger_objects():
    from internvlx.synth import EASY_BACKGROUND

    opts = SynthOptions(resolution="easy", seed=3)
    for index in range(80):
        sample = generate_sample(index, "train", opts)
        for scene in sample.scenes:
            assert scene.background.kind == "plain" and scene.background.colour == EASY_BACKGROUND
            assert 112 <= min(scene.width, scene.height) and max(scene.width, scene.height) <= 224
            limit = {"count": 5, "compare": 7}.get(sample.turns[0].qtype, 3)
            assert len(scene.objects) <= limit
            pixels = np.asarray(render_scene(scene))
            assert pixels.shape == (scene.height, scene.width, 3)
            assert tuple(pixels[0, 0]) == EASY_BACKGROUND  # layouts keep a margin
    # objects are drawn at 22-32 % of the short side (a layout may shrink them to fit)
    sizes = [o.size / min(s.width, s.height) for i in range(60)
             for s in generate_sample(i, "train", opts).scenes for o in s.objects]
    assert max(sizes) > 0.25 and np.median(sizes) > 0.15


def test_low_resolution_sizes():
    opts = SynthOptions(resolution="low", seed=1)
    for index in range(40):
        for scene in generate_sample(index, "train", opts).scenes:
            assert 224 <= scene.width <= 448 and 224 <= scene.height <= 448


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": -3},
        {"n": 2.5},
        {"n": True},
        {"n": 5, "resolution": "medium"},
        {"n": 5, "seed": -1},
        {"n": 5, "test_fraction": 1.0},
        {"n": 5, "caption_fraction": 0.9, "text_only_fraction": 0.2},
        {"n": 5, "multi_turn_fraction": 1.5},
        {"n": 5, "max_follow_ups": 0},
        {"n": 5, "max_follow_ups": 6},
        {"n": 5, "max_follow_ups": 2.5},
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_synthetic(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_generate_sample_rejects_bad_split_and_index():
    with pytest.raises(ConfigError, match="split"):
        generate_sample(0, "val")
    with pytest.raises(ConfigError, match="index"):
        generate_sample(-1)


def test_non_empty_directory_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        generate_synthetic(out, 5, progress=False)
    generate_synthetic(out, 20, progress=False, overwrite=True)
    generate_synthetic(out, 10, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    referenced = {
        rel for split in ("train", "test") for rec in read_jsonl(out / f"{split}.jsonl")
        for rel in image_list(rec)
    }  # fmt: skip
    on_disk = {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png")}
    assert referenced == on_disk  # stale images of the larger run are gone


def test_output_path_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        generate_synthetic(path, 5, progress=False)


def test_single_sample_goes_to_train(tmp_path):
    stats = generate_synthetic(tmp_path / "one", 1, progress=False)
    assert stats["train"]["n"] == 1 and stats["test"]["n"] == 0
    assert (tmp_path / "one" / "test.jsonl").read_text() == ""
    meta = json.loads((tmp_path / "one" / "meta_test.json").read_text())
    assert meta["synth_test"]["length"] == 0


def test_cli_caption_only_data_makes_room_for_captions(tmp_path, capsys):
    from internvlx.cli import main

    code = main(["data", "synth", "--out", str(tmp_path / "cap"), "--n", "8", "--caption-fraction", "1.0",
                 "--resolution", "simple", "--no-progress"])
    assert code in (0, None)
    records = read_jsonl(tmp_path / "cap" / "train.jsonl") + read_jsonl(tmp_path / "cap" / "test.jsonl")
    assert len(records) == 8 and {r["qtype"] for r in records} == {"caption"}


def test_many_follow_ups_per_image_and_none_given_away():
    """--multi-turn-fraction 1 --max-follow-ups 5: every single-image question gets follow-ups,
    up to one per question type, and none asks what an earlier turn already says."""
    options = SynthOptions(resolution="easy", multi_turn_fraction=1.0, max_follow_ups=5)
    lengths = Counter()
    for i in range(400):
        sample = generate_sample(i, "train", options)
        if sample_kind(i, "train", options) not in IMAGE_QTYPES:
            assert len(sample.turns) == 1
            continue
        lengths[len(sample.turns)] += 1
        assert len(sample.turns) <= 1 + len(IMAGE_QTYPES)  # 1: nothing else to ask (a lone word)
        assert len({qa.question for qa in sample.turns}) == len(sample.turns)
        said: list[str] = []
        for qa in sample.turns:
            check_turn(qa, sample.scenes)  # every follow-up is true of the scene
            if qa.qtype in ("colour", "shape", "text"):
                words = {w for text in said for w in re.findall(r"[a-z]+", text.lower())}
                assert qa.answer not in words, (sample.sample_id, qa)
            said += [qa.question, qa.answer]
    assert lengths[1] < 0.2 * sum(lengths.values()) and max(lengths) >= 4 and sum(k * v for k, v in lengths.items()) / sum(lengths.values()) > 2.2
    # the default keeps at most two follow-ups
    default = [generate_sample(i, "train", SynthOptions(multi_turn_fraction=1.0)) for i in range(200)]
    assert max(len(s.turns) for s in default) == 3


def test_cli_multi_turn_options_reach_the_data(tmp_path):
    from internvlx.cli import main

    out = tmp_path / "mt"
    assert main(["data", "synth", "--out", str(out), "--n", "40", "--resolution", "easy",
                 "--multi-turn-fraction", "1.0", "--max-follow-ups", "4", "--no-progress"]) in (0, None)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["options"]["multi_turn_fraction"] == 1.0 and stats["options"]["max_follow_ups"] == 4
    records = read_jsonl(out / "train.jsonl")
    image_records = [r for r in records if r["qtype"] in IMAGE_QTYPES]
    assert image_records and sum(len(r["turn_qtypes"]) >= 2 for r in image_records) > 0.8 * len(image_records)
    assert max(len(r["turn_qtypes"]) for r in records) <= 5


def test_qtype_weights_none_keeps_every_kind_and_equal_weights_match_it():
    """qtype_weights=None is the original schedule; explicit equal weights pick the same kinds
    except where float rounding sits exactly on a boundary (never in these 3,000 indices)."""
    from internvlx.synth import SynthOptions, sample_kind

    plain = SynthOptions(resolution="easy")
    equal = SynthOptions(resolution="easy", qtype_weights=(1, 1, 1, 1, 1))
    kinds = [sample_kind(i, "train", plain) for i in range(3000)]
    assert kinds == [sample_kind(i, "train", equal) for i in range(3000)]


def test_qtype_weights_set_the_shares_and_zero_removes_a_type():
    from collections import Counter

    from internvlx.synth import IMAGE_QTYPES, SynthOptions, sample_kind

    options = SynthOptions(resolution="easy", caption_fraction=0, text_only_fraction=0, multi_image_fraction=0,
                           qtype_weights=(1, 4, 1, 0, 2))
    counts = Counter(sample_kind(i, "train", options) for i in range(8000))
    assert "position" not in counts and set(counts) == set(IMAGE_QTYPES) - {"position"}
    assert abs(counts["shape"] / 8000 - 0.5) < 0.01 and abs(counts["text"] / 8000 - 0.25) < 0.01
    assert abs(counts["colour"] / 8000 - 0.125) < 0.01


@pytest.mark.parametrize("weights", [(1, 1), (1, 1, 1, 1, -1), (0, 0, 0, 0, 0), (1, 1, 1, 1, True), "shape"])
def test_qtype_weights_reject_malformed(weights):
    from internvlx.errors import ConfigError
    from internvlx.synth import SynthOptions

    with pytest.raises(ConfigError, match="qtype_weights"):
        SynthOptions(qtype_weights=weights).validate()


def test_cli_qtype_weights_parse_and_reach_the_dataset(tmp_path):
    import argparse
    import json

    from internvlx.cli import _qtype_weights, main

    assert _qtype_weights("shape=4,text=0") == (1.0, 4.0, 1.0, 1.0, 0.0)
    for bad in ("shape", "hue=2", "shape=-1", "shape=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="TYPE=WEIGHT"):
            _qtype_weights(bad)
    out = tmp_path / "d"
    assert main(["data", "synth", "--out", str(out), "--n", "40", "--resolution", "easy", "--qtype-weights",
                 "shape=1,colour=0,count=0,position=0,text=0", "--caption-fraction", "0", "--text-only-fraction", "0",
                 "--multi-image-fraction", "0", "--no-progress"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["options"]["qtype_weights"] == [0.0, 1.0, 0.0, 0.0, 0.0]
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert records and {r["qtype"] for r in records} == {"shape"}


def test_where_questions_follow_their_fraction_and_answer_from_the_pixels():
    from collections import Counter

    from internvlx.synth import SynthOptions, sample_kind

    opts = SynthOptions(resolution="easy", seed=2, where_fraction=0.4, multi_turn_fraction=1.0, max_follow_ups=3)
    kinds = Counter(sample_kind(i, "train", opts) for i in range(4000))
    assert abs(kinds["where"] / 4000 - 0.4) < 0.01
    answers = Counter()
    for index in range(120):
        sample = generate_sample(index, "train", opts)
        for qa in sample.turns:
            check_turn(qa, sample.scenes)
        if sample.turns[0].qtype == "where":
            answers[sample.turns[0].answer] += 1
            assert len(sample.turns) > 1  # follow-ups about the same image, as for other types
    assert set(answers) == {"left", "right", "top", "bottom"} and min(answers.values()) >= 5


def test_where_fraction_zero_keeps_the_data_and_the_fractions_must_fit():
    from internvlx.errors import ConfigError
    from internvlx.synth import SynthOptions

    plain, zero = SynthOptions(resolution="easy"), SynthOptions(resolution="easy", where_fraction=0.0)
    for index in range(40):
        assert generate_sample(index, "train", plain) == generate_sample(index, "train", zero)
    with pytest.raises(ConfigError, match="where_fraction"):
        SynthOptions(caption_fraction=0.7, where_fraction=0.4).validate()
    with pytest.raises(ConfigError, match="where_fraction"):
        SynthOptions(where_fraction=-0.1).validate()


def test_cli_where_fraction_reaches_the_dataset(tmp_path):
    import json

    from internvlx.cli import main

    out = tmp_path / "d"
    assert main(["data", "synth", "--out", str(out), "--n", "60", "--resolution", "easy", "--where-fraction", "0.8",
                 "--no-progress"]) == 0
    options = json.loads((out / "stats.json").read_text())["options"]
    assert options["where_fraction"] == 0.8 and options["caption_fraction"] == 0.15
    # captions keep their share; text-only and two-image samples shrink into the 5 % left
    assert options["text_only_fraction"] + options["multi_image_fraction"] == pytest.approx(0.05)
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert sum(r["qtype"] == "where" for r in records) >= 0.7 * len(records)


def test_hinted_position_samples_ask_both_halves_then_the_relation():
    from collections import Counter

    from internvlx.synth import SynthOptions, sample_kind

    opts = SynthOptions(resolution="easy", seed=3, hinted_position_fraction=0.3, where_fraction=0.1,
                        multi_turn_fraction=1.0, max_follow_ups=3)  # fmt: skip
    kinds = Counter(sample_kind(i, "train", opts) for i in range(4000))
    assert abs(kinds["hinted_position"] / 4000 - 0.3) < 0.01 and abs(kinds["where"] / 4000 - 0.1) < 0.01
    derivable, seen = 0, 0
    for index in range(200):
        if sample_kind(index, "train", opts) != "hinted_position":
            continue
        sample = generate_sample(index, "train", opts)
        for qa in sample.turns:
            check_turn(qa, sample.scenes)  # every answer, hints included, recomputed from the scene
        first, second, question = sample.turns
        assert (first.qtype, second.qtype, question.qtype) == ("where", "where", "position")
        axis = question.params["axis"]
        assert first.params == {"object": question.params["a"], "axis": axis}
        assert second.params == {"object": question.params["b"], "axis": axis}
        seen += 1
        if first.answer != second.answer:  # different halves: the hints decide the answer
            derivable += 1
            near = {"left": "left", "right": "right", "top": "above", "bottom": "below"}[first.answer]
            assert question.answer == near
        record = sample.record()
        assert record["turn_qtypes"] == ["where", "where", "position"] and record["qtype"] == "where"
    assert seen >= 45 and derivable >= 0.6 * seen


def test_hinted_position_fraction_zero_keeps_the_data_and_must_fit():
    from internvlx.errors import ConfigError
    from internvlx.synth import SynthOptions

    plain = SynthOptions(resolution="easy", where_fraction=0.2)
    zero = SynthOptions(resolution="easy", where_fraction=0.2, hinted_position_fraction=0.0)
    for index in range(40):
        assert generate_sample(index, "train", plain) == generate_sample(index, "train", zero)
    with pytest.raises(ConfigError, match="hinted_position_fraction"):
        SynthOptions(where_fraction=0.5, hinted_position_fraction=0.4, caption_fraction=0.2).validate()
    with pytest.raises(ConfigError, match="hinted_position_fraction"):
        SynthOptions(hinted_position_fraction=1.5).validate()


def test_cli_hinted_position_fraction_reaches_the_dataset(tmp_path):
    import json

    from internvlx.cli import main

    out = tmp_path / "d"
    assert main(["data", "synth", "--out", str(out), "--n", "50", "--resolution", "easy",
                 "--hinted-position-fraction", "0.6", "--where-fraction", "0.2", "--no-progress"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["options"]["hinted_position_fraction"] == 0.6
    assert stats["options"]["text_only_fraction"] + stats["options"]["multi_image_fraction"] == pytest.approx(0.05)
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    hinted = [r for r in records if r["turn_qtypes"] == ["where", "where", "position"]]
    assert len(hinted) >= 0.5 * len(records)
    assert all(len(r["conversations"]) == 6 and r["conversations"][0]["value"].startswith("<image>\n")
               for r in hinted)  # fmt: skip


def test_hint_drop_fades_the_hints_and_keeps_the_question():
    from collections import Counter

    from internvlx.errors import ConfigError
    from internvlx.synth import SynthOptions, sample_kind

    full = SynthOptions(resolution="easy", seed=4, hinted_position_fraction=0.5)
    faded = SynthOptions(resolution="easy", seed=4, hinted_position_fraction=0.5, hint_drop=0.5)
    shapes = Counter()
    for index in range(160):
        if sample_kind(index, "train", full) != "hinted_position":
            continue
        whole, part = generate_sample(index, "train", full), generate_sample(index, "train", faded)
        assert part.scenes == whole.scenes and part.turns[-1] == whole.turns[-1]  # same scene and question
        assert all(qa in whole.turns[:2] for qa in part.turns[:-1])  # only hints are left out, in order
        shapes[len(part.turns)] += 1
    assert set(shapes) == {1, 2, 3} and shapes[2] > shapes[1] and shapes[2] > shapes[3]
    gone = SynthOptions(resolution="easy", seed=4, hinted_position_fraction=0.5, hint_drop=1.0)
    assert all(len(generate_sample(i, "train", gone).turns) == 1 for i in range(40)
               if sample_kind(i, "train", gone) == "hinted_position")  # fmt: skip
    with pytest.raises(ConfigError, match="hint_drop"):
        SynthOptions(hint_drop=1.2).validate()


def test_special_shares_over_one_are_rejected_naming_every_fraction():
    from internvlx.errors import ConfigError
    from internvlx.synth import SynthOptions

    options = SynthOptions(caption_fraction=0.6, where_fraction=0.6)
    total = sum(share for _, share in options.special_shares())  # the defaults' shares too
    with pytest.raises(ConfigError) as err:
        options.validate()
    message = str(err.value)
    assert total > 1.2 and f"must not exceed 1, got {total:g}" in message
    assert all(f"{kind}_fraction" in message for kind, _ in SynthOptions().special_shares())
