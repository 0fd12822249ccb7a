"""Benchmark evaluation: data readers, a task registry and a resumable batched runner.

Readers
    Every reader returns a list of :class:`EvalSample` (one internal record for all formats):

    * :func:`read_internvl_jsonl` — InternVL's evaluation JSONL (``question_id``/``questionId``,
      ``image``, ``question``/``text``/``query``, ``answer``/``answers``/``label``, ``category``
      ...) and InternVL conversation records (``conversations`` + our synthetic ``qtype`` and
      ``answer``: the first human turn is the question). :func:`read_internvl_meta` reads a
      meta file (``{name: {"root", "annotation"}}``, paths relative to the meta file's folder).
    * :func:`read_vlmevalkit_tsv` — VLMEvalKit TSV: ``index``, ``image`` (base64; a short
      value naming another row's ``index`` shares that row's image; a ``[...]`` list holds
      several images), or ``image_path``; ``question``, optional ``hint``, option columns
      ``A``, ``B``, ... , ``answer``, ``category`` and any other column (kept in ``meta``).
    * :func:`read_image_folder` — ``DIR/questions.jsonl`` (``{"id", "image", "question",
      "answer"}``) with the image files inside ``DIR``.
    * :func:`read_samples` picks one by the path (``.tsv``; ``.json`` meta file; a folder with
      ``questions.jsonl``, ``meta_test.json`` or ``test.jsonl``; any other file is JSONL).

    Image paths are resolved against the data root (the JSONL's folder unless ``image_root``
    is given) and must stay inside it: ``..`` or an absolute path elsewhere is rejected. The
    check is lexical (``os.path.normpath``), so symbolic links placed inside the root by the
    user (InternVL's ``ln -s ../coco/train2014``) keep working. Malformed rows raise
    :class:`~internvlx.errors.DataError` naming ``file:line``.

Tasks
    :data:`TASKS` maps a name to a :class:`Task`: its prompt builder (question + suffix, or a
    multiple-choice prompt listing the options), metric, ``max_new_tokens`` and optional
    tiling overrides. :func:`register_task` adds one.

Runner
    :func:`evaluate` runs greedy batched generation with left padding, appends every batch to
    ``OUT/predictions.jsonl`` (flushed and synced per batch, so an interruption loses at most
    one batch), skips ids already present on restart (settings recorded in ``OUT/run.json``
    must match), scores all predictions with :func:`score_predictions` and writes
    ``OUT/summary.json`` atomically (temporary file + rename).
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import json
import math
import os
import re
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, ImageError, PromptError
from .jsonl import iter_jsonl
from .metrics import MetricInputError

__all__ = [
    "EvalSample",
    "PREDICTIONS_FILE",
    "RUN_FILE",
    "SUMMARY_FILE",
    "TASKS",
    "Task",
    "choice_prompt",
    "evaluate",
    "get_task",
    "load_for_eval",
    "load_vqa_annotations",
    "normalize_synth_answer",
    "question_prompt",
    "read_image_folder",
    "read_internvl_jsonl",
    "read_internvl_meta",
    "read_predictions",
    "read_samples",
    "read_vlmevalkit_tsv",
    "register_task",
    "resolve_inside",
    "score_predictions",
    "sync_processor",
    "compare_runs",
    "render_comparison",
]

PREDICTIONS_FILE = "predictions.jsonl"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"

ImageRef = Any  # a Path, encoded bytes or a PIL image (anything internvlx.images.load_image takes)


# =============================================================================== the record
@dataclass
class EvalSample:
    """One benchmark question.

    ``images`` holds paths (already resolved inside the data root), encoded bytes or PIL
    images; ``answers`` the reference answers (empty when the split has none); ``options``
    the multiple-choice options (letter -> text) or ``None``; ``meta`` every other scalar
    field of the row (``qtype``, ``category``, ``hint``, ``image_key``...); ``source`` is
    ``file:line`` for messages.
    """

    id: str
    images: list[ImageRef]
    question: str
    answers: list[str] = field(default_factory=list)
    options: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


# ================================================================================== readers
_ID_KEYS = ("question_id", "questionId", "qid", "id", "index")
_QUESTION_KEYS = ("question", "text", "query", "prompt")
_ANSWER_KEYS = ("answers", "answer", "label", "annotation", "gt_answer", "gt_answers")
_IMAGE_KEYS = ("image", "images", "image_path", "imgname")
_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def resolve_inside(root: str | os.PathLike, relative: Any, where: str) -> Path:
    """``root / relative``, normalised, refusing anything that leaves ``root``."""
    if not isinstance(relative, str) or not relative.strip():
        raise DataError(f"{where}: image path must be a non-empty string, got {relative!r}")
    if "\x00" in relative:
        raise DataError(f"{where}: image path {relative!r} contains a NUL byte")
    base = os.path.normpath(os.path.abspath(os.fspath(root)))
    candidate = os.path.normpath(os.path.join(base, relative))
    if candidate != base and not candidate.startswith(base.rstrip(os.sep) + os.sep):
        raise DataError(
            f"{where}: image path {relative!r} points outside the data root {base}; "
            "image paths must stay inside it (pass --image-root to choose another root)"
        )
    return Path(candidate)


def _existing_image(root: Path, relative: Any, where: str) -> Path:
    path = resolve_inside(root, relative, where)
    if not path.is_file():
        raise DataError(f"{where}: image {relative!r} does not exist (looked for {path})")
    return path


def _text(value: Any, what: str, where: str) -> str:
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: {what} must be a string, got {value!r}")
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: {what} must be a string, got {type(value).__name__}")
    return value


def _answer_list(value: Any, where: str) -> list[str]:
    """A reference in any common shape: a string, a number, a list of strings, or VQA's
    ``[{"answer": ...}, ...]``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for i, item in enumerate(value):
            if isinstance(item, Mapping):
                if "answer" not in item:
                    raise DataError(f"{where}: answers[{i}] is an object without an 'answer' field")
                item = item["answer"]
            out.append(_text(item, f"answers[{i}]", where))
        return out
    return [_text(value, "answer", where)]


