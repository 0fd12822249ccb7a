"""Training data pipeline: meta/JSONL reading, labels, images, truncation, collation, lengths."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from internvlx import DataError, InternVLXForConditionalGeneration, InternVLXProcessor
from internvlx.data import (
    IGNORE_INDEX,
    InternVLDataset,
    TrainingCollator,
    collate_for_training,
    length_grouped_sampler,
    read_annotation,
    read_meta,
)
from internvlx.synth import generate_synthetic
from internvlx.templates import TEMPLATES, assistant_spans, get_template
from tests.helpers import build_chat_model_dir

# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_chat_model_dir(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def processor(model_dir):
    return InternVLXProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic(out, 60, progress=False)
    return out


def png(width=70, height=50, colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(root: Path, records: list, images: dict | None = None, **meta_extra) -> Path:
    """``root/data.jsonl`` (records: dicts, or raw strings written as they are), the images
    (name -> bytes), and ``root/meta.json`` with relative paths. Returns the meta path."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in (images or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (root / "data.jsonl").write_text("".join(line + "\n" for line in lines))
    meta = {"d": {"root": ".", "annotation": "data.jsonl", "repeat_time": 1, **meta_extra}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root / "meta.json"


def conv(*turns: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]


def labelled_text(processor, item) -> str:
    labels = item["labels"]
    return processor.tokenizer.decode(labels[labels != IGNORE_INDEX])


# ------------------------------------------------------------------------------- meta / JSONL


def test_read_meta_relative_absolute_and_dict(synth, tmp_path):
    (entry,) = read_meta(synth / "meta_train.json")
    assert entry.root == synth / "." and entry.annotation == synth / "train.jsonl"
    assert entry.repeat_time == 1.0 and entry.length == 54 and entry.data_augment is False
    absolute = {"abs": {"root": str(synth), "annotation": str(synth / "train.jsonl"), "max_dynamic_patch": 2}}
    (entry,) = read_meta(absolute)
    assert entry.annotation == synth / "train.jsonl" and entry.tiling == {"max_tiles": 2}
    (entry,) = read_meta({"rel": {"root": ".", "annotation": "train.jsonl"}}, base_dir=synth)
    assert entry.annotation == synth / "train.jsonl"
    for bad in ({}, {"x": {"root": "."}}, {"x": {"root": ".", "annotation": "nope.jsonl"}},
                {"x": {"root": ".", "annotation": "train.jsonl", "repeat_time": -1}}):  # fmt: skip
        with pytest.raises(DataError):
            read_meta(bad, base_dir=synth)
    (tmp_path / "broken.json").write_text("{\n  'x': 1\n}")
    with pytest.raises(DataError, match=r"broken\.json:2"):
        read_meta(tmp_path / "broken.json")


def test_repeat_time_whole_and_fractional(synth, processor):
    records = read_annotation(synth / "train.jsonl")
    n = len(records)

    def build(repeat, seed=0):
        meta = {"s": {"root": str(synth), "annotation": str(synth / "train.jsonl"), "repeat_time": repeat}}
        return InternVLDataset(meta, processor, seed=seed)

    assert len(build(2)) == 2 * n and build(2)._index.tolist() == list(range(n)) * 2
    half = build(0.5)._index.tolist()
    assert len(half) == round(n * 0.5) and len(set(half)) == len(half) and half == sorted(half)
    assert half == build(0.5)._index.tolist()  # deterministic
    assert half != build(0.5, seed=1)._index.tolist()  # seeded
    assert len(build(1.5)) == n + round(n * 0.5)
    assert len(build(0)) == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"conversations": [{"from": "human", "value": "hi"}', r"data\.jsonl:3: invalid JSON"),
        ('{"image": "a.png"}', r"data\.jsonl:3: .*conversations"),
        (json.dumps({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}),
         r"data\.jsonl:3: conversations\[0\] is from 'gpt' but 'human'"),
        (json.dumps({"conversations": conv("q", "a", "b")}), r"data\.jsonl:3: .*end with a 'gpt'"),
        (json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}),
         r"data\.jsonl:3: conversations\[1\] has from='bot'"),
        (json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}),
         r"data\.jsonl:3: .*non-empty string"),
        (json.dumps({"image": "a.png", "conversations": conv("<image> and <image>", "a")}),
         r"data\.jsonl:3: .*2 <image> placeholder\(s\) but the record has 1 image"),
        (json.dumps({"conversations": conv("<image> what?", "a")}), r"data\.jsonl:3: .*1 <image>.*0 image"),
        (json.dumps({"image": 5, "conversations": conv("q", "a")}), r"data\.jsonl:3: 'image' must be"),
        ("[1, 2]", r"data\.jsonl:3: expected a JSON object"),
    ],
    ids=["json", "no-conversations", "starts-gpt", "ends-human", "unknown-from", "empty", "extra-placeholder",
         "text-placeholder", "image-type", "not-object"],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, line, message):
    good = json.dumps({"conversations": conv("q", "a")})
    meta = write_dataset(tmp_path, [good, "", line])  # line 2 is blank (skipped)
    with pytest.raises(DataError, match=message):
        read_annotation(meta.parent / "data.jsonl")


