"""Evaluation: readers, task registry, scoring, the resumable batched runner, the CLI and the
lmms-eval plugin, on a tiny random model (garbage predictions, but deterministic)."""

from __future__ import annotations

import base64
import io
import json
import math
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from PIL import Image

import internvlx.evaluation as ev
from internvlx import count_visual_tokens
from internvlx.cli import main as cli
from internvlx.errors import ConfigError, DataError
from internvlx.evaluation import (
    TASKS,
    EvalSample,
    Task,
    evaluate,
    load_for_eval,
    load_vqa_annotations,
    normalize_synth_answer,
    read_image_folder,
    read_internvl_jsonl,
    read_internvl_meta,
    read_predictions,
    read_samples,
    read_vlmevalkit_tsv,
    register_task,
    score_predictions,
)
from internvlx.synth import QTYPES, generate_synthetic


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_for_eval(model_dir, device="cpu")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_synth") / "data"
    generate_synthetic(out, 16, test_fraction=0.5, progress=False)  # 8 test samples
    return out


@pytest.fixture(scope="module")
def reference(loaded, synth_dir, tmp_path_factory):
    """Predictions of one uninterrupted batch-size-1 run over the synthetic test split."""
    model, proc = loaded
    out = tmp_path_factory.mktemp("eval_ref")
    summary = evaluate(model, proc, "synth", synth_dir, batch_size=1, out_dir=out, max_new_tokens=4,
                       progress=False)
    return summary, _preds(out)


def _preds(out: Path) -> list[tuple[str, str, int, int]]:
    return [(r["id"], r["prediction"], r["visual_tokens"], r["tiles"])
            for r in read_predictions(Path(out) / ev.PREDICTIONS_FILE)]