def _option_dict(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        opts = {str(k): _text(v, f"option {k!r}", where) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        if len(value) > len(_LETTERS):
            raise DataError(f"{where}: at most {len(_LETTERS)} options can be lettered, got {len(value)}")
        opts = {_LETTERS[i]: _text(v, f"options[{i}]", where) for i, v in enumerate(value)}
    else:
        raise DataError(f"{where}: options must be an object (letter -> text) or a list, got {value!r}")
    if not opts:
        raise DataError(f"{where}: options is empty")
    return opts


def _scalar_meta(row: Mapping[str, Any], consumed: set[str]) -> dict[str, Any]:
    return {
        k: v for k, v in row.items()
        if k not in consumed and (v is None or isinstance(v, (str, int, float, bool)))
    }


def _first_turns(conversations: Any, where: str) -> tuple[str, str | None]:
    if not isinstance(conversations, list) or not conversations:
        raise DataError(f"{where}: 'conversations' must be a non-empty list of turns")
    question = answer = None
    for i, turn in enumerate(conversations):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: conversations[{i}] needs 'from' and 'value'")
        if question is None and turn["from"] in _HUMAN:
            question = _text(turn["value"], f"conversations[{i}].value", where)
        elif question is not None and turn["from"] in _GPT:
            answer = _text(turn["value"], f"conversations[{i}].value", where)
            break
    if question is None:
        raise DataError(f"{where}: 'conversations' has no human turn to ask")
    return question, answer


def _row_to_sample(row: Mapping[str, Any], root: Path, where: str, line: int) -> EvalSample:
    """The shared JSONL row parser (InternVL eval layouts, conversation records, plain folders)."""
    consumed: set[str] = set()
    sample_id = None
    for key in _ID_KEYS:
        if key in row and row[key] is not None:
            sample_id = _text(row[key], key, where)
            consumed.add(key)
            break
    if sample_id is None:
        sample_id = f"line{line}"

    answers: list[str] = []
    if "conversations" in row:
        question, first_answer = _first_turns(row["conversations"], where)
        consumed.add("conversations")
        if first_answer is not None:
            answers = [first_answer]
    else:
        question = None
        for key in _QUESTION_KEYS:
            if key in row:
                question = _text(row[key], key, where)
                consumed.add(key)
                break
        if question is None:
            raise DataError(f"{where}: no question field (one of {', '.join(_QUESTION_KEYS)})")
    for key in _ANSWER_KEYS:
        if key in row:
            answers = _answer_list(row[key], where)
            consumed.add(key)
            break

    options = None
    for key in ("options", "choices"):
        if key in row:
            options = _option_dict(row[key], where)
            consumed.add(key)
            break
    if options and len(answers) == 1 and answers[0] not in options and answers[0].isdigit():
        index = int(answers[0])  # ScienceQA-style answer: the index of the right choice
        if 0 <= index < len(options):
            answers = [list(options)[index]]

    images: list[ImageRef] = []
    for key in _IMAGE_KEYS:
        if key in row:
            value = row[key]
            consumed.add(key)
            names = value if isinstance(value, list) else [value]
            images = [_existing_image(root, name, where) for name in names]
            break

    meta = _scalar_meta(row, consumed)
    if images:
        meta.setdefault("image_key", str(images[0]))
    return EvalSample(sample_id, images, question, answers, options, meta, where)


def _check_unique(samples: Sequence[EvalSample]) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if s.id in seen:
            raise DataError(f"{s.source}: duplicate sample id {s.id!r} (first at {seen[s.id]})")
        seen[s.id] = s.source


def read_internvl_jsonl(path: str | os.PathLike, *, image_root: str | os.PathLike | None = None) -> list[EvalSample]:
    """Read an InternVL evaluation JSONL or conversation JSONL; images relative to
    ``image_root`` (default: the JSONL's folder)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    samples = [_row_to_sample(row, root, _where(path, n), n) for n, row in iter_jsonl(path)]
    _check_unique(samples)
    return samples


def read_image_folder(directory: str | os.PathLike) -> list[EvalSample]:
    """Read ``DIR/questions.jsonl`` (``{"id", "image", "question", "answer"}``); the images
    live inside ``DIR``."""
    directory = Path(directory)
    questions = directory / "questions.jsonl"
    if not questions.is_file():
        raise DataError(f"{directory} has no questions.jsonl (a plain image folder needs one)")
    return read_internvl_jsonl(questions, image_root=directory)


def read_internvl_meta(path: str | os.PathLike) -> list[EvalSample]:
    """Read every entry of an InternVL meta file (``{name: {"root", "annotation"}}``); ``root``
    and ``annotation`` are relative to the meta file's folder. With several entries the ids are
    prefixed with ``name/``."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read meta file {path}: {e}") from e
    if not isinstance(meta, dict) or not meta:
        raise DataError(f"{path}: a meta file is an object {{name: {{'root', 'annotation'}}}}")
    samples: list[EvalSample] = []
    for name, entry in meta.items():
        if not isinstance(entry, Mapping) or "annotation" not in entry:
            raise DataError(f"{path}: entry {name!r} needs 'annotation' (and usually 'root')")
        root = path.parent / str(entry.get("root", "."))
        part = read_internvl_jsonl(path.parent / str(entry["annotation"]), image_root=root)
        if len(meta) > 1:
            part = [replace(s, id=f"{name}/{s.id}") for s in part]
        samples += part
    _check_unique(samples)
    return samples


def _decode_base64(text: str, where: str) -> bytes:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise DataError(f"{where}: the image column is not valid base64 ({e})") from None
    if not data:
        raise DataError(f"{where}: the image column decodes to 0 bytes")
    return data


def _list_cell(text: str, where: str) -> list[str]:
    """VLMEvalKit writes several images as a Python/JSON list inside one cell."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataError(f"{where}: the image cell starts with '[' but is not a list literal") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: the image cell must be a list of strings")
    return value


def read_vlmevalkit_tsv(path: str | os.PathLike, *, image_root: str | os.PathLike | None = None) -> list[EvalSample]:
    """Read a VLMEvalKit benchmark TSV (see the module docstring). ``image_path`` values are
    relative to ``image_root`` (default: the TSV's folder)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    old_limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images are long cells
    try:
        try:
            handle = path.open(encoding="utf-8", newline="")
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}") from e
        with handle:
            reader = csv.reader(handle, delimiter="\t")
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(f"{path}: empty file (a TSV needs a header line)") from None
            except csv.Error as e:
                raise DataError(f"{path}:1: {e}") from None
            header = [h.strip() for h in header]
            for needed in ("index", "question"):
                if needed not in header:
                    raise DataError(f"{path}:1: the header has no {needed!r} column (found {header})")
            rows: list[tuple[int, dict[str, str]]] = []
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    raise DataError(f"{path}:{reader.line_num}: {e}") from None
                if not cells or all(not c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(cells)} columns, the header has {len(header)}"
                    )
                rows.append((reader.line_num, dict(zip(header, cells, strict=True))))
    finally:
        csv.field_size_limit(old_limit)

    by_index = {row["index"]: (line, row) for line, row in rows}
    if len(by_index) != len(rows):
        seen: set[str] = set()
        for line, row in rows:
            if row["index"] in seen:
                raise DataError(f"{path}:{line}: duplicate index {row['index']!r}")
            seen.add(row["index"])
    option_cols = [c for c in header if len(c) == 1 and c in _LETTERS]
    known = {"index", "image", "image_path", "question", "answer", *option_cols}
    decoded: dict[str, list[bytes]] = {}

    def images_of(index: str, where: str, depth: int = 0) -> tuple[list[bytes], str]:
        cell = by_index[index][1].get("image", "").strip()
        if not cell:
            raise DataError(f"{where}: the image column is empty")
        if len(cell) <= 64 and cell in by_index and cell != index:  # a reference to another row
            if depth:
                raise DataError(f"{where}: image reference {cell!r} points at another reference")
            return images_of(cell, _where(path, by_index[cell][0]), depth + 1)
        if index not in decoded:
            parts = _list_cell(cell, where) if cell.startswith("[") else [cell]
            decoded[index] = [_decode_base64(p, where) for p in parts]
        return decoded[index], index

    samples = []
    for line, row in rows:
        where = _where(path, line)
        question = row["question"]
        if not question.strip():
            raise DataError(f"{where}: the question is empty")
        meta: dict[str, Any] = {k: v for k, v in row.items() if k not in known and v != ""}
        images: list[ImageRef]
        if "image" in row:
            images, key = images_of(row["index"], where)
            images = list(images)
            meta["image_key"] = key
        elif "image_path" in row and row["image_path"].strip():
            cell = row["image_path"].strip()
            names = _list_cell(cell, where) if cell.startswith("[") else [cell]
            images = [_existing_image(root, n, where) for n in names]
            meta["image_key"] = cell
        else:
            images = []
        options = {c: row[c] for c in option_cols if row[c].strip() and row[c].strip().lower() != "nan"}
        answer = row.get("answer", "")
        samples.append(EvalSample(
            id=row["index"], images=images, question=question,
            answers=[answer] if answer != "" else [], options=options or None, meta=meta, source=where,
        ))
    return samples