# ------------------------------------------------------------------------------- image paths


@pytest.mark.parametrize("path", ["../x.png", "a/../../x.png", "/etc/passwd", "\\\\server\\x.png", "C:\\x.png"])
def test_image_path_escaping_root_rejected_when_reading(tmp_path, path):
    meta = write_dataset(tmp_path, [json.dumps({"image": path, "conversations": conv("q", "a")})])
    with pytest.raises(DataError, match=r"data\.jsonl:1: image path .*(absolute|leaves the dataset root)"):
        read_annotation(meta.parent / "data.jsonl")


def test_symlink_out_of_root_rejected(tmp_path, processor):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png())
    root = tmp_path / "ds"
    meta = write_dataset(root, [{"image": "ok/../link.png", "conversations": conv("q", "a")}])
    os.symlink(outside, root / "link.png")
    ds = InternVLDataset(meta, processor)
    with pytest.raises(DataError, match=r"data\.jsonl:1: image path 'ok/\.\./link\.png' resolves to .*outside"):
        ds[0]
    with pytest.raises(DataError, match="outside the dataset root"):
        ds.lengths  # noqa: B018  (header reads check the path too)


# ------------------------------------------------------------------------------- labels


def test_labels_only_on_assistant_turns(tmp_path, processor):
    meta = write_dataset(tmp_path, [
        {"conversations": conv("question1", "answer1", "question2", "answer2")},
        {"image": "a.png", "conversations": conv("<image>\nwhat colour?", "answer1", "sure?", "answer2")},
    ], {"a.png": png()})  # fmt: skip
    ds = InternVLDataset(meta, processor)
    for item in (ds[0], ds[1]):
        assert labelled_text(processor, item) == "answer1<|im_end|>answer2<|im_end|>"
        kept = item["labels"] != IGNORE_INDEX
        assert torch.equal(item["labels"][kept], item["input_ids"][kept])
        assert item["labels"][0] == IGNORE_INDEX  # BOS
    # typed image tokens stay text, in prompts and in labels
    literal = InternVLDataset(write_dataset(tmp_path / "lit", [
        {"conversations": conv("say <IMG_CONTEXT></img>", "literal <IMG_CONTEXT> here")}]), processor)  # fmt: skip
    item = literal[0]
    assert processor.image_token_id not in item["input_ids"].tolist()
    assert labelled_text(processor, item) == "literal <IMG_CONTEXT> here<|im_end|>"
    # the image block is never labelled
    context_id = processor.image_token_id
    assert (ds[1]["input_ids"] == context_id).any() and not (ds[1]["labels"] == context_id).any()


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_assistant_spans_every_template(name, processor):
    messages = [{"role": "user", "content": "question1"}, {"role": "assistant", "content": "answer1"},
                {"role": "user", "content": "question2"}, {"role": "assistant", "content": "answer2"}]  # fmt: skip
    full, spans = assistant_spans(name, messages)
    template = get_template(name)
    pieces = [full[a:b] for a, b in spans]
    assert [p.strip().startswith(a) for p, a in zip(pieces, ("answer1", "answer2"), strict=True)] == [True, True]
    assert all(p.rstrip().endswith(template.eos_token) for p in pieces)
    # the tokens labelled are exactly those of the spans
    proc = InternVLXProcessor(processor.tokenizer, processor.settings, template=name)
    sample = proc.encode_conversation(messages)
    labels = torch.tensor(sample.labels)
    decoded = proc.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert decoded.replace(" ", "") == "".join(pieces).replace(" ", "")