def _png(w: int, h: int, colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG")
    return buf.getvalue()


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path


# -------------------------------------------------------------------------- task registry
def test_task_registry_contents():
    expected = {"synth": "synth_exact", "vqav2": "vqa_accuracy", "textvqa": "vqa_accuracy", "docvqa": "anls",
                "chartqa": "relaxed_accuracy", "pope": "pope", "mmbench": "multiple_choice", "mme": "mme",
                "gqa": "exact_match", "ai2d": "multiple_choice", "scienceqa": "multiple_choice"}
    for name, metric in expected.items():
        assert TASKS[name].metric == metric and TASKS[name].max_new_tokens > 0
    assert TASKS["textvqa"].prompt_suffix == "Answer the question using a single word or phrase."
    assert TASKS["synth"].group_by == ("qtype",)
    sample = EvalSample("1", [], "What is it?", ["B"], {"A": "cat", "B": "dog"}, {"hint": "A pet."})
    assert TASKS["mmbench"].build_prompt(sample) == (
        "A pet.\nWhat is it?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly.")
    assert TASKS["vqav2"].build_prompt(sample) == "What is it? Answer the question using a single word or phrase."
    with pytest.raises(ConfigError, match="already registered"):
        register_task(Task("synth", "exact_match", 4))
    with pytest.raises(ConfigError, match="unknown metric"):
        register_task(Task("new-task", "bleu", 4))
    with pytest.raises(ConfigError, match="unknown task"):
        ev.get_task("nope")


# ------------------------------------------------------------------------------- scoring
def test_scoring_of_each_metric_kind():
    assert normalize_synth_answer("  Blue!! ") == "blue" and normalize_synth_answer("a, b.") == "a b"
    rows = [
        {"id": "1", "prediction": "Blue.", "answers": ["blue"], "meta": {"qtype": "colour"}},
        {"id": "2", "prediction": "circle", "answers": ["square"], "meta": {"qtype": "shape"}},
        {"id": "3", "prediction": "SQUARE", "answers": ["square"], "meta": {"qtype": "shape"}},
    ]
    s = score_predictions("synth", rows)
    assert s["score"] == pytest.approx(2 / 3) and s["count"] == 3 and s["unscored"] == 0
    assert s["breakdown"]["qtype"] == {"colour": {"score": 1.0, "count": 1}, "shape": {"score": 0.5, "count": 2}}

    vqa = score_predictions("vqav2", [{"id": "a", "prediction": "two", "answers": ["2"] * 3 + ["3"] * 7},
                                      {"id": "b", "prediction": "x", "answers": ["x"]}])
    assert vqa["score"] == pytest.approx(0.9) and vqa["unscored"] == 1 and "b:" in vqa["errors"][0]
    std = score_predictions("vqav2", [{"id": "b", "prediction": "x", "answers": ["x", "x"]}], variant="standard")
    assert std["score"] == pytest.approx(1 / 3)

    assert score_predictions("docvqa", [{"id": "1", "prediction": "hello", "answers": ["hello"]}])["score"] == 1.0
    assert score_predictions("chartqa", [{"id": "1", "prediction": "102", "answers": ["100"]}])["score"] == 1.0
    mc = score_predictions("mmbench", [
        {"id": "1", "prediction": "B", "answers": ["B"], "options": {"A": "x", "B": "y"}, "meta": {"category": "c1"}},
        {"id": "2", "prediction": "A", "answers": ["B"], "options": {"A": "x", "B": "y"}, "meta": {"category": "c2"}}])
    assert mc["score"] == 0.5 and set(mc["breakdown"]["category"]) == {"c1", "c2"}

    pope_rows = [{"id": str(i), "prediction": p, "answers": [g], "meta": {"category": c}}
                 for i, (p, g, c) in enumerate([("Yes", "yes", "random"), ("No", "no", "random"),
                                                ("yes", "yes", "popular"), ("yes", "no", "popular")])]
    pope = score_predictions("pope", pope_rows)
    assert pope["breakdown"]["category"]["random"]["f1"] == 1.0
    assert pope["score"] == pytest.approx((1.0 + 2 / 3) / 2) and pope["details"]["accuracy"] == 0.75
    undefined = score_predictions("pope", [{"id": "0", "prediction": "no", "answers": ["yes"]}])
    assert undefined["score"] is None and "undefined" in undefined["errors"][0]

    mme_rows = [{"id": str(i), "prediction": p, "answers": [g], "meta": {"category": "existence", "image_key": k}}
                for i, (p, g, k) in enumerate([("Yes", "Yes", "a"), ("No", "No", "a"), ("Yes", "No", "b"),
                                               ("No", "Yes", "b")])]
    mme = score_predictions("mme", mme_rows)
    assert mme["breakdown"]["category"]["existence"]["score"] == pytest.approx(50 + 50)
    assert mme["score"] == mme["details"]["perception"] == pytest.approx(100)


# ------------------------------------------------------------------------------- readers
def test_read_internvl_eval_jsonl_layouts(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png(40, 30))
    path = _jsonl(tmp_path / "eval.jsonl", [
        {"question_id": 7, "image": "imgs/a.png", "question": "What?", "answer": "cat"},
        {"questionId": "q2", "image": "imgs/a.png", "question": "Where?", "answers": ["here", "there"],
         "question_types": "layout"},
        {"question_id": 9, "image": "imgs/a.png", "text": "Is there a dog?", "label": "no",
         "category": "adversarial"},
        {"question_id": 10, "image": "imgs/a.png", "question": "How many?",
         "answers": [{"answer": "two", "answer_confidence": "yes"}, {"answer": "2"}]},
        {"id": "sq", "image": ["imgs/a.png", "imgs/a.png"], "question": "Pick", "choices": ["red", "blue"],
         "answer": 1},
        {"id": "text-only", "question": "2+2?", "answer": 4},
    ])
    s = read_internvl_jsonl(path)
    assert [x.id for x in s] == ["7", "q2", "9", "10", "sq", "text-only"]
    assert s[0].images == [tmp_path / "imgs" / "a.png"] and s[0].answers == ["cat"]
    assert s[1].answers == ["here", "there"] and s[1].meta["question_types"] == "layout"
    assert s[2].question == "Is there a dog?" and s[2].answers == ["no"] and s[2].meta["category"] == "adversarial"
    assert s[3].answers == ["two", "2"]
    assert len(s[4].images) == 2 and s[4].options == {"A": "red", "B": "blue"} and s[4].answers == ["B"]
    assert s[5].images == [] and s[5].answers == ["4"]
    assert s[0].source == f"{path}:1"
    # images relative to another root
    other = _jsonl(tmp_path / "sub" / "q.jsonl", [{"question_id": 1, "image": "imgs/a.png", "question": "q"}])
    assert read_internvl_jsonl(other, image_root=tmp_path)[0].images == [tmp_path / "imgs" / "a.png"]


def test_read_synthetic_conversation_records_and_meta(synth_dir):
    samples = read_samples(synth_dir)
    records = [json.loads(line) for line in (synth_dir / "test.jsonl").read_text().splitlines()]
    assert [s.id for s in samples] == [r["id"] for r in records]
    for s, r in zip(samples, records, strict=True):
        assert s.question == r["conversations"][0]["value"]  # first human turn
        assert s.answers == [r["answer"]] and s.meta["qtype"] == r["qtype"] and s.meta["qtype"] in QTYPES
        names = r.get("image", [])
        assert len(s.images) == len(names if isinstance(names, list) else [names])
        assert all(Path(p).is_file() and synth_dir in Path(p).parents for p in s.images)
    assert [s.id for s in read_internvl_meta(synth_dir / "meta_test.json")] == [s.id for s in samples]
    assert [s.id for s in read_samples(synth_dir / "meta_test.json")] == [s.id for s in samples]


def test_read_vlmevalkit_tsv_with_base64_and_row_references(tmp_path):
    red, blue = _png(40, 30), _png(20, 50, (0, 0, 255))
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    header = ["index", "image", "question", "hint", "A", "B", "C", "D", "answer", "category", "split"]
    path = _tsv(tmp_path / "MMBench_TEST.tsv", header, [
        ["0", b64(red), "What colour?", "Look closely.", "red", "blue", "green", "", "A", "colour", "dev"],
        ["1", "0", "Is it bright?", "", "yes", "no", "", "", "A", "attribute", "dev"],
        ["2", str([b64(red), b64(blue)]), "Which is blue?", "", "first", "second", "", "", "B", "compare", "dev"],
    ])
    s = read_vlmevalkit_tsv(path)
    assert [x.id for x in s] == ["0", "1", "2"]
    assert s[0].images == [red] and s[0].options == {"A": "red", "B": "blue", "C": "green"}
    assert s[0].answers == ["A"] and s[0].meta["hint"] == "Look closely." and s[0].meta["category"] == "colour"
    assert s[1].images == [red] and s[1].meta["image_key"] == "0" == s[0].meta["image_key"]  # shared image
    assert "hint" not in s[1].meta and s[1].options == {"A": "yes", "B": "no"}
    assert s[2].images == [red, blue]
    assert s[0].source == f"{path}:2"
    assert [x.id for x in read_samples(path)] == ["0", "1", "2"]
    # image_path instead of base64, relative to the TSV's folder
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").write_bytes(red)
    p2 = _tsv(tmp_path / "MME.tsv", ["index", "image_path", "question", "answer", "category"],
              [["0", "img/x.png", "Is it red? Please answer yes or no.", "Yes", "color"]])
    assert read_vlmevalkit_tsv(p2)[0].images == [tmp_path / "img" / "x.png"]


def test_read_plain_image_folder_and_vqa_annotations(tmp_path):
    (tmp_path / "cat.png").write_bytes(_png(30, 30))
    _jsonl(tmp_path / "questions.jsonl", [{"id": "a", "image": "cat.png", "question": "Animal?", "answer": "cat"},
                                          {"id": "b", "image": "cat.png", "question": "Colour?", "answer": "red"}])
    s = read_image_folder(tmp_path)
    assert [(x.id, x.images, x.question, x.answers) for x in s] == [
        ("a", [tmp_path / "cat.png"], "Animal?", ["cat"]), ("b", [tmp_path / "cat.png"], "Colour?", ["red"])]
    assert [x.id for x in read_samples(tmp_path)] == ["a", "b"]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": [
        {"question_id": "a", "answers": [{"answer": "cat"}] * 10},
        {"question_id": "b", "answers": [{"answer": "red"}] * 9 + [{"answer": "pink"}]}]}))
    assert load_vqa_annotations(ann)["b"][-1] == "pink"
    s = read_samples(tmp_path, annotations=ann)
    assert len(s[0].answers) == 10 and s[1].answers[-1] == "pink"
    ann.write_text(json.dumps({"annotations": [{"question_id": "a", "answers": []}]}))
    with pytest.raises(DataError, match="no answers for 1 question"):
        read_samples(tmp_path, annotations=ann)