def load_vqa_annotations(path: str | os.PathLike) -> dict[str, list[str]]:
    """Human answers from a VQA-format annotation file (VQAv2, OK-VQA, TextVQA, VizWiz as
    InternVL's eval uses them): ``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``
    (or a bare list of such entries) -> ``{question_id: [answer, ...]}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read annotation file {path}: {e}") from e
    entries = data.get("annotations", data.get("data")) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected {{'annotations': [...]}} or a list of annotations")
    out: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: annotations[{i}]"
        if not isinstance(entry, Mapping):
            raise DataError(f"{where} is not an object")
        qid = next((entry[k] for k in _ID_KEYS if k in entry), None)
        if qid is None or "answers" not in entry:
            raise DataError(f"{where} needs 'question_id' and 'answers'")
        out[_text(qid, "question_id", where)] = _answer_list(entry["answers"], where)
    return out


def read_samples(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
) -> list[EvalSample]:
    """Read evaluation data in whatever supported layout ``path`` holds (module docstring).
    ``annotations`` (a VQA-format annotation file) replaces the answers by the human answers
    of each ``question_id``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"evaluation data {path} does not exist")
    if path.is_dir():
        if (path / "questions.jsonl").is_file():
            samples = read_image_folder(path)
        elif (path / "meta_test.json").is_file():
            samples = read_internvl_meta(path / "meta_test.json")
        elif (path / "test.jsonl").is_file():
            samples = read_internvl_jsonl(path / "test.jsonl", image_root=image_root)
        else:
            raise DataError(
                f"{path} is a folder without questions.jsonl, meta_test.json or test.jsonl; "
                "pass the data file itself"
            )
    elif path.suffix.lower() == ".tsv":
        samples = read_vlmevalkit_tsv(path, image_root=image_root)
    elif path.suffix.lower() == ".json":
        samples = read_internvl_meta(path)
    else:
        samples = read_internvl_jsonl(path, image_root=image_root)
    if annotations is not None:
        human = load_vqa_annotations(annotations)
        missing = [s.id for s in samples if s.id not in human]
        if missing:
            raise DataError(
                f"{annotations} has no answers for {len(missing)} question id(s), e.g. {missing[:3]}"
            )
        samples = [replace(s, answers=human[s.id]) for s in samples]
    return samples