def test_system_turn_and_text_only(tmp_path, processor):
    record = {"conversations": [{"from": "system", "value": "Be brief."}, *conv("2+2?", "4")]}
    ds = InternVLDataset(write_dataset(tmp_path, [record]), processor)
    item = ds[0]
    assert item["pixel_values"] is None and item["image_tiles"] == []
    text = processor.tokenizer.decode(item["input_ids"])
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text and "<img>" not in text
    assert labelled_text(processor, item) == "4<|im_end|>"


def test_multi_image_placeholders_added(tmp_path, processor):
    meta = write_dataset(tmp_path, [
        {"image": ["a.png", "b.png"], "conversations": conv("Which is red?", "1")},
        {"image": ["b.png", "a.png"], "conversations": conv("<image> vs <image>: which is red?", "2")},
        {"image": "a.png", "conversations": conv("Colour?", "red")},
    ], {"a.png": png(200, 60), "b.png": png(50, 50, (0, 0, 255))})  # fmt: skip
    ds = InternVLDataset(meta, processor)
    tok = processor.tokenizer
    first = ds[0]
    assert "Image-1: <img>" in tok.decode(first["input_ids"]) and "Image-2: <img>" in tok.decode(first["input_ids"])
    assert len(first["image_tiles"]) == 2 and first["pixel_values"].shape[0] == sum(first["image_tiles"])
    slots = int((first["input_ids"] == processor.image_token_id).sum())
    assert slots == sum(first["image_tiles"]) * processor.settings.input_tokens_per_tile
    assert ds[1]["image_tiles"] == first["image_tiles"][::-1]
    assert "<|im_start|>user\n<img>" in tok.decode(ds[2]["input_ids"])  # "<image>\n" put first
    assert ds.lengths == [len(ds[i]["input_ids"]) for i in range(len(ds))]


def test_tiling_overrides_and_rvtc_policy(tmp_path, processor):
    meta = write_dataset(tmp_path, [{"image": "wide.png", "conversations": conv("q", "a")}], {"wide.png": png(150, 40)})
    tiles = {
        policy: InternVLDataset(meta, processor, policy=policy, max_tiles=6)[0]["image_tiles"][0]
        for policy in ("stock", "length")
    }
    assert tiles["length"] < tiles["stock"]  # RVTC caps a small wide image's grid
    assert InternVLDataset(meta, processor, policy="stock", max_tiles=2)[0]["image_tiles"] == [3]  # 2 + thumbnail
    data = json.loads(meta.read_text())
    data["d"]["max_dynamic_patch"] = 1  # per-entry setting wins
    assert InternVLDataset(data, processor, base_dir=tmp_path, max_tiles=6)[0]["image_tiles"] == [1]


# ------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("lvtc", [False, True], ids=["plain", "lvtc"])
def test_synth_end_to_end_loss(synth, tmp_path, model_dir, lvtc):
    directory = build_chat_model_dir(tmp_path, lvtc=True) if lvtc else model_dir
    proc = InternVLXProcessor.from_pretrained(directory)
    model = InternVLXForConditionalGeneration.from_pretrained(directory)
    if lvtc:
        assert proc.settings.input_tokens_per_tile < proc.settings.tokens_per_tile
    ds = InternVLDataset(synth / "meta_train.json", proc)
    picks = [0, 1, 2, 3]
    picks += [next(i for i in range(len(ds)) if ds.records[i].images == ())]  # text only
    picks += [next(i for i in range(len(ds)) if len(ds.records[i].images) == 2)]  # multi image
    features = [ds[i] for i in picks]
    assert [len(f["input_ids"]) for f in features] == [ds.lengths[i] for i in picks]
    for side in ("right", "left"):
        batch = collate_for_training(features, proc.tokenizer.pad_token_id, side)
        out = model(**batch)
        assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    text_batch = collate_for_training([features[4]], proc.tokenizer.pad_token_id)
    assert text_batch["pixel_values"] is None and torch.isfinite(model(**text_batch).loss)
    assert ds.report()["bad"] == 0


