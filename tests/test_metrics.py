"""Metrics: every case of the authors'-code fixture, the aggregates, the standard variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from internvlx import metrics as M
from internvlx.errors import InternVLXError

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "metrics"


def _load(name: str) -> list[dict]:
    with open(FIXTURE_DIR / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


VQA = _load("vqa_accuracy.jsonl")
RELAXED = _load("relaxed_accuracy.jsonl")
EXACT = _load("exact_match.jsonl")
ANLS = _load("anls.jsonl")
POPE = _load("pope.jsonl")
AGGREGATES = json.loads((FIXTURE_DIR / "aggregates.json").read_text(encoding="utf-8"))


def _ids(cases: list[dict]) -> list[str]:
    return [f"{c['id']}-{c['tag']}" for c in cases]


def test_fixture_sizes():
    assert (len(VQA), len(RELAXED), len(EXACT), len(ANLS), len(POPE)) == (47, 34, 11, 26, 30)


# --- VQA accuracy ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VQA, ids=_ids(VQA))
def test_vqa_fixture_case(case):
    if "error" in case:
        assert case["error"].startswith("AssertionError")
        with pytest.raises(ValueError, match="exactly 10"):
            M.vqa_accuracy(case["pred_answer"], case["gt_answers"])
        return
    assert M.normalize_vqa_answer(case["pred_answer"]) == case["processed_pred"]
    assert [M.normalize_vqa_answer(a) for a in case["gt_answers"]] == case["processed_gts"]
    assert M.vqa_answer_scores(case["gt_answers"]) == case["unique_answer_scores"]
    assert M.vqa_accuracy(case["pred_answer"], case["gt_answers"]) == case["score"]


def test_vqa_aggregate():
    valid = [c for c in VQA if "error" not in c]
    expected = AGGREGATES["vqa_accuracy"]
    assert len(valid) == expected["n"]
    assert len(VQA) - len(valid) == expected["n_error_cases_excluded"]
    out = M.aggregate(
        "vqa_accuracy", [c["pred_answer"] for c in valid], [c["gt_answers"] for c in valid]
    )
    assert out["count"] == expected["n"]
    assert out["mean"] == expected["accuracy"]


def test_vqa_standard_differs_only_on_documented_quirks():
    differing = set()
    for case in VQA:
        if "error" in case:
            continue
        std = M.vqa_accuracy(case["pred_answer"], case["gt_answers"], variant="standard")
        if std != case["score"]:
            differing.add(case["tag"])
    assert differing == {"contraction_capital_Im", "many_periods_32_cap"}


def test_vqa_standard_period_cap_and_contractions():
    many = "yes" + "." * 40
    assert M.normalize_vqa_answer(many) == "yes" + "." * 8
    assert M.normalize_vqa_answer(many, variant="standard") == "yes"
    assert M.vqa_accuracy(many, ["yes"] * 10) == 0.0
    assert M.vqa_accuracy(many, ["yes"] * 10, variant="standard") == 1.0
    assert M.normalize_vqa_answer("Im") == "im"
    assert M.normalize_vqa_answer("Im", variant="standard") == "i'm"
    assert M.vqa_accuracy("Ive", ["i've"] * 10, variant="standard") == 1.0
    # "its" vs "it's" stays unequal in both: "'s" is split off on purpose.
    assert M.vqa_accuracy("its", ["it's"] * 10, variant="standard") == 0.0


def test_vqa_standard_answer_count():
    with pytest.raises(ValueError, match="exactly 10"):
        M.vqa_accuracy("yes", ["yes"] * 9)
    assert M.vqa_accuracy("yes", ["yes"] * 9, variant="standard") == 1.0
    # 2 of 5 answers: leave-one-out over 5 subsets -> (3 * 2/3 + 2 * 1/3) / 5
    assert M.vqa_accuracy("yes", ["yes", "yes", "no", "no", "no"], variant="standard") == (
        pytest.approx((3 * 2 / 3 + 2 * 1 / 3) / 5)
    )
    with pytest.raises(ValueError, match="at least 2"):
        M.vqa_accuracy("yes", ["yes"], variant="standard")


def test_vqa_edge_cases():
    assert M.vqa_accuracy("", ["yes"] * 10) == 0.0
    assert M.vqa_accuracy("Café!", ["café"] * 10) == 1.0
    assert M.vqa_accuracy("北京", ["北京"] * 10) == 1.0
    with pytest.raises(ValueError, match="empty"):
        M.vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="single str"):
        M.vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="must be a str"):
        M.vqa_accuracy(None, ["yes"] * 10)
    with pytest.raises(ValueError, match="unknown variant"):
        M.vqa_accuracy("yes", ["yes"] * 10, variant="evalai")


# --- ChartQA relaxed accuracy ------------------------------------------------------------------


@pytest.mark.parametrize("case", RELAXED, ids=_ids(RELAXED))
def test_relaxed_fixture_case(case):
    assert M.relaxed_accuracy(case["answer"], case["annotation"]) == case["score"]
    # The fixture's non-official column is the documented argument order = our "standard".
    assert (
        M.relaxed_accuracy(case["answer"], case["annotation"], variant="standard")
        == case["score_if_args_were_target_first"]
    )


def test_relaxed_aggregates():
    expected = AGGREGATES["relaxed_accuracy"]
    answers = [c["answer"] for c in RELAXED]
    annotations = [c["annotation"] for c in RELAXED]
    out = M.aggregate("relaxed_accuracy", answers, annotations)
    assert (out["mean"], out["count"]) == (expected["relaxed_accuracy"], expected["n"])
    std = M.aggregate("relaxed_accuracy", answers, annotations, variant="standard")
    assert std["mean"] == expected["NOT_OFFICIAL_relaxed_accuracy_if_args_were_target_first"]


def test_relaxed_standard_measures_against_annotation():
    # |95.2 - 100| / 100 = 4.8% of the model's answer, but 5.04% of the annotation.
    assert M.relaxed_accuracy("100", "95.2") == 1.0
    assert M.relaxed_accuracy("100", "95.2", variant="standard") == 0.0
    # |95 - 100| / 95 = 5.26% of the model's answer, 5% of the annotation.
    assert M.relaxed_accuracy("95", "100") == 0.0
    assert M.relaxed_accuracy("95", "100", variant="standard") == 1.0
    # Tolerance is a parameter.
    assert M.relaxed_accuracy("90", "100", tolerance=0.1, variant="standard") == 1.0


def test_relaxed_edge_cases():
    assert M.relaxed_accuracy("", "5") == 0.0
    assert M.relaxed_accuracy("", "") == 1.0
    assert M.relaxed_accuracy("北京", "北京") == 1.0
    with pytest.raises(ValueError, match="empty"):
        M.relaxed_accuracy("5", [])


# --- exact match -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", EXACT, ids=_ids(EXACT))
def test_exact_match_fixture_case(case):
    assert M.exact_match(case["answer"], case["annotation"]) == case["score"]


def test_exact_match_aggregate_and_edges():
    expected = AGGREGATES["exact_match"]
    out = M.aggregate("exact_match", [c["answer"] for c in EXACT], [c["annotation"] for c in EXACT])
    assert (out["mean"], out["count"]) == (expected["accuracy"], expected["n"])
    std = M.aggregate(
        "exact_match",
        [c["answer"] for c in EXACT],
        [c["annotation"] for c in EXACT],
        variant="standard",
    )
    assert std["mean"] == expected["accuracy"]
    assert M.exact_match("", "x") == 0.0
    assert M.exact_match("Ωmega", "ωMEGA") == 1.0
    with pytest.raises(ValueError, match="empty"):
        M.exact_match("A", [])


# --- ANLS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ANLS, ids=_ids(ANLS))
def test_anls_fixture_case(case):
    assert M.anls(case["answer"], case["gt_answers"]) == case["score"]
    pred = " ".join(case["answer"].strip().lower().split())
    dists = [M.levenshtein(" ".join(g.strip().lower().split()), pred) for g in case["gt_answers"]]
    assert dists == case["levenshtein_on_normalized"]
    secondary = case["secondary_stvqa_anls_textvqa_eval"]
    if isinstance(secondary, str):
        assert secondary.startswith("ZeroDivisionError")
        with pytest.raises(ValueError, match="empty"):
            M.anls(case["answer"], case["gt_answers"], variant="stvqa")
    else:
        assert M.anls(case["answer"], case["gt_answers"], variant="stvqa") == secondary


def test_anls_aggregates():
    expected = AGGREGATES["anls"]
    out = M.aggregate("anls", [c["answer"] for c in ANLS], [c["gt_answers"] for c in ANLS])
    assert (out["mean"], out["count"]) == (expected["anls"], expected["n"])
    ok = [c for c in ANLS if not isinstance(c["secondary_stvqa_anls_textvqa_eval"], str)]
    sec = M.aggregate(
        "anls", [c["answer"] for c in ok], [c["gt_answers"] for c in ok], variant="stvqa"
    )
    secondary = expected["secondary_STVQAANLSEvaluator_eval_pred_list"]
    assert sec["count"] == secondary["n_non_error_cases"]
    assert sec["mean"] == secondary["value_over_non_error_cases"]


@pytest.mark.parametrize(
    ("pred", "gt", "internvl", "standard"),
    [
        ("abxy", "abcd", 0.5, 0.0),  # NL exactly 0.5: kept by the authors, 0 in the paper
        ("abcxy", "abcde", 0.6, 0.6),
        ("  ab  xy   ", "ab", 1 - 3 / 11, 0.0),  # raw length 11 vs normalised 5
        ("abxy", "   abcd   ", 0.8, 0.0),
        ("fine", "ﬁne", 0.5, 0.0),  # "ﬁ".upper() == "FI" lengthens the raw string
        ("", "", 1.0, 1.0),
        ("", "a", 0.0, 0.0),
    ],
)
def test_anls_standard_variant(pred, gt, internvl, standard):
    assert M.anls(pred, [gt]) == pytest.approx(internvl)
    assert M.anls(pred, [gt], variant="standard") == pytest.approx(standard)


def test_anls_edge_cases():
    assert M.anls("hello", "hello") == 1.0  # a single str is one answer
    assert M.anls("北京市", ["北京"]) == pytest.approx(2 / 3)
    assert M.anls("abc", ["zzz", "abd"]) == pytest.approx(2 / 3)  # best answer wins
    assert M.anls("abxy", ["abcd"], threshold=0.6) == 0.0
    with pytest.raises(ValueError, match="empty"):
        M.anls("x", [])
    with pytest.raises(ValueError, match="unknown variant"):
        M.anls("x", ["x"], variant="docvqa")
    assert M.levenshtein("kitten", "sitting") == 3
    assert M.levenshtein("", "abc") == 3


# --- POPE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", POPE, ids=_ids(POPE))
def test_pope_fixture_parse(case):
    assert M.pope_answer(case["text"]) == case["normalized_pred"]
    assert M.pope_answer(case["text"], parser="pope") == case["normalized_pred"]


_POPE_KEYS = {
    "TP": "tp",
    "FP": "fp",
    "TN": "tn",
    "FN": "fn",
    "Accuracy": "accuracy",
    "Precision": "precision",
    "Recall": "recall",
    "F1 score": "f1",
    "Yes ratio": "yes_ratio",
}


@pytest.mark.parametrize("category", list(AGGREGATES["pope"]["per_category"]))
def test_pope_fixture_category(category):
    expected = AGGREGATES["pope"]["per_category"][category]
    cases = [c for c in POPE if c["category"] == category]
    texts, labels = [c["text"] for c in cases], [c["label"] for c in cases]
    if "error" in expected:
        assert expected["error"].startswith("ZeroDivisionError")
        with pytest.raises(ValueError, match="undefined"):
            M.pope_scores(texts, labels)
        std = M.pope_scores(texts, labels, variant="standard")
        assert (std["precision"], std["recall"], std["f1"]) == (0.0, 0.0, 0.0)
        assert std["accuracy"] == 0.5 and std["yes_ratio"] == 0.0
        return
    scores = M.pope_scores(texts, labels)
    for theirs, ours in _POPE_KEYS.items():
        assert scores[ours] == expected[theirs], theirs
    line = ", ".join(
        f"{scores[k]:.3f}" for k in ("f1", "accuracy", "precision", "recall", "yes_ratio")
    )
    assert line == expected["summary_line_f1_acc_prec_rec_yesratio"]
    assert M.pope_scores(texts, labels, variant="standard") == scores
    agg = M.aggregate("pope", texts, labels)
    assert agg["mean"] == expected["Accuracy"] and agg["count"] == len(cases)


@pytest.mark.parametrize(
    ("text", "robust"),
    [
        ("NO", "no"),
        ("Nope", "no"),
        ("no!", "no"),
        ("No?", "no"),
        ("Not really", "no"),
        ("There isn't one", "no"),
        ("None", "no"),
        ("no\nthere is none", "no"),
        ("Yes, no doubt.", "yes"),
        ("Yes. But no.", "yes"),
        ("There are 2.5 dogs, no", "no"),
        ("Yes", "yes"),
        ("There is a dog.", "yes"),
        ("", "yes"),
        ("There isn\u2019t one", "no"),
    ],
)
def test_pope_robust_parser(text, robust):
    assert M.pope_answer(text, parser="robust") == robust


def test_pope_parser_selection_and_errors():
    assert M.pope_answer("whatever", parser=lambda t: "no") == "no"
    with pytest.raises(ValueError, match="must return"):
        M.pope_answer("x", parser=lambda t: "maybe")
    with pytest.raises(ValueError, match="unknown POPE parser"):
        M.pope_answer("x", parser="gpt")
    with pytest.raises(ValueError, match="same length"):
        M.pope_scores(["yes"], ["yes", "no"])
    with pytest.raises(ValueError, match="at least one"):
        M.pope_scores([], [])
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        M.pope_scores(["yes"], ["maybe"])
    # The robust parser changes the numbers of the fixture's "popular" category.
    popular = [c for c in POPE if c["category"] == "popular"]
    robust = M.pope_scores(
        [c["text"] for c in popular], [c["label"] for c in popular], parser="robust"
    )
    assert robust["accuracy"] > AGGREGATES["pope"]["per_category"]["popular"]["Accuracy"]


# --- multiple choice ---------------------------------------------------------------------------

OPTS = {"A": "cat", "B": "dog", "C": "hot dog", "D": "bird"}


@pytest.mark.parametrize(
    ("text", "internvl", "standard"),
    [
        ("B", "B", "B"),
        (" C ", "C", "C"),
        ("b", None, "B"),
        ("(B)", None, "B"),
        ("B. dog", "B", "B"),
        ("**D**", None, "D"),
        ("The answer is B.", None, "B"),
        ("The answer is (C)", None, "C"),
        ("Answer: D", "A", "D"),  # the authors take the first character "A"
        ("A dog is shown", "A", "B"),  # leading article taken as a letter by the authors
        ("It is a bird", "D", "D"),
        ("I think it is a hot dog", "B", "C"),  # "dog" is inside "hot dog"
        ("Dog", "D", "B"),  # the authors take the first character "D"
        ("a cat or a dog", "A", None),  # first option text found vs ambiguous
        ("E", None, None),
        ("", None, None),
        ("It is a 猫", None, None),
    ],
)
def test_extract_choice(text, internvl, standard):
    assert M.extract_choice(text, OPTS) == internvl
    assert M.extract_choice(text, OPTS, variant="standard") == standard


def test_extract_choice_options_list_and_accuracy():
    assert M.extract_choice("C", ["x", "y", "z"]) == "C"
    assert M.extract_choice("the z one", ["x", "y", "z"], variant="standard") == "C"
    assert M.choice_accuracy("B", "B", OPTS) == 1.0
    assert M.choice_accuracy("B", "A", OPTS) == 0.0
    refs = [{"answer": "B", "options": OPTS}, {"answer": "A", "options": OPTS}]
    out = M.aggregate("multiple_choice", ["B", "(A)"], refs, variant="standard")
    assert (out["mean"], out["count"]) == (1.0, 2)
    with pytest.raises(ValueError, match="empty"):
        M.extract_choice("A", [])
    with pytest.raises(ValueError, match="not a str"):
        M.extract_choice("A", "ABCD")


# --- MME ---------------------------------------------------------------------------------------


def _mme(category, image, answer, prediction):
    return {"category": category, "image": image, "answer": answer, "prediction": prediction}


def test_mme_answer_rules():
    assert M.mme_answer("Yes") == "yes"
    assert M.mme_answer("No, it is not.") == "no"
    assert M.mme_answer("not sure") == "no"  # "no" in the first 4 characters
    assert M.mme_answer("Maybe") == "other"
    assert M.mme_answer("I think yes") == "other"  # only the first 4 characters count
    assert M.mme_answer("是") == "yes"
    assert M.mme_answer("不是") == "no"
    assert M.mme_answer("True") == "yes"
    assert M.mme_answer("是", variant="standard") == "other"
    assert M.mme_answer("True", variant="standard") == "other"
    assert M.mme_answer("\nyes") == "yes"
    assert M.mme_answer("\n\n\nyes", variant="standard") == "other"


def test_mme_scores():
    records = [
        _mme("existence", "1.jpg", "Yes", "Yes"),
        _mme("existence", "1.jpg", "No", "No"),  # image 1: both right
        _mme("existence", "2.jpg", "Yes", "Yes"),
        _mme("existence", "2.jpg", "No", "Yes"),  # image 2: one right
        _mme("code_reasoning", "c.png", "Yes", "是"),
        _mme("code_reasoning", "c.png", "No", "Maybe"),
    ]
    out = M.mme_scores(records)
    ex = out["categories"]["existence"]
    assert ex["acc"] == 0.75 and ex["acc_plus"] == 0.5
    assert ex["score"] == pytest.approx(125.0)
    assert (ex["count"], ex["images"], ex["other"]) == (4, 2, 0)
    code = out["categories"]["code_reasoning"]
    assert (code["acc"], code["acc_plus"], code["other"]) == (0.5, 0.0, 1)
    assert out["perception"] == pytest.approx(125.0)
    assert out["cognition"] == pytest.approx(50.0)
    assert out["total"] == pytest.approx(175.0)
    std = M.mme_scores(records, variant="standard")
    assert std["categories"]["code_reasoning"]["acc"] == 0.0  # "是" is "other" there
    assert std["categories"]["existence"] == ex


def test_mme_errors():
    with pytest.raises(ValueError, match="exactly 2"):
        M.mme_scores([_mme("count", "a.jpg", "Yes", "Yes")])
    with pytest.raises(ValueError, match="expected Yes or No"):
        M.mme_scores([_mme("count", "a.jpg", "2", "2"), _mme("count", "a.jpg", "No", "No")])
    with pytest.raises(ValueError, match="lacks 'prediction'"):
        M.mme_scores([{"category": "count", "image": "a.jpg", "answer": "Yes"}])
    with pytest.raises(ValueError, match="at least one"):
        M.mme_scores([])


# --- aggregate and errors ----------------------------------------------------------------------


def test_aggregate_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        M.aggregate("bleu", ["a"], ["a"])
    with pytest.raises(ValueError, match="1 predictions but 2"):
        M.aggregate("exact_match", ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        M.aggregate("anls", [], [])


def test_metric_error_type():
    with pytest.raises(M.MetricInputError) as info:
        M.anls("x", [])
    assert isinstance(info.value, ValueError) and isinstance(info.value, InternVLXError)