# ============================================================================ prompts, tasks
VQA_SUFFIX = "Answer the question using a single word or phrase."
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
VIZWIZ_PREFIX = "When the provided information is insufficient, respond with 'Unanswerable'. "


@dataclass(frozen=True)
class Task:
    """A benchmark: how to read it, prompt it, how long answers may be and how to score it.

    ``prompt(sample, task) -> str`` builds the user message (``<image>`` placeholders are
    added by the processor when the text has none); ``metric`` names a scorer of
    :func:`score_predictions`; ``tiling`` holds processor overrides (``policy``,
    ``max_tiles``, ``max_visual_tokens``) that command-line options override in turn;
    ``group_by`` names the ``meta`` fields to break scores down by; ``reader(path, *,
    image_root, annotations)`` loads the data (default :func:`read_samples`).
    """

    name: str
    metric: str
    max_new_tokens: int
    prompt_suffix: str = ""
    prompt: Callable[[EvalSample, Task], str] | None = None
    tiling: Mapping[str, Any] = field(default_factory=dict)
    group_by: tuple[str, ...] = ("category",)
    reader: Callable[..., list[EvalSample]] = read_samples
    description: str = ""

    def build_prompt(self, sample: EvalSample) -> str:
        return (self.prompt or question_prompt)(sample, self)


def question_prompt(sample: EvalSample, task: Task) -> str:
    """The question, then the task's suffix on the same line (InternVL: ``question + ' ' + prompt``)."""
    return f"{sample.question} {task.prompt_suffix}" if task.prompt_suffix else sample.question


def choice_prompt(sample: EvalSample, task: Task) -> str:
    """``hint`` (if any), the question, one ``X. option`` line per option, then the suffix."""
    if not sample.options:
        raise DataError(f"{sample.source}: task {task.name!r} needs options (A, B, ...) for every sample")
    hint = sample.meta.get("hint")
    lines = [f"{hint}\n{sample.question}" if isinstance(hint, str) and hint.strip() else sample.question]
    lines += [f"{letter}. {text}" for letter, text in sample.options.items()]
    if task.prompt_suffix:
        lines.append(task.prompt_suffix)
    return "\n".join(lines)


TASKS: dict[str, Task] = {}