def test_image_paths_must_stay_inside_the_data_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(_png(10, 10))  # exists, but outside the root
    for bad in ("../secret.png", str(tmp_path / "secret.png"), "imgs/../../secret.png"):
        path = _jsonl(root / "q.jsonl", [{"question_id": 1, "image": bad, "question": "q"}])
        with pytest.raises(DataError, match=r"q\.jsonl:1: image path .* outside the data root"):
            read_internvl_jsonl(path)
    _jsonl(root / "questions.jsonl", [{"id": "x", "image": "../secret.png", "question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="outside the data root"):
        read_image_folder(root)
    tsv = _tsv(root / "b.tsv", ["index", "image_path", "question"], [["0", "../secret.png", "q"]])
    with pytest.raises(DataError, match=r"b\.tsv:2: .*outside the data root"):
        read_vlmevalkit_tsv(tsv)
    # a path that stays inside after normalisation is fine
    (root / "ok.png").write_bytes(_png(10, 10))
    path = _jsonl(root / "q.jsonl", [{"question_id": 1, "image": "sub/../ok.png", "question": "q"}])
    assert read_internvl_jsonl(path)[0].images == [root / "ok.png"]


def test_malformed_rows_name_file_and_line(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(10, 10))
    good = {"question_id": 1, "image": "a.png", "question": "q", "answer": "x"}
    cases = [
        ([good, "{not json"], r"bad\.jsonl:2: invalid JSON"),
        ([good, "", "[1, 2]"], r"bad\.jsonl:3: expected a JSON object"),
        ([{"question_id": 1, "image": "a.png"}], r"bad\.jsonl:1: no question field"),
        ([{"question_id": 1, "image": "missing.png", "question": "q"}], r"bad\.jsonl:1: image 'missing.png' does not exist"),
        ([good, good], r"bad\.jsonl:2: duplicate sample id '1'"),
        ([{"question_id": 1, "question": "q", "answers": [{"text": "x"}]}], r"bad\.jsonl:1: answers\[0\]"),
        ([{"id": 1, "conversations": [{"from": "gpt", "value": "x"}]}], r"bad\.jsonl:1: .*no human turn"),
        ([{"id": 1, "question": "q", "choices": "abc"}], r"bad\.jsonl:1: options"),
    ]
    for rows, message in cases:
        path = _jsonl(tmp_path / "bad.jsonl", rows)
        with pytest.raises(DataError, match=message):
            read_internvl_jsonl(path)
    header = ["index", "image", "question", "answer"]
    ok = ["0", base64.b64encode(_png(8, 8)).decode(), "q", "A"]
    tsv_cases = [
        ([ok, ["1", "!!!not base64!!!", "q", "A"]], r"bad\.tsv:3: the image column is not valid base64"),
        ([ok, ["1", "x", "q"]], r"bad\.tsv:3: 3 columns, the header has 4"),
        ([ok, ["0", ok[1], "q", "A"]], r"bad\.tsv:3: duplicate index '0'"),
        ([ok, ["1", "", "q", "A"]], r"bad\.tsv:3: the image column is empty"),
        ([ok, ["1", "[1, 2", "q", "A"]], r"bad\.tsv:3: .*not a list literal"),
    ]
    for rows, message in tsv_cases:
        with pytest.raises(DataError, match=message):
            read_vlmevalkit_tsv(_tsv(tmp_path / "bad.tsv", header, rows))
    with pytest.raises(DataError, match=r"bad\.tsv:1: the header has no 'index'"):
        read_vlmevalkit_tsv(_tsv(tmp_path / "bad.tsv", ["id", "question"], [["0", "q"]]))
    with pytest.raises(DataError, match="does not exist"):
        read_samples(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataError, match="without questions.jsonl"):
        read_samples(tmp_path)


# -------------------------------------------------------------------------------- runner
def test_undecodable_image_is_reported_with_its_row(loaded, tmp_path):
    model, proc = loaded
    (tmp_path / "good.png").write_bytes(_png(30, 30))
    (tmp_path / "bad.png").write_bytes(_png(30, 30)[:40])  # a truncated PNG
    _jsonl(tmp_path / "questions.jsonl", [{"id": "a", "image": "good.png", "question": "Q?", "answer": "x"},
                                          {"id": "b", "image": "bad.png", "question": "Q?", "answer": "y"}])
    with pytest.raises(DataError, match=r"questions\.jsonl:2.*bad\.png"):
        evaluate(model, proc, "synth", tmp_path, batch_size=1, out_dir=tmp_path / "out", max_new_tokens=2,
                 progress=False)
    assert [r["id"] for r in read_predictions(tmp_path / "out" / ev.PREDICTIONS_FILE)] == ["a"]  # kept


def test_cli_eval_synthetic_end_to_end(model_dir, synth_dir, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["eval", str(model_dir), "--task", "synth", "--data", str(synth_dir), "--out", str(out),
                "--max-new-tokens", "4", "--batch-size", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "synth: synth_exact = " in printed and "over 8 samples" in printed
    summary = json.loads((out / ev.SUMMARY_FILE).read_text())
    assert summary["task"] == "synth" and summary["metric"] == "synth_exact" and summary["count"] == 8
    assert 0.0 <= summary["score"] <= 1.0 and summary["unscored"] == 0
    assert sum(g["count"] for g in summary["breakdown"]["qtype"].values()) == 8
    assert set(summary["breakdown"]["qtype"]) <= set(QTYPES)
    assert summary["run"] == {"new_samples": 8, "resumed_samples": 0, "wall_s": summary["run"]["wall_s"],
                              "batch_size": 3, "limit": None}
    assert summary["seconds_per_sample"] > 0 and summary["settings"]["max_new_tokens"] == 4
    assert summary["model"]["projector"] == "pvtc" and summary["model"]["lvtc"]["enabled"] is False
    assert not list(out.glob(".summary.json.*"))  # the temporary file was renamed away
    # visual tokens: what count_visual_tokens says for every image of every sample
    model, _ = load_for_eval(model_dir, device="cpu")
    rows = read_predictions(out / ev.PREDICTIONS_FILE)
    records = {json.loads(x)["id"]: json.loads(x) for x in (synth_dir / "test.jsonl").read_text().splitlines()}
    total = 0
    for row in rows:
        rec = records[row["id"]]
        sizes = list(zip(rec.get("width_list", [rec.get("width")]), rec.get("height_list", [rec.get("height")]),
                         strict=True)) if "image" in rec else []
        expected = sum(count_visual_tokens(w, h, model.config).llm_input_tokens for w, h in sizes)
        assert row["visual_tokens"] == expected
        total += expected
    vt = summary["visual_tokens"]
    assert vt["llm_input_total"] == total and vt["llm_input_mean"] == pytest.approx(total / 8)
    assert vt["mean_per_layer"] == pytest.approx(vt["llm_input_mean"])  # no LVTC: every layer sees all
    assert [(r["id"], r["prediction"]) for r in rows] == [(i, p) for i, p, *_ in reference[1]]


@pytest.mark.parametrize("batch_size", [3, 4])
def test_predictions_do_not_depend_on_batch_size(loaded, synth_dir, reference, tmp_path, batch_size):
    model, proc = loaded
    evaluate(model, proc, "synth", synth_dir, batch_size=batch_size, out_dir=tmp_path, max_new_tokens=4,
             progress=False)
    assert _preds(tmp_path) == reference[1]  # the reference ran with batch size 1
    assert len(reference[1]) == 8


def test_resume_after_interruption(loaded, synth_dir, reference, tmp_path, monkeypatch):
    model, proc = loaded
    kw = {"max_new_tokens": 4, "progress": False, "out_dir": tmp_path}
    first = evaluate(model, proc, "synth", synth_dir, limit=3, batch_size=2, **kw)
    assert first["count"] == 3 and first["run"]["new_samples"] == 3
    # interrupted during the second batch of the next run: the first batch is on disk
    real, calls = ev._generate_batch, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "_generate_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, proc, "synth", synth_dir, batch_size=2, **kw)
    monkeypatch.setattr(ev, "_generate_batch", real)
    assert len(read_predictions(tmp_path / ev.PREDICTIONS_FILE)) == 5
    with (tmp_path / ev.PREDICTIONS_FILE).open("a") as f:
        f.write('{"id": "test_000005", "predic')  # a line cut off by a crash
    summary = evaluate(model, proc, "synth", synth_dir, batch_size=2, **kw)
    assert summary["run"]["new_samples"] == 3 and summary["run"]["resumed_samples"] == 5
    ids = [r["id"] for r in read_predictions(tmp_path / ev.PREDICTIONS_FILE)]
    assert len(ids) == len(set(ids)) == 8
    assert sorted(_preds(tmp_path)) == sorted(reference[1])
    assert summary["score"] == reference[0]["score"] and summary["count"] == 8
    # nothing left to do: a rerun only rescores
    again = evaluate(model, proc, "synth", synth_dir, batch_size=2, **kw)
    assert again["run"]["new_samples"] == 0 and again["score"] == summary["score"]
    # other settings must not be mixed into the same predictions
    with pytest.raises(ConfigError, match="other settings .*max_new_tokens"):
        evaluate(model, proc, "synth", synth_dir, **{**kw, "max_new_tokens": 5})
    fresh = evaluate(model, proc, "synth", synth_dir, limit=2, overwrite=True, **{**kw, "max_new_tokens": 5})
    assert fresh["count"] == 2 and len(read_predictions(tmp_path / ev.PREDICTIONS_FILE)) == 2


def test_cli_lvtc_switch_and_per_layer_accounting(model_dir, synth_dir, tmp_path):
    out = tmp_path / "lvtc"
    assert cli(["eval", str(model_dir), "--task", "synth", "--data", str(synth_dir), "--out", str(out), "--limit",
                "4", "--max-new-tokens", "2", "--lvtc", "on", "--batch-size", "2", "--no-progress"]) == 0
    s = json.loads((out / ev.SUMMARY_FILE).read_text())
    assert s["model"]["lvtc"]["enabled"] is True and s["model"]["input_tokens_per_tile"] == 1
    vt, per_layer = s["visual_tokens"], s["visual_tokens"]["per_tile_by_layer"]
    assert per_layer[0] == 1 and per_layer[-1] == 4  # compressed shallow layers, full deep layers
    assert vt["llm_input_mean"] == pytest.approx(vt["tiles_mean"])  # one slot per tile
    assert vt["mean_per_layer"] == pytest.approx(vt["tiles_mean"] * sum(per_layer) / len(per_layer))
    assert vt["mean_per_layer"] > vt["llm_input_mean"]


def test_tiling_options_change_the_visual_tokens(loaded, synth_dir):
    model, proc = loaded
    full = evaluate(model, proc, "synth", synth_dir, limit=3, max_new_tokens=1, progress=False)
    small = evaluate(model, proc, "synth", synth_dir, limit=3, max_new_tokens=1, max_tiles=1, progress=False)
    assert small["visual_tokens"]["tiles_mean"] == 1 < full["visual_tokens"]["tiles_mean"]
    budget = evaluate(model, proc, "synth", synth_dir, limit=3, max_new_tokens=1, max_visual_tokens=8,
                      policy="area", progress=False)
    assert budget["visual_tokens"]["llm_input_mean"] <= 8 and budget["predictions"] is None
    assert budget["settings"]["tiling"] == {"policy": "area"}


def test_multiple_choice_task_on_a_tsv(loaded, tmp_path):
    model, proc = loaded
    b64 = base64.b64encode(_png(70, 40)).decode()
    path = _tsv(tmp_path / "mc.tsv", ["index", "image", "question", "A", "B", "answer", "category"],
                [["10", b64, "Which?", "left", "right", "A", "spatial"], ["11", "10", "Colour?", "red", "blue", "A",
                                                                            "colour"]])
    s = evaluate(model, proc, "mmbench", path, batch_size=2, out_dir=tmp_path / "o", max_new_tokens=3,
                 progress=False)
    assert s["metric"] == "multiple_choice" and s["count"] == 2 and set(s["breakdown"]["category"]) == {
        "spatial", "colour"}
    rows = read_predictions(tmp_path / "o" / ev.PREDICTIONS_FILE)
    assert rows[0]["question"] == ("Which?\nA. left\nB. right\n"
                                   "Answer with the option's letter from the given choices directly.")
    assert rows[0]["options"] == {"A": "left", "B": "right"} and rows[1]["visual_tokens"] == rows[0]["visual_tokens"]


def test_runner_argument_errors(loaded, synth_dir, tmp_path):
    model, proc = loaded
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(model, proc, "synth", synth_dir, batch_size=0)
    with pytest.raises(ConfigError, match="limit"):
        evaluate(model, proc, "synth", synth_dir, limit=0)
    with pytest.raises(ConfigError, match="unknown task"):
        evaluate(model, proc, "nope", synth_dir)
    (tmp_path / ev.PREDICTIONS_FILE).write_text('{"id": "x", "prediction": "y"}\n')
    with pytest.raises(ConfigError, match="without run.json"):
        evaluate(model, proc, "synth", synth_dir, out_dir=tmp_path)


def test_cli_reports_data_errors(model_dir, tmp_path, capsys):
    assert cli(["eval", str(model_dir), "--task", "synth", "--data", str(tmp_path / "none.jsonl"),
                "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "none.jsonl does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------- lmms-eval plugin
Request = namedtuple("Request", "args")


def test_lmms_eval_plugin_interface(loaded, synth_dir):
    from internvlx.lmms_eval_plugin import InternVLX

    model, proc = loaded
    lm = InternVLX(model=model, processor=proc, batch_size=2, max_new_tokens=4)
    samples = read_samples(synth_dir)[:3]
    lm.task_dict = {"synth": {"test": {i: s for i, s in enumerate(samples)}}}
    to_visual = lambda doc: [Image.open(p) for p in doc.images]  # noqa: E731
    reqs = [Request((s.question, {"until": ["\n\n"], "max_new_tokens": 4, "temperature": 0}, to_visual, i, "synth",
                     "test")) for i, s in enumerate(samples)]
    got = lm.generate_until(reqs)
    expected = [model.chat(proc, [Image.open(p) for p in s.images], s.question, max_new_tokens=4) for s in samples]
    assert got == expected
    # loglikelihood: a finite log-probability, and "greedy" for the model's own first token
    ll = lm.loglikelihood([Request(("What is this?", "red", to_visual, 0, "synth", "test"))])
    assert len(ll) == 1 and math.isfinite(ll[0][0]) and ll[0][0] <= 0 and isinstance(ll[0][1], bool)
    batch = proc([{"role": "user", "content": "What is this?"}], [Image.open(samples[0].images[0])])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "image_tiles"}).logits[0, -1]
    checked = []
    for token in logits.argsort(descending=True)[:20].tolist():
        text = proc.tokenizer.decode([token])
        if proc.tokenizer(text, add_special_tokens=False)["input_ids"] == [token] and len(checked) < 3:
            logprob, greedy = lm.loglikelihood([Request(("What is this?", text, to_visual, 0, "synth", "test"))])[0]
            assert greedy is (token == int(logits.argmax()))
            assert logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=1e-4)
            checked.append(greedy)
    assert True in checked and False in checked
    with pytest.raises(NotImplementedError):
        lm.generate_until_multi_round(reqs)


def test_lmms_eval_base_class_when_installed(loaded):
    base = pytest.importorskip("lmms_eval.api.model", reason="lmms-eval is not installed")
    from internvlx.lmms_eval_plugin import InternVLX, lmms_eval_manifest

    model, proc = loaded
    assert issubclass(InternVLX, base.lmms)
    lm = InternVLX(model=model, processor=proc)  # every abstract method is implemented
    assert lm.rank == 0 and lm.world_size == 1
    assert lmms_eval_manifest().simple_class_path == "internvlx.lmms_eval_plugin.InternVLX"