def test_lengths_without_decoding_images(synth, tmp_path, processor, monkeypatch):
    ds = InternVLDataset(synth / "meta_train.json", processor)
    expected = [len(ds[i]["input_ids"]) for i in range(0, len(ds), 5)]
    # the same records without width/height: lengths come from image headers
    lines = []
    for line in (synth / "train.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key in ("width", "height", "width_list", "height_list"):
            rec.pop(key, None)
        lines.append(json.dumps(rec))
    (synth / "bare.jsonl").write_text("\n".join(lines) + "\n")
    bare = InternVLDataset({"b": {"root": str(synth), "annotation": str(synth / "bare.jsonl")}}, processor)

    def no_decoding(*args, **kwargs):
        raise AssertionError("lengths must not decode images")

    monkeypatch.setattr(InternVLXProcessor, "process_image", no_decoding)
    assert bare.lengths[::5] == expected and ds.lengths[::5] == expected
    assert bare.records[0].sizes is None and ds.records[0].sizes is not None


def test_length_grouped_sampler(synth, processor):
    ds = InternVLDataset(synth / "meta_train.json", processor)
    order = list(length_grouped_sampler(ds, 4, generator=torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(len(ds)))
    assert ds.lengths[order[0]] == max(ds.lengths)  # transformers puts the longest batch first
    distributed = length_grouped_sampler(ds, 4, num_replicas=2, rank=1)
    assert len(list(distributed)) == len(ds) // 2


# ------------------------------------------------------------------------------- max_seq_length


def test_max_seq_length_drop_and_truncate(tmp_path, processor):
    long_tail = " ".join(["word"] * 40)
    meta = write_dataset(tmp_path, [
        {"image": "a.png", "conversations": conv("<image>\nDescribe.", long_tail)},
        {"conversations": conv("hi", "hello")},
        {"image": "a.png", "conversations": conv("x " * 30 + "<image>\nDescribe.", "ok")},
    ], {"a.png": png(120, 60)})  # fmt: skip
    full = InternVLDataset(meta, processor, max_seq_length=None)
    lengths = [len(full[i]["input_ids"]) for i in range(3)]
    end_id = processor.tokenizer.convert_tokens_to_ids("</img>")
    first_label = int((full[0]["labels"] != IGNORE_INDEX).nonzero()[0])
    limit = first_label + 5  # inside the answer, after the image block
    assert lengths[0] > limit and lengths[1] < limit
    # a limit that keeps the image but no answer token cannot be used either
    no_answer = InternVLDataset(meta, processor, max_seq_length=first_label, truncation="truncate")
    assert torch.equal(no_answer[0]["input_ids"], full[1]["input_ids"])

    dropped = InternVLDataset(meta, processor, max_seq_length=limit)
    assert torch.equal(dropped[0]["input_ids"], full[1]["input_ids"])  # the next usable record
    assert dropped.report()["dropped_too_long"] == 1 and dropped.report()["substituted"] == 1

    cut = InternVLDataset(meta, processor, max_seq_length=limit, truncation="truncate")
    item = cut[0]
    assert len(item["input_ids"]) == limit and torch.equal(item["input_ids"], full[0]["input_ids"][:limit])
    ids = item["input_ids"].tolist()
    assert ids.count(end_id) == 1  # the image block is whole
    assert ids.count(processor.image_token_id) == item["image_tiles"][0] * processor.settings.input_tokens_per_tile
    assert (item["labels"] != IGNORE_INDEX).any()
    # record 2: its image block ends past the limit, so it cannot be cut and is dropped
    assert lengths[2] > limit and full[2]["input_ids"].tolist().index(end_id) + 1 > limit
    assert torch.equal(cut[2]["input_ids"], cut[0]["input_ids"])  # wraps to record 0 (truncated)
    report = cut.report()
    assert report["dropped_too_long"] == 1 and report["truncated"] >= 1


# ------------------------------------------------------------------------------- bad images


def corrupt_dataset(root: Path, n_good: int, bad: dict[int, bytes | None]) -> Path:
    records, images = [], {}
    for i in range(n_good + len(bad)):
        name = f"img/{i}.png"
        if i in bad:
            if bad[i] is not None:
                images[name] = bad[i]
        else:
            images[name] = png(40 + i, 40)
        records.append({"image": name, "conversations": conv("<image>\nq", f"a{i}")})
    return write_dataset(root, records, images)


def test_corrupt_and_missing_images_skipped_and_counted(tmp_path, processor):
    truncated = png(80, 80)[:60]
    meta = corrupt_dataset(tmp_path, 22, {3: b"", 7: truncated, 12: None})
    ds = InternVLDataset(meta, processor, max_bad_fraction=0.2)
    assert torch.equal(ds[3]["input_ids"], ds[4]["input_ids"])  # the next good record, deterministically
    items = [ds[i] for i in range(len(ds))]
    assert all(it["pixel_values"] is not None for it in items)
    report = ds.report()
    assert report["bad"] == 3 and report["seen"] == 25 and report["substituted"] == 4
    assert any("3.png" in e and "empty" in e for e in report["errors"])
    assert any("data.jsonl:8" in e for e in report["errors"])  # the truncated PNG, by file:line
    assert "3 skipped for bad images" in ds.format_report()
    assert ds.lengths  # a bad header only makes a rough estimate


def test_bad_image_fraction_limit_raises(tmp_path, processor):
    meta = corrupt_dataset(tmp_path, 25, {1: b"", 2: b"not a png"})
    ds = InternVLDataset(meta, processor, max_bad_fraction=0.05)
    for i in range(18):  # 2 bad out of < 20 seen: not judged yet
        ds[i]
    with pytest.raises(DataError, match=r"2 of the 20 records .*max_bad_fraction=0\.05"):
        for i in range(18, len(ds)):
            ds[i]
    lenient = InternVLDataset(meta, processor, max_bad_fraction=0.1)
    for i in range(len(lenient)):
        lenient[i]
    assert lenient.report()["bad"] == 2


def test_all_images_bad(tmp_path, processor):
    meta = corrupt_dataset(tmp_path, 0, {0: b"", 1: b""})
    with pytest.raises(DataError):
        InternVLDataset(meta, processor, max_bad_fraction=1.0)[0]


# ------------------------------------------------------------------------------- collator


def test_collator_padding_and_tiles():
    features = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "pixel_values": torch.zeros(3, 3, 8, 8), "image_tiles": [1, 2]},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "pixel_values": None, "image_tiles": []},
        {"input_ids": [9, 9], "labels": [-100, 9], "pixel_values": torch.ones(2, 3, 8, 8), "image_tiles": [2]},
    ]
    right = collate_for_training(features, pad_token_id=0)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 9, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100], [-100, 9, -100]]
    assert right["pixel_values"].shape == (5, 3, 8, 8) and right["image_tiles"].tolist() == [1, 2, 2]
    assert right["pixel_values"][3:].eq(1).all()  # sample order kept
    left = TrainingCollator(0, "left", pad_to_multiple_of=4)(features)
    assert left["input_ids"].tolist()[1] == [0, 0, 0, 8] and left["labels"].tolist()[1] == [-100, -100, -100, 8]
    text = collate_for_training([features[1]], 0)
    assert text["pixel_values"] is None and text["image_tiles"] is None
    with pytest.raises(ValueError, match="tiles"):
        collate_for_training([{**features[0], "image_tiles": [1]}], 0)
    with pytest.raises(ValueError, match="labels"):
        collate_for_training([{"input_ids": [1]}], 0)


def test_dataset_pickles_and_dataloader(synth, processor):
    ds = InternVLDataset(synth / "meta_train.json", processor, max_tiles=2)
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[0]["input_ids"], ds[0]["input_ids"])
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, collate_fn=TrainingCollator(processor.tokenizer.pad_token_id), num_workers=0
    )
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 3 and batch["labels"].shape == batch["input_ids"].shape