def register_task(task: Task, *, overwrite: bool = False) -> Task:
    """Add ``task`` to :data:`TASKS` (``overwrite=True`` replaces one of the same name)."""
    if task.metric not in _SCORERS:
        raise ConfigError(f"task {task.name!r}: unknown metric {task.metric!r}; known: {sorted(_SCORERS)}")
    if task.name in TASKS and not overwrite:
        raise ConfigError(f"task {task.name!r} is already registered (pass overwrite=True)")
    TASKS[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    if isinstance(name, Task):
        return name
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


# ==================================================================================== scoring
_PUNCT_OR_SPACE = re.compile(r"\s+")


def normalize_synth_answer(text: str) -> str:
    """Lower-case, drop every Unicode punctuation mark, collapse whitespace."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return _PUNCT_OR_SPACE.sub(" ", kept).strip()


def _synth_exact(prediction: str, answers: Sequence[str], **_: Any) -> float:
    if not answers:
        raise MetricInputError("no reference answer")
    pred = normalize_synth_answer(prediction)
    return 1.0 if any(pred == normalize_synth_answer(a) for a in answers) else 0.0


def _per_sample(fn_name: str) -> Callable[[Mapping[str, Any], str], float]:
    from . import metrics

    def score(row: Mapping[str, Any], variant: str) -> float:
        answers = row.get("answers") or []
        if fn_name == "synth_exact":
            return _synth_exact(row["prediction"], answers)
        if fn_name == "multiple_choice":
            if not answers or not row.get("options"):
                raise MetricInputError("a multiple-choice sample needs an answer letter and options")
            return metrics.choice_accuracy(row["prediction"], answers[0], row["options"], variant=variant)
        fn = getattr(metrics, fn_name)
        if fn_name in ("anls", "relaxed_accuracy", "exact_match") and not answers:
            raise MetricInputError("no reference answer")
        return fn(row["prediction"], answers, variant=variant)

    return score


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _score_per_sample(rows: Sequence[Mapping[str, Any]], metric: str, variant: str,
                      group_by: Sequence[str]) -> dict[str, Any]:
    score = _per_sample(metric)
    scores: list[float | None] = []
    errors: list[str] = []
    for row in rows:
        try:
            scores.append(float(score(row, variant)))
        except MetricInputError as e:
            scores.append(None)
            if len(errors) < 5:
                errors.append(f"{row['id']}: {e}")
    scored = [s for s in scores if s is not None]
    breakdown: dict[str, dict[str, dict[str, Any]]] = {}
    for key in group_by:
        groups: dict[str, list[float]] = {}
        for row, s in zip(rows, scores, strict=True):
            value = (row.get("meta") or {}).get(key)
            if value is not None and s is not None:
                groups.setdefault(str(value), []).append(s)
        if groups:
            breakdown[key] = {g: {"score": _mean(v), "count": len(v)} for g, v in sorted(groups.items())}
    out: dict[str, Any] = {"score": _mean(scored), "scored": len(scored), "unscored": len(scores) - len(scored),
                           "breakdown": breakdown}
    if errors:
        out["errors"] = errors
    return out


def _score_pope(rows: Sequence[Mapping[str, Any]], variant: str, group_by: Sequence[str]) -> dict[str, Any]:
    from .metrics import pope_scores

    def attempt(part: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        try:
            return pope_scores([r["prediction"] for r in part], [(r.get("answers") or [""])[0] for r in part],
                               variant=variant)
        except MetricInputError as e:
            return {"error": str(e), "count": len(part)}

    overall = attempt(rows)
    categories: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        cat = (r.get("meta") or {}).get("category")
        if cat is not None:
            categories.setdefault(str(cat), []).append(r)
    per_cat = {c: attempt(part) for c, part in sorted(categories.items())}
    # InternVL reports POPE as the F1 averaged over its three categories (random, popular,
    # adversarial); without categories the F1 of all samples.
    f1s = [v.get("f1") for v in per_cat.values()] if per_cat else [overall.get("f1")]
    score = None if any(f is None for f in f1s) else sum(f1s) / len(f1s)
    out = {"score": score, "score_is": "f1 (mean over categories)" if per_cat else "f1",
           "scored": len(rows), "unscored": 0, "details": overall,
           "breakdown": {"category": per_cat} if per_cat else {}}
    if score is None:
        out["errors"] = [v["error"] for v in [overall, *per_cat.values()] if "error" in v][:5]
    return out


def _score_mme(rows: Sequence[Mapping[str, Any]], variant: str, group_by: Sequence[str]) -> dict[str, Any]:
    from .metrics import mme_scores

    records = []
    for r in rows:
        meta = r.get("meta") or {}
        records.append({"category": meta.get("category", "unknown"), "image": meta.get("image_key", r["id"]),
                        "answer": (r.get("answers") or [""])[0], "prediction": r["prediction"]})
    try:
        scores = mme_scores(records, variant=variant)
    except MetricInputError as e:
        return {"score": None, "scored": 0, "unscored": len(rows), "errors": [str(e)], "breakdown": {}}
    return {"score": scores["total"], "score_is": "MME total (perception + cognition)", "scored": len(rows),
            "unscored": 0, "details": {k: scores[k] for k in ("perception", "cognition", "total")},
            "breakdown": {"category": scores["categories"]}}


_PER_SAMPLE_METRICS = ("synth_exact", "vqa_accuracy", "anls", "relaxed_accuracy", "exact_match", "multiple_choice")
_SCORERS: dict[str, Callable[[Sequence[Mapping[str, Any]], str, Sequence[str]], dict[str, Any]]] = {
    name: (lambda rows, variant, group_by, _n=name: _score_per_sample(rows, _n, variant, group_by))
    for name in _PER_SAMPLE_METRICS
}
_SCORERS["pope"] = _score_pope
_SCORERS["mme"] = _score_mme


def score_predictions(task: str | Task, rows: Sequence[Mapping[str, Any]], *, variant: str = "internvl") -> dict[str, Any]:
    """Score prediction rows (``id``, ``prediction``, ``answers``, ``options``, ``meta``) with
    the task's metric. Returns ``{"metric", "variant", "score", "count", "scored", "unscored",
    "breakdown", ...}``; samples a per-sample metric cannot score (no reference, a VQA sample
    without 10 human answers under the ``internvl`` variant...) are counted in ``unscored``
    with the first messages in ``errors`` instead of failing the whole run."""
    task = get_task(task)
    out = _SCORERS[task.metric](list(rows), variant, task.group_by)
    return {"metric": task.metric, "variant": variant, "count": len(rows), **out}


# Register the built-in tasks (after the scorers exist).
for _task in (
    Task("synth", "synth_exact", 16, group_by=("qtype",),
         description="the synthetic visual-QA test split (internvlx data synth); exact match after "
                     "lower-casing and dropping punctuation, per question type"),
    Task("vqav2", "vqa_accuracy", 10, VQA_SUFFIX, group_by=("answer_type", "question_type"),
         description="VQAv2 soft accuracy (10 human answers: 'answers' or --annotations)"),
    Task("okvqa", "vqa_accuracy", 10, VQA_SUFFIX, group_by=("answer_type", "question_type"),
         description="OK-VQA soft accuracy"),
    Task("textvqa", "vqa_accuracy", 10, VQA_SUFFIX, group_by=("answer_type",),
         description="TextVQA soft accuracy"),
    Task("vizwiz", "vqa_accuracy", 10, VIZWIZ_PREFIX + VQA_SUFFIX, group_by=("answer_type",),
         description="VizWiz soft accuracy"),
    Task("docvqa", "anls", 100, VQA_SUFFIX, group_by=("question_types",), description="DocVQA ANLS"),
    Task("infovqa", "anls", 100, VQA_SUFFIX, description="InfographicVQA ANLS"),
    Task("chartqa", "relaxed_accuracy", 100, VQA_SUFFIX, group_by=("category", "split"),
         description="ChartQA relaxed accuracy (5%)"),
    Task("ocrvqa", "exact_match", 100, VQA_SUFFIX, description="OCR-VQA exact match"),
    Task("pope", "pope", 10, VQA_SUFFIX, group_by=("category",),
         description="POPE; score = F1 averaged over categories, details hold accuracy/precision/recall/yes-ratio"),
    Task("mmbench", "multiple_choice", 10, MC_SUFFIX, prompt=choice_prompt, group_by=("category", "l2-category"),
         description="MMBench-style multiple choice (VLMEvalKit TSV): options listed, letter extracted"),
    Task("mme", "mme", 20, VQA_SUFFIX, group_by=("category",),
         description="MME; score = perception + cognition, acc and acc+ per category"),
    Task("gqa", "exact_match", 10, VQA_SUFFIX, group_by=("category",),
         description="GQA (testdev balanced) exact match"),
    Task("ai2d", "multiple_choice", 10, MC_SUFFIX, prompt=choice_prompt, group_by=("category",),
         description="AI2D diagrams, multiple choice (VLMEvalKit TSV or InternVL JSONL with options)"),
    Task("scienceqa", "multiple_choice", 10, MC_SUFFIX, prompt=choice_prompt, group_by=("category",),
         description="ScienceQA (image split), multiple choice with the hint as context"),
):
    register_task(_task)


# ============================================================================ predictions I/O
def read_predictions(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Rows of a predictions JSONL. A last line cut off by an interruption (no newline) is
    ignored, and with ``repair=True`` removed from the file; any other bad line is an error."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        if repair:
            with path.open("r+b") as f:
                f.truncate(cut)
        data = data[:cut]
    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: corrupt prediction line ({e.msg}); remove it or use a new --out") from None
        if not isinstance(row, dict) or "id" not in row or "prediction" not in row:
            raise DataError(f"{path}:{number}: a prediction row needs 'id' and 'prediction'")
        rows.append(row)
    return rows


def _write_json_atomic(path: Path, payload: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, ensure_ascii=False, allow_nan=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ===================================================================================== runner
def load_for_eval(
    model_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    lvtc: bool | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load a model directory for evaluation: ``(model, processor)`` in eval mode.

    ``lvtc`` switches LVTC on or off with ``model.configure_lvtc`` only when it differs from the
    checkpoint (switching an LVTC checkpoint "on" again would re-initialise its trained
    parameters); the processor's ``<IMG_CONTEXT>`` slot count follows the model's.
    """
    import torch

    from .modeling import InternVLXForConditionalGeneration
    from .processing import InternVLXProcessor

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        kwargs["dtype"] = getattr(torch, dtype)
    model = InternVLXForConditionalGeneration.from_pretrained(model_dir, **kwargs).eval()
    if lvtc is not None and bool(lvtc) != model.config.lvtc.enabled:
        model.configure_lvtc(bool(lvtc))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    processor = InternVLXProcessor.from_pretrained(model_dir)
    return model, sync_processor(model, processor)


