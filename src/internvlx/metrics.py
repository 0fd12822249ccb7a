"""Benchmark metrics: VQA soft accuracy, ANLS, ChartQA relaxed accuracy, exact match,
POPE, MME and multiple-choice letter extraction.

Every metric has a per-sample function returning a float in ``[0, 1]`` (POPE and MME are
dataset-level and return dicts), and :func:`aggregate` turns lists of predictions and
references into ``{"metric", "variant", "mean", "count"}``.

Variants
--------
The InternVL-X authors score with evaluation code that in places departs from the textbook
definition of a metric. The DEFAULT of every function (``variant="internvl"``) reproduces the
authors' numbers exactly (checked against ``shared/fixtures/metrics``, computed by their code);
``variant="standard"`` gives the textbook definition. The differences:

========================  ==============================================  =============================================
metric                    ``"internvl"`` (default: the authors' numbers)  ``"standard"``
========================  ==============================================  =============================================
``vqa_accuracy``          exactly 10 human answers required; at most 32   any number >= 2 of answers; every
                          periods stripped (``re.UNICODE`` passed as the  qualifying period stripped; contraction
                          ``count`` of ``re.sub``); contraction keys      keys matched in lower case (``im`` ->
                          ``Im``/``Ive``/``Id've``/``I'dve`` never match  ``i'm``)
``anls``                  distance on normalised strings, denominator     distance and denominator both on the
                          from the *raw* upper-cased strings; a score of  normalised strings; ``NL >= 0.5`` scores 0
                          exactly 0.5 is kept                             (Biten et al. 2019), so exactly 0.5 -> 0
``relaxed_accuracy``      tolerance relative to the *model's answer*      tolerance relative to the annotation
                          (arguments swapped in the authors' code)        (the target), as in ChartQA/Pix2Struct
``pope_scores``           precision/recall/F1 without guards: raises      undefined precision/recall/F1 -> 0.0
                          when undefined (authors: ZeroDivisionError)
``extract_choice``        ScienceQA ``post_process``: the first           pattern-based: bare letter, "answer is X",
                          character if it is an option letter, else the   leading "X." / "(X)", a lone "(X)", then a
                          first option whose text occurs in the answer    unique whole-word option-text match
``mme_scores``            InternVL's ``post_processing`` of the reply     MME's ``calculation.py`` only
                          (Chinese yes/no, true/false) then MME's rules
========================  ==============================================  =============================================

``anls`` also has ``variant="stvqa"`` (the secondary ``STVQAANLSEvaluator`` that sits unused in
the authors' repository), kept for comparison only. ``exact_match`` has no variant: the
authors' ``strip().lower()`` comparison is the textbook one.

Invalid input (no reference answers, wrong answer count, mismatched lengths, labels that are
not yes/no, an undefined POPE ratio under the default variant) raises
:class:`MetricInputError`, a ``ValueError``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from internvlx.errors import InternVLXError

__all__ = [
    "MetricInputError",
    "VARIANTS",
    "aggregate",
    "anls",
    "choice_accuracy",
    "exact_match",
    "extract_choice",
    "levenshtein",
    "mme_answer",
    "mme_scores",
    "normalize_vqa_answer",
    "pope_answer",
    "pope_scores",
    "relaxed_accuracy",
    "vqa_accuracy",
    "vqa_answer_scores",
]

VARIANTS = ("internvl", "standard")


class MetricInputError(InternVLXError, ValueError):
    """Inputs to a metric are unusable (empty references, wrong lengths, bad labels...)."""


def _check_variant(variant: str, allowed: Sequence[str] = VARIANTS) -> None:
    if variant not in allowed:
        raise MetricInputError(
            f"unknown variant {variant!r}; choose one of {', '.join(map(repr, allowed))}"
        )


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MetricInputError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _answer_list(answers: Any, what: str, *, allow_str: bool = True) -> list[str]:
    """Turn a reference (one str or a list of str) into a non-empty list of str."""
    if isinstance(answers, str):
        if not allow_str:
            raise MetricInputError(
                f"{what} must be a list of answer strings, not a single str ({answers!r})"
            )
        return [answers]
    if answers is None:
        raise MetricInputError(f"{what} is None; give at least one reference answer")
    items = list(answers)
    if not items:
        raise MetricInputError(f"{what} is empty; give at least one reference answer")
    for i, item in enumerate(items):
        _check_text(item, f"{what}[{i}]")
    return items


# ---------------------------------------------------------------------------------------------
# VQA soft accuracy (VQAv2, OK-VQA, TextVQA, VizWiz) with the EvalAI answer normalisation
# ---------------------------------------------------------------------------------------------

# EvalAI's contraction table (a fact list: written-without-apostrophe form -> canonical form).
# Keys are matched against lower-cased words, so the capitalised keys are dead in the
# authors' code; the "standard" variant matches them in lower case.
# fmt: off
_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
# fmt: on
_CONTRACTIONS_LOWER: dict[str, str] = {k.lower(): v.lower() for k, v in _CONTRACTIONS.items()}

# Number words zero..ten (and "none") become digits; "eleven" and above are left alone.
# fmt: off
_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
# fmt: on
_ARTICLES = frozenset({"a", "an", "the"})
# Removed when touching a space somewhere in the answer, otherwise replaced by a space.
# fmt: off
_VQA_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
    "`", ",", "?", "!",
)
# fmt: on
# A period is stripped unless a digit follows it. (EvalAI's pattern begins with "(?!<=\d)", a
# mistyped lookbehind that is a no-op lookahead, so a preceding digit does not protect it.)
_VQA_PERIOD = re.compile(r"\.(?!\d)")
_VQA_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
# The authors' (and EvalAI's) code passes re.UNICODE (== 32) where re.sub expects ``count``.
_VQA_PERIOD_CAP = int(re.UNICODE)


def normalize_vqa_answer(text: str, *, variant: str = "internvl") -> str:
    """Normalise an answer as EvalAI's VQA answer processor does.

    Steps: lower-case; drop ``,`` and ``?``; ``'s`` -> ``' 's'``; newlines/tabs -> spaces; strip;
    each punctuation mark of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted if it
    touches a space anywhere in the text and otherwise turned into a space (``hot-dog`` ->
    ``hot dog``); periods not followed by a digit are deleted (``U.S.A.`` -> ``usa``,
    ``3.`` -> ``3``, ``.5`` kept); number words ``none``/``zero``..``ten`` become digits;
    the articles ``a``/``an``/``the`` are removed wherever they occur; contractions written
    without apostrophe are restored (``dont`` -> ``don't``); whitespace is collapsed.

    ``variant="internvl"`` (default) keeps the authors' quirks: at most 32 periods are
    removed, and the table keys ``Im``, ``Ive``, ``Id've``, ``I'dve`` never match.
    ``variant="standard"`` removes every such period and matches those keys in lower case.
    """
    _check_variant(variant)
    _check_text(text, "answer")
    s = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    s = s.replace("\n", " ").replace("\t", " ").strip()

    # Punctuation. The "touches a space" test looks at the text before any replacement.
    source = s
    delete_all = _VQA_DIGIT_COMMA_DIGIT.search(source) is not None  # unreachable: commas gone
    for mark in _VQA_PUNCTUATION:
        if delete_all or (mark + " ") in source or (" " + mark) in source:
            s = s.replace(mark, "")
        else:
            s = s.replace(mark, " ")
    s = _VQA_PERIOD.sub("", s, count=_VQA_PERIOD_CAP if variant == "internvl" else 0)

    contractions = _CONTRACTIONS if variant == "internvl" else _CONTRACTIONS_LOWER
    words = []
    for word in s.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(contractions.get(word, word))
    return " ".join(words)


def vqa_answer_scores(answers: Sequence[str], *, variant: str = "internvl") -> dict[str, float]:
    """Soft score of every distinct normalised human answer.

    For an answer ``a``, each human answer in turn is left out and ``min(1, #matches / 3)`` is
    taken over the remaining ones; the score is the mean over these leave-one-out subsets
    (3 of 10 matching -> 0.9, 2 -> 0.6, 1 -> 0.3). ``variant="internvl"`` requires exactly 10
    answers (the authors' code asserts it); ``"standard"`` takes any number >= 2.
    """
    _check_variant(variant)
    raw = _answer_list(answers, "answers", allow_str=False)
    if variant == "internvl" and len(raw) != 10:
        raise MetricInputError(
            f"VQA accuracy needs exactly 10 human answers, got {len(raw)} (the authors' "
            "evaluator asserts this); use variant='standard' for other counts"
        )
    if len(raw) < 2:
        raise MetricInputError(
            "VQA soft accuracy is a leave-one-out average and needs at least 2 human answers, "
            f"got {len(raw)}; use exact_match for a single reference"
        )
    processed = [normalize_vqa_answer(a, variant=variant) for a in raw]
    counts = Counter(processed)
    scores: dict[str, float] = {}
    for candidate in counts:
        per_subset = []
        for held_out in processed:
            matches = counts[candidate] - (1 if held_out == candidate else 0)
            per_subset.append(min(1.0, matches / 3))
        scores[candidate] = sum(per_subset) / len(per_subset)
    return scores


def vqa_accuracy(prediction: str, answers: Sequence[str], *, variant: str = "internvl") -> float:
    """VQAv2-style soft accuracy of one prediction against the human answers.

    Both sides are normalised with :func:`normalize_vqa_answer`; the score is the
    leave-one-out ``min(1, #matches/3)`` average of :func:`vqa_answer_scores` for the normalised
    prediction, 0.0 if no human gave it. Variants: see :func:`vqa_answer_scores` and
    :func:`normalize_vqa_answer`.
    """
    _check_text(prediction, "prediction")
    scores = vqa_answer_scores(answers, variant=variant)
    return float(scores.get(normalize_vqa_answer(prediction, variant=variant), 0.0))


# ---------------------------------------------------------------------------------------------
# ANLS (DocVQA, InfographicVQA)
# ---------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (unit-cost insertions, deletions, substitutions) between code points."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(
    prediction: str,
    answers: str | Sequence[str],
    *,
    threshold: float = 0.5,
    variant: str = "internvl",
) -> float:
    """Average Normalised Levenshtein Similarity of one prediction (best over the answers).

    Both strings are stripped, lower-cased and whitespace-collapsed before the edit distance.

    * ``variant="internvl"`` (default, the DocVQA/InfoVQA ``evaluate_method`` the authors use):
      the distance is divided by ``max(len(answer.upper()), len(prediction.upper()))`` of the
      RAW strings (so surrounding or repeated whitespace raises the score and ``ß``/``ﬁ``
      count twice); ``1 - min NL`` is set to 0 when below ``threshold``, so exactly 0.5 is
      kept. Two empty strings score 1.0.
    * ``variant="standard"`` (Biten et al., 2019): the denominator is the longer normalised
      string, and a normalised distance ``NL >= threshold`` scores 0 (exactly 0.5 -> 0).
    * ``variant="stvqa"`` (the unused ``STVQAANLSEvaluator``, for comparison): only
      ``lower().strip()``, denominator from those strings, ``iou >= threshold`` kept; two
      empty strings are undefined there and raise :class:`MetricInputError`.
    """
    _check_variant(variant, (*VARIANTS, "stvqa"))
    _check_text(prediction, "prediction")
    refs = _answer_list(answers, "answers")

    if variant == "internvl":
        pred_norm = _collapse(prediction)
        ratios = []
        for ref in refs:
            dist = levenshtein(_collapse(ref), pred_norm)
            length = max(len(ref.upper()), len(prediction.upper()))
            ratios.append(0.0 if length == 0 else float(dist) / float(length))
        score = 1 - min(ratios)
        return 0.0 if score < threshold else float(score)

    if variant == "standard":
        pred_norm = _collapse(prediction)
        best = 0.0
        for ref in refs:
            ref_norm = _collapse(ref)
            length = max(len(ref_norm), len(pred_norm))
            nl = 0.0 if length == 0 else levenshtein(ref_norm, pred_norm) / length
            best = max(best, 1 - nl if nl < threshold else 0.0)
        return float(best)

    pred_s = prediction.lower().strip()
    best = 0.0
    for ref in refs:
        ref_s = ref.lower().strip()
        length = max(len(pred_s), len(ref_s))
        if length == 0:
            raise MetricInputError(
                "ANLS variant 'stvqa' is undefined for an empty prediction and an empty answer "
                "(the STVQA evaluator divides by zero); use variant='internvl' or 'standard'"
            )
        iou = 1 - levenshtein(pred_s, ref_s) / length
        best = max(best, iou if iou >= threshold else 0.0)
    return float(best)


# ---------------------------------------------------------------------------------------------
# ChartQA relaxed accuracy
# ---------------------------------------------------------------------------------------------


def _chartqa_float(text: str) -> float | None:
    """Python ``float()`` semantics, with a trailing ``%`` (all of them) meaning /100."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def _relaxed_match(target: str, prediction: str, tolerance: float) -> bool:
    prediction_value = _chartqa_float(prediction)
    target_value = _chartqa_float(target)
    if prediction_value is not None and target_value:
        return abs(prediction_value - target_value) / abs(target_value) <= tolerance
    return prediction.lower() == target.lower()


def relaxed_accuracy(
    prediction: str,
    annotation: str | Sequence[str],
    *,
    tolerance: float = 0.05,
    variant: str = "internvl",
) -> float:
    """ChartQA relaxed accuracy: 1.0 if a number is within ``tolerance`` (5%), else exact.

    Numbers are parsed with Python's ``float()`` (so ``1e3``, ``1_000``, ``٣``, ``nan``, ``inf``
    parse; ``1,000`` and ``$5`` do not); a trailing ``%`` divides by 100 (``45%`` == ``0.45``).
    When the reference value is not a number or is zero, the strings are compared
    case-insensitively. Only the model answer is stripped. A list annotation means "any of".

    * ``variant="internvl"`` (default): the authors call ``relaxed_correctness(answer.strip(),
      annotation)`` against its ``(target, prediction)`` signature, so the tolerance is
      relative to the MODEL's answer and the zero / not-a-number fallback tests the model's
      answer (answer ``100`` vs annotation ``95.2`` -> 1.0; ``95`` vs ``100`` -> 0.0).
    * ``variant="standard"``: the annotation is the target (``|pred - ann| / |ann| <= 5%``).
    """
    _check_variant(variant)
    _check_text(prediction, "prediction")
    refs = _answer_list(annotation, "annotation")
    answer = prediction.strip()
    if variant == "internvl":
        hits = [_relaxed_match(answer, ref, tolerance) for ref in refs]
    else:
        hits = [_relaxed_match(ref, answer, tolerance) for ref in refs]
    return 1.0 if any(hits) else 0.0


# ---------------------------------------------------------------------------------------------
# Exact match (OCR-VQA, AI2D)
# ---------------------------------------------------------------------------------------------


def exact_match(
    prediction: str, annotation: str | Sequence[str], *, variant: str = "internvl"
) -> float:
    """1.0 if ``prediction.strip().lower()`` equals some ``annotation.strip().lower()``.

    Nothing else is normalised (``A.`` != ``A``, inner spaces count, ``straße`` != ``STRASSE``).
    The authors' rule is the textbook one, so ``variant`` ("internvl" or "standard") is
    accepted for uniformity and changes nothing.
    """
    _check_variant(variant)
    _check_text(prediction, "prediction")
    refs = _answer_list(annotation, "annotation")
    pred = prediction.strip().lower()
    return 1.0 if any(pred == ref.strip().lower() for ref in refs) else 0.0


# ---------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------

_ROBUST_SENTENCE_END = re.compile(r"[!?\n]|(?<!\d)\.|\.(?!\d)")
_ROBUST_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_ROBUST_YES_FIRST = frozenset({"yes", "yeah", "yep", "yup", "true", "correct"})
_ROBUST_NO_FIRST = frozenset({"no", "nope", "not", "false", "none", "nothing", "never"})
# fmt: off
_ROBUST_NEGATIONS = frozenset({
    "no", "not", "nope", "none", "nothing", "never", "neither", "nor", "cannot", "can't",
    "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "didn't", "hasn't",
    "haven't",
})
# fmt: on


def _pope_internvl(text: str) -> str:
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _pope_robust(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).replace("\u2019", "'").strip().lower()
    first = _ROBUST_SENTENCE_END.split(t, maxsplit=1)[0]
    words = _ROBUST_WORD.findall(first)
    if not words:
        return "yes"
    if words[0] in _ROBUST_YES_FIRST:
        return "yes"
    if words[0] in _ROBUST_NO_FIRST:
        return "no"
    return "no" if any(w in _ROBUST_NEGATIONS for w in words) else "yes"


_POPE_PARSERS: dict[str, Callable[[str], str]] = {
    "internvl": _pope_internvl,
    "pope": _pope_internvl,
    "robust": _pope_robust,
}


def pope_answer(text: str, *, parser: str | Callable[[str], str] = "internvl") -> str:
    """Map a free-form POPE reply to ``"yes"`` or ``"no"``.

    * ``parser="internvl"`` (default; alias ``"pope"``, it is POPE's own rule, used unchanged
      by LLaVA and the authors): keep the text before the first ``.`` (``2.5`` splits too),
      drop commas, split on single spaces; "no" iff a token is exactly ``No``, ``no`` or
      ``not``, otherwise "yes". So ``NO``, ``Nope``, ``no!``, ``No?``, ``isn't``, ``''`` are
      "yes", and ``Yes, no doubt.`` is "no".
    * ``parser="robust"``: NFKC, lower-case, first sentence (``.``/``!``/``?``/newline, a
      decimal point does not end it), words of letters/apostrophes; a leading yes-word
      (yes/yeah/yep/yup/true/correct) -> "yes", a leading no-word (no/nope/not/false/none/
      nothing/never) -> "no", else "no" iff a negation (no, not, none, isn't, don't, ...)
      occurs; an answer with no words -> "yes" (as the default).
    * a callable ``str -> "yes" | "no"``.
    """
    _check_text(text, "text")
    if callable(parser):
        fn = parser
    else:
        if parser not in _POPE_PARSERS:
            raise MetricInputError(
                f"unknown POPE parser {parser!r}; choose one of {sorted(_POPE_PARSERS)} or pass "
                "a callable"
            )
        fn = _POPE_PARSERS[parser]
    result = fn(text)
    if result not in ("yes", "no"):
        raise MetricInputError(f"POPE parser returned {result!r}; it must return 'yes' or 'no'")
    return result


def _ratio(num: float, den: float, what: str, variant: str) -> float:
    if den == 0:
        if variant == "standard":
            return 0.0
        raise MetricInputError(
            f"POPE {what} is undefined here (division by zero; the authors' eval_pope raises "
            "ZeroDivisionError); use variant='standard' to score it 0.0"
        )
    return num / den


def pope_scores(
    predictions: Sequence[str],
    labels: Sequence[str],
    *,
    parser: str | Callable[[str], str] = "internvl",
    variant: str = "internvl",
) -> dict[str, float | int]:
    """POPE accuracy, precision, recall, F1 and yes-ratio ("yes" is the positive class).

    ``predictions`` are raw model replies, parsed with :func:`pope_answer` (``parser=``);
    ``labels`` are ``"yes"``/``"no"``, paired with predictions by position (the official
    evaluation is run once per category: call this once per category too).

    Returns ``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio``, the counts ``tp``,
    ``fp``, ``tn``, ``fn`` and ``count``. ``variant="internvl"`` (default) computes them as
    the authors do, without guards, so an undefined precision/recall/F1 (no "yes"
    predictions, no positives, or TP = 0) raises :class:`MetricInputError`;
    ``variant="standard"`` scores an undefined ratio 0.0.
    """
    _check_variant(variant)
    preds = list(predictions)
    labs = list(labels)
    if not preds:
        raise MetricInputError("pope_scores needs at least one prediction")
    if len(preds) != len(labs):
        raise MetricInputError(
            f"pope_scores got {len(preds)} predictions but {len(labs)} labels; they are paired "
            "by position and must have the same length"
        )
    parsed = [pope_answer(p, parser=parser) for p in preds]
    gold = []
    for i, label in enumerate(labs):
        value = _check_text(label, f"labels[{i}]").strip().lower()
        if value not in ("yes", "no"):
            raise MetricInputError(f"labels[{i}] is {label!r}; POPE labels must be 'yes' or 'no'")
        gold.append(value)

    tp = sum(p == "yes" and g == "yes" for p, g in zip(parsed, gold, strict=True))
    fp = sum(p == "yes" and g == "no" for p, g in zip(parsed, gold, strict=True))
    tn = sum(p == "no" and g == "no" for p, g in zip(parsed, gold, strict=True))
    fn = sum(p == "no" and g == "yes" for p, g in zip(parsed, gold, strict=True))
    precision = _ratio(float(tp), float(tp + fp), "precision", variant)
    recall = _ratio(float(tp), float(tp + fn), "recall", variant)
    f1 = _ratio(2 * precision * recall, precision + recall, "F1", variant)
    return {
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": parsed.count("yes") / len(parsed),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "count": len(parsed),
    }


# ---------------------------------------------------------------------------------------------
# Multiple choice (ScienceQA, MMBench, SEED, AI2D-style prompts)
# ---------------------------------------------------------------------------------------------


def _option_map(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(options, Mapping):
        opts = {}
        for key, value in options.items():
            _check_text(key, "option letter")
            opts[key] = _check_text(value, f"option {key!r}")
    elif isinstance(options, str):
        raise MetricInputError(
            "options must be a mapping letter -> text or a list of option texts, not a str"
        )
    else:
        texts = list(options)
        if len(texts) > 26:
            raise MetricInputError(f"at most 26 options can be lettered, got {len(texts)}")
        opts = {chr(ord("A") + i): _check_text(t, f"options[{i}]") for i, t in enumerate(texts)}
    if not opts:
        raise MetricInputError("options is empty; give at least one option")
    return opts


_BARE_LETTER = re.compile(r"[\s*(\[]*([A-Za-z])[\s*)\].:]*")
_STATED_LETTER = re.compile(
    r"\b(?i:answer|option|choice)\b(?:\s+(?i:is|would\s+be|should\s+be))?\s*[:：]?\s*"
    r"[(\[]?([A-Z])(?![A-Za-z0-9])"
)
_LEADING_LETTER = re.compile(r"[(\[]?([A-Z])(?:[)\].:,]|\s*$)")
_PAREN_LETTER = re.compile(r"[(\[]([A-Z])[)\]]")


def _choice_internvl(text: str, opts: dict[str, str]) -> str | None:
    s = text.strip()
    if not s:
        return None  # the authors' post_process would raise IndexError here
    if len(s) == 1:
        return s if s in opts else None
    if s[0] in opts:
        return s[0]
    for letter, option in opts.items():
        if option in s:
            return letter
    return None


def _choice_standard(text: str, opts: dict[str, str]) -> str | None:
    s = unicodedata.normalize("NFKC", text).strip()
    if not s:
        return None
    m = _BARE_LETTER.fullmatch(s)
    if m:
        letter = m.group(1)
        if letter in opts:
            return letter
        return letter.upper() if letter.upper() in opts else None
    for m in _STATED_LETTER.finditer(s):
        if m.group(1) in opts:
            return m.group(1)
    m = _LEADING_LETTER.match(s)
    if m and m.group(1) in opts:
        return m.group(1)
    found = {m.group(1) for m in _PAREN_LETTER.finditer(s)} & opts.keys()
    if len(found) == 1:
        return found.pop()
    folded = s.casefold()
    hits = []
    for letter, option in opts.items():
        needle = unicodedata.normalize("NFKC", option).strip().casefold()
        if needle and re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", folded):
            hits.append((letter, needle))
    # An option whose text is contained in another matching option's text is not evidence.
    hits = [(k, v) for k, v in hits if not any(v != w and v in w for _, w in hits)]
    return hits[0][0] if len(hits) == 1 else None


def extract_choice(
    text: str,
    options: Mapping[str, str] | Sequence[str],
    *,
    variant: str = "internvl",
) -> str | None:
    """The option letter a multiple-choice reply picks, or ``None`` if none can be found.

    ``options`` is a mapping ``letter -> option text`` or a list of option texts (lettered
    ``A``, ``B``, ...).

    * ``variant="internvl"`` (default, the authors' ScienceQA ``post_process``): strip; a
      one-character reply is the letter itself; otherwise the first character if it is an
      option letter (so ``"A dog"`` -> ``A``); otherwise the first option (in order) whose
      text occurs, case-sensitively, in the reply. Where the authors return the unparsed
      reply we return ``None`` (same accuracy: it never equals the ground-truth letter).
    * ``variant="standard"``: NFKC; a bare letter with optional brackets/period/asterisks
      (``"b"``, ``"(B)"``, ``"**C.**"``); else an explicit statement (``"The answer is B"``,
      ``"Option: (C)"``); else a leading letter followed by ``. ) ] : ,``; else the only
      bracketed letter ``(X)`` in the reply; else the one option whose text occurs as whole
      words, case-insensitively (an option contained in another matching option is
      discounted); ambiguity gives ``None``.
    """
    _check_variant(variant)
    _check_text(text, "text")
    opts = _option_map(options)
    if variant == "internvl":
        return _choice_internvl(text, opts)
    return _choice_standard(text, opts)


def choice_accuracy(
    prediction: str,
    answer: str,
    options: Mapping[str, str] | Sequence[str],
    *,
    variant: str = "internvl",
) -> float:
    """1.0 if :func:`extract_choice` finds the ground-truth letter ``answer``, else 0.0."""
    _check_text(answer, "answer")
    return 1.0 if extract_choice(prediction, options, variant=variant) == answer else 0.0


# ---------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------

# fmt: off
MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
    "artwork", "OCR",
)
# fmt: on
MME_COGNITION = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _internvl_mme_postprocess(response: str) -> str:
    response = response.replace("\n", "").replace("不是", "No").replace("是", "Yes")
    response = response.replace("否", "No")
    response = response.lower().replace("true", "yes").replace("false", "no")
    return _CJK.sub("", response)


def mme_answer(text: str, *, variant: str = "internvl") -> str:
    """Map an MME reply to ``"yes"``, ``"no"`` or ``"other"``.

    MME's rule (both variants): lower-case; ``yes``/``no`` as is; otherwise ``"yes"`` if
    ``yes`` occurs in the first 4 characters, else ``"no"`` if ``no`` does (so ``not sure``
    and ``none`` are "no"), else ``"other"``. ``variant="internvl"`` (default) first applies
    InternVL's reply post-processing: newlines removed, ``不是``/``否`` -> No, ``是`` -> Yes,
    ``true`` -> yes and ``false`` -> no (also inside words), remaining CJK characters removed.
    """
    _check_variant(variant)
    _check_text(text, "text")
    if variant == "internvl":
        text = _internvl_mme_postprocess(text)
    reply = text.lower()
    if reply in ("yes", "no"):
        return reply
    head = reply[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def mme_scores(
    records: Iterable[Mapping[str, Any]], *, variant: str = "internvl"
) -> dict[str, Any]:
    """MME scores per category, with Perception / Cognition totals.

    Each record has ``category`` (e.g. ``"existence"``), ``image`` (the image name),
    ``answer`` (ground truth ``Yes``/``No``) and ``prediction`` (the raw reply, parsed with
    :func:`mme_answer`). MME asks exactly two questions per image; records are grouped by
    (category, image) and an image with another number of questions raises
    :class:`MetricInputError` (MME's tool pairs consecutive lines and asserts pairs).

    Returns ``{"categories": {cat: {"acc", "acc_plus", "score", "count", "images",
    "other"}}, "perception", "cognition", "total"}``: ``acc`` is the fraction of questions
    right, ``acc_plus`` the fraction of images with BOTH questions right, ``score`` MME's
    usual number ``100 * acc + 100 * acc_plus`` (0..200), ``other`` the replies parsed as
    neither yes nor no. ``perception``/``cognition`` sum the scores of the MME categories
    present (MME's own lists); ``total`` sums every category.
    """
    _check_variant(variant)
    grouped: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for i, record in enumerate(records):
        try:
            category, image = record["category"], record["image"]
            gold, reply = record["answer"], record["prediction"]
        except KeyError as exc:
            raise MetricInputError(
                f"MME record {i} lacks {exc.args[0]!r}; each record needs 'category', "
                "'image', 'answer' and 'prediction'"
            ) from None
        gold_norm = _check_text(gold, f"records[{i}]['answer']").strip().lower()
        if gold_norm not in ("yes", "no"):
            raise MetricInputError(f"MME record {i}: answer is {gold!r}, expected Yes or No")
        pred = mme_answer(_check_text(reply, f"records[{i}]['prediction']"), variant=variant)
        grouped.setdefault(str(category), {}).setdefault(str(image), []).append((gold_norm, pred))
    if not grouped:
        raise MetricInputError("mme_scores needs at least one record")

    categories: dict[str, dict[str, float | int]] = {}
    for category, images in grouped.items():
        n_questions = n_correct = n_images_correct = n_other = 0
        for image, pairs in images.items():
            if len(pairs) != 2:
                raise MetricInputError(
                    f"MME category {category!r}, image {image!r} has {len(pairs)} questions; "
                    "MME scores exactly 2 per image"
                )
            right = sum(g == p for g, p in pairs)
            n_questions += len(pairs)
            n_correct += right
            n_images_correct += right == len(pairs)
            n_other += sum(p == "other" for _, p in pairs)
        acc = n_correct / n_questions
        acc_plus = n_images_correct / len(images)
        categories[category] = {
            "acc": acc,
            "acc_plus": acc_plus,
            "score": acc * 100 + acc_plus * 100,
            "count": n_questions,
            "images": len(images),
            "other": n_other,
        }

    def total(names: Iterable[str]) -> float:
        return float(sum(categories[n]["score"] for n in names if n in categories))

    return {
        "categories": categories,
        "perception": total(MME_PERCEPTION),
        "cognition": total(MME_COGNITION),
        "total": total(categories),
    }


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------

_PER_SAMPLE: dict[str, Callable[..., float]] = {
    "vqa_accuracy": vqa_accuracy,
    "anls": anls,
    "relaxed_accuracy": relaxed_accuracy,
    "exact_match": exact_match,
}


def aggregate(
    metric_name: str,
    predictions: Sequence[str],
    references: Sequence[Any],
    **kwargs: Any,
) -> dict[str, Any]:
    """Dataset score: the plain mean of the per-sample scores, as the authors compute it.

    ``metric_name`` is ``"vqa_accuracy"``, ``"anls"``, ``"relaxed_accuracy"``,
    ``"exact_match"`` (references: what the per-sample function takes), ``"multiple_choice"``
    (references: mappings with ``answer`` and ``options``) or ``"pope"`` (references: the
    yes/no labels; the result also carries every key of :func:`pope_scores`, and ``mean`` is
    its accuracy). Keyword arguments (``variant``, ``threshold``, ``tolerance``, ``parser``)
    go to the metric. Returns ``{"metric", "variant", "mean", "count"}``.
    """
    preds = list(predictions)
    refs = list(references)
    if len(preds) != len(refs):
        raise MetricInputError(
            f"aggregate({metric_name!r}) got {len(preds)} predictions but {len(refs)} references"
        )
    if not preds:
        raise MetricInputError(f"aggregate({metric_name!r}) needs at least one prediction")
    variant = kwargs.get("variant", "internvl")

    if metric_name == "pope":
        scores = pope_scores(preds, refs, **kwargs)
        return {"metric": metric_name, "variant": variant, "mean": scores["accuracy"], **scores}

    if metric_name == "multiple_choice":
        per_sample = []
        for i, ref in enumerate(refs):
            if not isinstance(ref, Mapping) or "answer" not in ref or "options" not in ref:
                raise MetricInputError(
                    f"references[{i}] must be a mapping with 'answer' and 'options'"
                )
            per_sample.append(choice_accuracy(preds[i], ref["answer"], ref["options"], **kwargs))
    elif metric_name in _PER_SAMPLE:
        fn = _PER_SAMPLE[metric_name]
        per_sample = [fn(p, r, **kwargs) for p, r in zip(preds, refs, strict=True)]
    else:
        known = sorted([*_PER_SAMPLE, "multiple_choice", "pope"])
        raise MetricInputError(f"unknown metric {metric_name!r}; choose one of {known}")

    return {
        "metric": metric_name,
        "variant": variant,
        "mean": sum(per_sample) / len(per_sample),
        "count": len(per_sample),
    }