def sync_processor(model: Any, processor: Any) -> Any:
    """The processor with its per-tile slot counts taken from the model's config (they change
    when LVTC is switched)."""
    from .processing import InternVLXProcessor

    cfg = model.config
    want = {"input_tokens_per_tile": cfg.input_tokens_per_tile, "tokens_per_tile": cfg.tokens_per_tile}
    if all(getattr(processor.settings, k) == v for k, v in want.items()):
        return processor
    return InternVLXProcessor(processor.tokenizer, processor.settings.replace(**want))


def _model_info(model: Any) -> dict[str, Any]:
    cfg = model.config
    return {
        "path": str(getattr(cfg, "name_or_path", "") or ""),
        "projector": cfg.projector.type,
        "lvtc": _json_safe(dict(vars(cfg.lvtc))),
        "llm_layers": cfg.text_config.num_hidden_layers,
        "tile_size": cfg.tile_size,
        "tokens_per_tile": cfg.tokens_per_tile,
        "input_tokens_per_tile": cfg.input_tokens_per_tile,
        "template": cfg.template,
        "dtype": str(model.dtype).replace("torch.", ""),
        "device": str(model.device),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _generate_batch(model: Any, processor: Any, task: Task, batch: Sequence[EvalSample], tiling: Mapping[str, Any],
                    max_visual_tokens: int | None, max_new_tokens: int) -> tuple[list[str], list[str], list[int], list[int]]:
    import torch

    prompts = [task.build_prompt(s) for s in batch]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    try:
        inputs = processor(convs, [list(s.images) for s in batch], max_visual_tokens=max_visual_tokens, **tiling)
    except (PromptError, ImageError) as e:
        sources = ", ".join(s.source for s in batch)
        raise DataError(f"cannot build the prompt of a sample in [{sources}]: {e}") from e
    image_id = model.config.image_token_id
    slots = (inputs["input_ids"] == image_id).sum(dim=1).tolist()
    tiles_flat = inputs["image_tiles"].tolist() if "image_tiles" in inputs else []
    tiles, start = [], 0
    for s in batch:
        tiles.append(int(sum(tiles_flat[start:start + len(s.images)])))
        start += len(s.images)
    feed = {k: v.to(model.device) for k, v in inputs.items() if k != "image_tiles"}
    if "pixel_values" in feed:
        feed["pixel_values"] = feed["pixel_values"].to(model.dtype)
    with torch.no_grad():
        out = model.generate(
            **feed, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=processor.eos_token_id, pad_token_id=processor.tokenizer.pad_token_id,
        )
    width = inputs["input_ids"].shape[1]
    answers = [processor.decode_response(row[width:].tolist()).strip() for row in out]
    return answers, prompts, [int(n) for n in slots], tiles


def evaluate(
    model: Any,
    processor: Any,
    task: str | Task,
    data: str | os.PathLike | Sequence[EvalSample],
    *,
    limit: int | None = None,
    batch_size: int = 1,
    out_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    policy: str | None = None,
    max_tiles: int | None = None,
    max_visual_tokens: int | None = None,
    max_new_tokens: int | None = None,
    variant: str = "internvl",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``task`` on ``data`` (a path for :func:`read_samples`, or samples) and return the summary.

    Greedy decoding, ``batch_size`` samples per left-padded batch (a sample's prediction does
    not depend on its batch). With ``out_dir``, predictions are appended to
    ``predictions.jsonl`` batch by batch, samples whose id is already there are skipped (the
    settings in ``run.json`` must match, else :class:`ConfigError`; ``overwrite=True`` starts
    afresh), and ``summary.json`` is written atomically. ``limit`` keeps the first ``limit``
    samples. Tiling: the task's overrides, then ``policy``/``max_tiles``/``max_visual_tokens``.

    The summary holds the task, metric and ``score`` (with ``breakdown`` per ``qtype`` /
    ``category`` where the data has it), ``count``, ``visual_tokens`` (the ``<IMG_CONTEXT>``
    slots of the LLM input: ``llm_input_total``/``llm_input_mean``; ``mean_per_layer``: the
    mean over LLM layers of the visual tokens each layer sees, per sample, from the tile count
    and ``config.lvtc``), ``seconds_per_sample``, and ``model``/``settings`` information.
    """
    from tqdm import tqdm

    from .accounting import tokens_per_tile_by_layer

    task = get_task(task)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    processor = sync_processor(model, processor)
    tiling = dict(task.tiling)
    tiling.update({k: v for k, v in (("policy", policy), ("max_tiles", max_tiles)) if v is not None})
    if max_visual_tokens is None:
        max_visual_tokens = tiling.pop("max_visual_tokens", None)
    else:
        tiling.pop("max_visual_tokens", None)
    if "max_tiles" in tiling and "min_tiles" not in tiling:
        tiling["min_tiles"] = min(processor.settings.min_tiles, tiling["max_tiles"])
    new_tokens = max_new_tokens if max_new_tokens is not None else task.max_new_tokens

    if isinstance(data, (str, os.PathLike)):
        data_name = str(Path(data).resolve())
        samples = task.reader(data, image_root=image_root, annotations=annotations)
    else:
        data_name = "<samples>"
        samples = list(data)
        _check_unique(samples)
    if not samples:
        raise DataError(f"no samples in {data_name}")
    if limit is not None:
        samples = samples[:limit]

    settings = {
        "task": task.name, "data": data_name, "prompt_suffix": task.prompt_suffix,
        "max_new_tokens": new_tokens, "tiling": tiling, "max_visual_tokens": max_visual_tokens,
        "model": _model_info(model) | {"parameters": None, "device": None},
    }
    done: dict[str, dict[str, Any]] = {}
    pred_path = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pred_path, run_path = out / PREDICTIONS_FILE, out / RUN_FILE
        if overwrite:
            for p in (pred_path, run_path, out / SUMMARY_FILE):
                p.unlink(missing_ok=True)
        fingerprint = _json_safe(json.loads(json.dumps(settings, default=str)))
        if run_path.exists():
            previous = json.loads(run_path.read_text(encoding="utf-8"))
            if previous != fingerprint:
                diff = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
                raise ConfigError(
                    f"{out} holds predictions made with other settings (differs in: {', '.join(diff)}); "
                    "use another --out or --overwrite"
                )
        elif pred_path.exists() and pred_path.stat().st_size:
            raise ConfigError(f"{pred_path} exists without {RUN_FILE}; use another --out or --overwrite")
        else:
            _write_json_atomic(run_path, fingerprint)
        for row in read_predictions(pred_path, repair=True):
            done[str(row["id"])] = row

    per_tile_layers = tokens_per_tile_by_layer(model.config)
    layer_mean_per_tile = sum(per_tile_layers) / len(per_tile_layers)
    pending = [s for s in samples if s.id not in done]
    fresh: dict[str, dict[str, Any]] = {}
    wall = 0.0
    bar = tqdm(total=len(pending), desc=f"eval {task.name}", unit="sample", disable=not progress)
    handle = pred_path.open("a", encoding="utf-8") if pred_path is not None else None
    try:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            t0 = time.perf_counter()
            answers, prompts, slots, tiles = _generate_batch(
                model, processor, task, batch, tiling, max_visual_tokens, new_tokens)
            elapsed = time.perf_counter() - t0
            wall += elapsed
            lines = []
            for s, answer, prompt, n_slots, n_tiles in zip(batch, answers, prompts, slots, tiles, strict=True):
                row = {
                    "id": s.id, "prediction": answer, "answers": s.answers, "options": s.options,
                    "question": prompt, "meta": _json_safe(s.meta), "tiles": n_tiles,
                    "visual_tokens": n_slots, "visual_tokens_per_layer_mean": n_tiles * layer_mean_per_tile,
                    "seconds": elapsed / len(batch),
                }
                fresh[s.id] = row
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            if handle is not None:
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(len(batch))
    finally:
        bar.close()
        if handle is not None:
            handle.close()

    # score against the current references (a resumed run may have added --annotations)
    rows = [{**(fresh.get(s.id) or done[s.id]), "answers": s.answers, "options": s.options,
             "meta": _json_safe(s.meta)} for s in samples]
    result = score_predictions(task, rows, variant=variant)
    n = len(rows)
    summary = {
        "task": task.name,
        "description": task.description,
        "data": data_name,
        **result,
        "visual_tokens": {
            "llm_input_total": sum(r["visual_tokens"] for r in rows),
            "llm_input_mean": sum(r["visual_tokens"] for r in rows) / n,
            "mean_per_layer": sum(r["visual_tokens_per_layer_mean"] for r in rows) / n,
            "tiles_mean": sum(r["tiles"] for r in rows) / n,
            "per_tile_by_layer": per_tile_layers,
        },
        "seconds_per_sample": sum(r["seconds"] for r in rows) / n,
        "run": {"new_samples": len(pending), "resumed_samples": n - len(pending), "wall_s": wall,
                "batch_size": batch_size, "limit": limit},
        "settings": {k: settings[k] for k in ("prompt_suffix", "max_new_tokens", "tiling", "max_visual_tokens")},
        "model": _model_info(model),
        "predictions": str(pred_path) if pred_path is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary = _json_safe(summary)
    if out_dir is not None:
        _write_json_atomic(Path(out_dir) / SUMMARY_FILE, summary)
    return summary


# =============================================================================== paired comparison
def _scored_rows(out_dir: Path) -> tuple[dict[str, Any], dict[str, tuple[float, dict[str, Any]]]]:
    summary_path = out_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise DataError(f"{out_dir} has no {SUMMARY_FILE}: pass a folder written by `internvlx eval`")
    summary = json.loads(summary_path.read_text())
    metric, variant = summary.get("metric"), summary.get("variant", "internvl")
    if metric not in _PER_SAMPLE_METRICS:
        raise ConfigError(f"{out_dir}: metric {metric!r} is not scored per sample, so runs cannot be paired "
                          f"(per-sample metrics: {', '.join(sorted(_PER_SAMPLE_METRICS))})")
    score = _per_sample(metric)
    rows: dict[str, tuple[float, dict[str, Any]]] = {}
    for row in read_predictions(out_dir / PREDICTIONS_FILE):
        try:
            rows[str(row["id"])] = (float(score(row, variant)), row.get("meta") or {})
        except MetricInputError:
            continue  # unscored, as in the run's own summary
    return summary, rows


def compare_runs(a_dir: str | os.PathLike, b_dir: str | os.PathLike, *, group_by: str | None = "qtype",
                 resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two `internvlx eval` folders on the samples both scored: per group
    (``meta[group_by]``) and overall, the two means, their difference B − A with a paired
    bootstrap interval (``resamples`` resamplings of the samples, ``level`` two-sided), and how
    many samples only A / only B got right (scored above zero). Both runs must use the same metric; samples only one
    run holds are counted, not compared."""
    import numpy as np

    (sa, a), (sb, b) = _scored_rows(Path(a_dir)), _scored_rows(Path(b_dir))
    if (sa.get("metric"), sa.get("variant")) != (sb.get("metric"), sb.get("variant")):
        raise ConfigError(f"{a_dir} scores {sa.get('metric')}/{sa.get('variant')} but {b_dir} "
                          f"{sb.get('metric')}/{sb.get('variant')}: compare runs of one metric")
    shared = sorted(set(a) & set(b))
    if not shared:
        raise DataError(f"{a_dir} and {b_dir} share no scored sample ids: were they run on the same data?")
    rng = np.random.default_rng(seed)
    by_value: dict[str, list[str]] = {}
    if group_by:
        for key in shared:
            value = a[key][1].get(group_by)
            if value is not None:
                by_value.setdefault(f"{group_by}={value}", []).append(key)
    groups = {"all": shared, **dict(sorted(by_value.items()))}

    def stats(keys: list[str]) -> dict[str, Any]:
        x = np.array([a[k][0] for k in keys])
        y = np.array([b[k][0] for k in keys])
        d = y - x
        boot = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(1)
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
        return {"n": len(keys), "a": float(x.mean()), "b": float(y.mean()), "diff": float(d.mean()),
                "ci": [float(lo), float(hi)], "only_a": int(((x > 0) & (y == 0)).sum()),
                "only_b": int(((y > 0) & (x == 0)).sum())}

    return {"a": str(a_dir), "b": str(b_dir), "metric": sa.get("metric"), "level": level, "resamples": resamples,
            "only_in_a": len(set(a) - set(b)), "only_in_b": len(set(b) - set(a)),
            "groups": {name: stats(keys) for name, keys in groups.items()}}


def render_comparison(result: Mapping[str, Any]) -> str:
    """A markdown table of :func:`compare_runs`' result."""
    pct = int(round(100 * result["level"]))
    lines = [f"A = {result['a']}", f"B = {result['b']}",
             f"paired on the samples both scored ({result['metric']}; {pct} % bootstrap interval of B − A, "
             f"{result['resamples']} resamplings)", "",
             f"| group | n | A | B | B − A | {pct} % interval | right only in A | right only in B |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for name, g in result["groups"].items():
        lines.append(f"| {name} | {g['n']} | {100 * g['a']:.1f} % | {100 * g['b']:.1f} % | {100 * g['diff']:+.1f} | "
                     f"[{100 * g['ci'][0]:+.1f}, {100 * g['ci'][1]:+.1f}] | {g['only_a']} | {g['only_b']} |")
    if result["only_in_a"] or result["only_in_b"]:
        lines += ["", f"not compared: {result['only_in_a']} samples only in A, {result['only_in_b']} only in B"]
    return "\n".join(lines)
