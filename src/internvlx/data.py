"""Training data: InternVL meta files, JSONL conversations, a map-style dataset and a collator.

**Meta file** (InternVL's format): a JSON object ``{name: entry}`` where each entry has

* ``root``: the folder image paths are relative to;
* ``annotation``: a JSONL file of conversations;
* ``repeat_time`` (default 1): ``2`` repeats the data twice; a fraction keeps a seeded random
  subset (``0.25`` keeps a quarter, ``1.5`` the data once plus a random half);
* ``length`` (optional): the expected number of records (a mismatch is a warning);
* ``data_augment`` (optional): read and recorded, but no augmentation is applied;
* ``max_dynamic_patch`` / ``min_dynamic_patch`` (optional): this entry's ``max_tiles`` /
  ``min_tiles``.

Relative ``root`` / ``annotation`` paths are resolved against the directory holding the meta
file (as :mod:`internvlx.synth` writes them); absolute paths, as in InternVL's own metas, are
used as they are. Other keys are ignored.

**Records**, one JSON object per line::

    {"image": "a.png" | ["a.png", "b.png"],        # optional: absent/null/[] = text only
     "width": 640, "height": 480,                  # optional hints (multi-image: width_list,
                                                   #   height_list) used for lengths only
     "conversations": [{"from": "system", "value": ...},   # optional, first only
                       {"from": "human", "value": "<image>\\nWhat is it?"},
                       {"from": "gpt", "value": "A cat."}, ...]}

Turns alternate ``human`` / ``gpt`` and end with ``gpt``. Each image takes one ``<image>``
placeholder (in a human or the system turn); when a record has images and no placeholder at
all, ``<image>\\n`` (one image) or ``Image-1: <image>\\nImage-2: <image>\\n...`` is put in front
of the first human turn, as InternVL does. Any other placeholder/image count mismatch, a bad
JSON line, a missing or malformed ``conversations``, an unknown ``from``, turns out of order, or
an image path that is absolute or leaves the root (``..``, or a symlink pointing outside) is a
:class:`~internvlx.errors.DataError` naming ``file:line``.

**Samples.** :class:`InternVLDataset` tokenises each record with the processor's chat template
(:meth:`InternVLXProcessor.encode_conversation`): labels are only on the assistant turns (their
text and the separator after it), image placeholders expand with the processor's tile planning
(stock tiling or an RVTC policy; with LVTC on, the compressed slot count). Records longer than
``max_seq_length`` are dropped, or with ``truncation="truncate"`` cut after the end of the last
image block (never inside ``<img>...</img>``; dropped when that is impossible or would leave no
label). Unreadable images (missing, empty, corrupt, truncated) make a record *bad*: the dataset
returns the next usable record instead, counts it, and raises once the bad share of the records
seen passes ``max_bad_fraction``. :meth:`InternVLDataset.report` gives the counts.

**Batches.** :func:`collate_for_training` pads and stacks features (right padding by default,
``-100`` labels on padding) and concatenates the variable tile counts of all images.

**Group by length.** :attr:`InternVLDataset.lengths` estimates each sample's token count without
decoding any image (from the recorded ``width``/``height``, else the image header). transformers'
``Trainer`` cannot find these itself for a torch dataset (with ``group_by_length`` it would
load every sample to measure it): build the sampler with :func:`length_grouped_sampler`
(e.g. in an overridden ``Trainer._get_train_sampler``).
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, DataError, ImageError
from .jsonl import iter_jsonl
from .processing import IGNORE_INDEX, InternVLXProcessor, ProcessorSettings
from .templates import IMAGE_PLACEHOLDER, IMG_END_TOKEN, IMG_START_TOKEN, render_prompt
from .tiling import plan_tiles

__all__ = [
    "IGNORE_INDEX",
    "DatasetEntry",
    "InternVLDataset",
    "Record",
    "TrainingCollator",
    "collate_for_training",
    "length_grouped_sampler",
    "read_annotation",
    "read_meta",
]

TRUNCATION_POLICIES = ("drop", "truncate")
#: Tiling settings a dataset (or a meta entry) may override; the rest are the model's.
TILING_OVERRIDES = ("min_tiles", "max_tiles", "policy", "thumbnail", "max_pixels", "alpha")
_META_TILING = {"max_dynamic_patch": "max_tiles", "min_dynamic_patch": "min_tiles"}
_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
_KEEP_ERRORS = 20  # bad-record messages kept for the report


# --------------------------------------------------------------------------------- meta file


@dataclass(frozen=True)
class DatasetEntry:
    """One entry of a meta file, with its paths resolved."""

    name: str
    root: Path
    annotation: Path
    repeat_time: float = 1.0
    length: int | None = None
    data_augment: bool = False
    tiling: dict[str, Any] = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_meta(
    meta: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> list[DatasetEntry]:
    """Read an InternVL meta file (a path) or meta dict into :class:`DatasetEntry` objects.

    Relative ``root`` / ``annotation`` paths resolve against the meta file's directory, or for a
    dict against ``base_dir`` (default: the working directory). Raises :class:`DataError` for a
    malformed meta or a missing annotation file.
    """
    if isinstance(meta, Mapping):
        where = "meta dict"
        data: Any = meta
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(meta)
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"meta file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"meta file {path} cannot be read: {e}") from e
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON in the meta file ({e.msg})") from e
        base = Path(base_dir) if base_dir is not None else path.parent
    if not isinstance(data, Mapping) or not data:
        raise DataError(f"{where}: a meta must be a non-empty JSON object {{name: {{root, annotation, ...}}}}")
    entries = []
    for name, spec in data.items():
        if not isinstance(spec, Mapping):
            raise DataError(f"{where}: entry {name!r} must be an object with 'root' and 'annotation'")
        for key in ("root", "annotation"):
            if not isinstance(spec.get(key), str):
                raise DataError(f"{where}: entry {name!r} needs {key!r} as a string path, got {spec.get(key)!r}")
        repeat = spec.get("repeat_time", 1)
        if not _number(repeat) or repeat < 0:
            raise DataError(f"{where}: entry {name!r} has repeat_time {repeat!r}; use a number >= 0")
        length = spec.get("length")
        if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 0):
            raise DataError(f"{where}: entry {name!r} has length {length!r}; use a non-negative integer")
        tiling = {}
        for key, setting in _META_TILING.items():
            if key in spec:
                value = spec[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise DataError(f"{where}: entry {name!r} has {key} {value!r}; use a positive integer")
                tiling[setting] = value
        annotation = base / spec["annotation"]
        if not annotation.is_file():
            raise DataError(f"{where}: entry {name!r}: annotation file {annotation} does not exist")
        entries.append(DatasetEntry(
            name=str(name), root=base / spec["root"], annotation=annotation, repeat_time=float(repeat),
            length=length, data_augment=bool(spec.get("data_augment", False)), tiling=tiling,
        ))
    return entries


# --------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """One validated conversation. ``messages`` use the processor's roles (``system`` /
    ``user`` / ``assistant``) and already hold one ``<image>`` per image; ``images`` are the
    paths as written (relative to the entry's root); ``sizes`` the recorded ``(width, height)``
    of each image, or ``None``."""

    source: str  # "file:line"
    entry: int
    messages: tuple[dict[str, str], ...]
    images: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] | None = None


def _check_image_path(path: Any, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise DataError(f"{where}: an image path must be a non-empty string, got {path!r}")
    if "\x00" in path:
        raise DataError(f"{where}: image path {path!r} contains a NUL character")
    if path.startswith(("/", "\\")) or os.path.isabs(path) or PureWindowsPath(path).drive:
        raise DataError(f"{where}: image path {path!r} is absolute; image paths must be relative to the dataset root")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise DataError(f"{where}: image path {path!r} leaves the dataset root")
    return path


def _sizes(obj: Mapping[str, Any], n: int) -> tuple[tuple[int, int], ...] | None:
    """Recorded image sizes when present and well formed (they are only hints)."""
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if n == 1 and ok(obj.get("width")) and ok(obj.get("height")):
        return ((obj["width"], obj["height"]),)
    ws, hs = obj.get("width_list"), obj.get("height_list")
    if isinstance(ws, list) and isinstance(hs, list) and len(ws) == len(hs) == n and all(map(ok, ws + hs)):
        return tuple(zip(ws, hs, strict=True))
    return None


def parse_record(obj: Any, where: str, entry: int = 0) -> Record:
    """Validate one decoded JSONL object (see the module docstring) into a :class:`Record`."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    image = obj.get("image")
    if image is None:
        images: list[str] = []
    elif isinstance(image, str):
        images = [image]
    elif isinstance(image, list):
        images = list(image)
    else:
        raise DataError(f"{where}: 'image' must be a path or a list of paths, got {type(image).__name__}")
    images = [_check_image_path(p, where) for p in images]
    convs = obj.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(f"{where}: the record needs 'conversations', a non-empty list of {{from, value}} turns")
    messages: list[dict[str, str]] = []
    for k, turn in enumerate(convs):
        if not isinstance(turn, Mapping):
            raise DataError(f"{where}: conversations[{k}] must be an object {{from, value}}")
        who, value = turn.get("from"), turn.get("value")
        if who not in _ROLES:
            raise DataError(f"{where}: conversations[{k}] has from={who!r}; use 'human', 'gpt' (or 'system' first)")
        if not isinstance(value, str) or not value:
            raise DataError(f"{where}: conversations[{k}] needs a non-empty string 'value', got {value!r}")
        role = _ROLES[who]
        if role == "system":
            if k != 0:
                raise DataError(f"{where}: conversations[{k}] is a system turn; only the first turn may be one")
        else:
            expected = "user" if sum(m["role"] != "system" for m in messages) % 2 == 0 else "assistant"
            if role != expected:
                want = "human" if expected == "user" else "gpt"
                raise DataError(
                    f"{where}: conversations[{k}] is from {who!r} but {want!r} was expected; "
                    "turns must alternate human, gpt, human, gpt, ..."
                )
        if role == "assistant" and IMAGE_PLACEHOLDER in value:
            raise DataError(f"{where}: conversations[{k}] (gpt) contains {IMAGE_PLACEHOLDER}; images go in human turns")
        messages.append({"role": role, "content": value})
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the conversation must end with a 'gpt' turn (nothing to learn after the last human turn)")
    found = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if found == 0 and images:
        first = next(i for i, m in enumerate(messages) if m["role"] == "user")
        if len(images) == 1:
            head = f"{IMAGE_PLACEHOLDER}\n"
        else:
            head = "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(len(images)))
        messages[first] = {"role": "user", "content": head + messages[first]["content"]}
    elif found != len(images):
        raise DataError(
            f"{where}: the conversation has {found} {IMAGE_PLACEHOLDER} placeholder(s) but the record has "
            f"{len(images)} image(s); put one {IMAGE_PLACEHOLDER} per image (or none, to put them first)"
        )
    return Record(where, entry, tuple(messages), tuple(images), _sizes(obj, len(images)) if images else None)


def read_annotation(path: str | os.PathLike, entry: int = 0) -> list[Record]:
    """Read and validate a JSONL annotation file; blank lines are skipped. Raises
    :class:`DataError` naming ``file:line`` for the first malformed line."""
    path = Path(path)
    return [parse_record(obj, f"{path}:{lineno}", entry) for lineno, obj in iter_jsonl(path)]


def _repeat(n: int, repeat_time: float, seed: int, name: str) -> list[int]:
    """Record positions for ``repeat_time``: whole repeats plus a seeded subset for the fraction."""
    whole = int(repeat_time)
    extra = round(n * (repeat_time - whole))
    out = list(range(n)) * whole
    if extra:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        out += sorted(int(i) for i in rng.choice(n, size=extra, replace=False))
    return out


# --------------------------------------------------------------------------------- dataset


class _Skip(Exception):
    """A record that cannot be used (reason in args[0]); the dataset moves on."""


class InternVLDataset(torch.utils.data.Dataset):
    """Map-style training dataset over an InternVL meta file (or dict).

    ``dataset[i]`` is ``{"input_ids": LongTensor[L], "labels": LongTensor[L],
    "pixel_values": FloatTensor[tiles, 3, S, S] | None, "image_tiles": list[int]}``.

    * ``max_seq_length``: longest sample in tokens (``None``: no limit); ``truncation="drop"``
      skips longer records, ``"truncate"`` cuts them after the last image block (see the module
      docstring).
    * ``max_bad_fraction``: the share of bad records (unreadable images) tolerated among the
      distinct records tried so far; past it, once at least ``bad_fraction_after`` records (or
      all of them, if fewer) were tried, ``__getitem__`` raises :class:`DataError`.
    * ``seed``: for fractional ``repeat_time`` subsets.
    * ``max_visual_tokens`` and the tiling overrides (``min_tiles``, ``max_tiles``, ``policy``,
      ``thumbnail``, ``max_pixels``, ``alpha``) change the processor's image settings; a meta
      entry's ``max_dynamic_patch`` / ``min_dynamic_patch`` take precedence for that entry.

    An unusable record (bad image, too long) is replaced by the next usable one in index
    order (wrapping around), so ``dataset[i]`` is deterministic; records found unusable are
    remembered and skipped without another attempt. The counters behind :meth:`report` are
    guarded by a lock (safe with threads) but live in each process: with DataLoader workers
    (``num_workers > 0``) every worker counts its own share and the main process sees none of
    it, so use ``num_workers=0`` for an exact report and limit.
    """

    def __init__(
        self,
        meta: str | os.PathLike | Mapping[str, Any],
        processor: InternVLXProcessor,
        *,
        max_seq_length: int | None = 4096,
        truncation: str = "drop",
        max_bad_fraction: float = 0.05,
        bad_fraction_after: int = 20,
        seed: int = 0,
        max_visual_tokens: int | None = None,
        base_dir: str | os.PathLike | None = None,
        **tiling: Any,
    ):
        if truncation not in TRUNCATION_POLICIES:
            raise ConfigError(f"truncation must be one of {TRUNCATION_POLICIES}, got {truncation!r}")
        if max_seq_length is not None and (not isinstance(max_seq_length, int) or max_seq_length < 1):
            raise ConfigError(f"max_seq_length must be a positive integer or None, got {max_seq_length!r}")
        if not _number(max_bad_fraction) or not 0 <= max_bad_fraction <= 1:
            raise ConfigError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction!r}")
        unknown = sorted(set(tiling) - set(TILING_OVERRIDES))
        if unknown:
            raise ConfigError(f"unknown dataset option(s) {unknown}; tiling overrides are {list(TILING_OVERRIDES)}")
        self.processor = processor
        self.max_seq_length = max_seq_length
        self.truncation = truncation
        self.max_bad_fraction = float(max_bad_fraction)
        self.bad_fraction_after = int(bad_fraction_after)
        self.max_visual_tokens = max_visual_tokens
        self.entries = read_meta(meta, base_dir=base_dir)
        self._tiling = [{**tiling, **e.tiling} for e in self.entries]
        self._settings: list[ProcessorSettings] = [processor.settings.replace(**t) for t in self._tiling]
        self._roots = [e.root.resolve() for e in self.entries]
        self.records: list[Record] = []
        index: list[int] = []
        for k, entry in enumerate(self.entries):
            records = read_annotation(entry.annotation, k)
            if entry.length is not None and entry.length != len(records):
                warnings.warn(
                    f"meta entry {entry.name!r} says length {entry.length} but {entry.annotation} has "
                    f"{len(records)} records", stacklevel=2,
                )
            offset = len(self.records)
            self.records += records
            index += [offset + i for i in _repeat(len(records), entry.repeat_time, seed, entry.name)]
        self._index = np.asarray(index, dtype=np.int64)
        self._end_id = processor.tokenizer.convert_tokens_to_ids(IMG_END_TOKEN)
        self._lengths: list[int] | None = None
        self._reset_counters()

    # ------------------------------------------------------------------ bookkeeping
    def _reset_counters(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[int] = set()
        self._bad: set[int] = set()
        self._too_long: set[int] = set()
        self._errors: list[str] = []
        self._truncated = 0
        self._substituted = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def report(self) -> dict[str, Any]:
        """Counts so far: ``samples`` (len), ``records`` (distinct), ``seen`` (distinct records
        tried), ``bad`` (unreadable images), ``bad_fraction`` (bad / seen), ``dropped_too_long``,
        ``truncated``, ``substituted`` (items served by a later record) and the first ``errors``."""
        with self._lock:
            seen = len(self._seen)
            return {
                "samples": len(self), "records": len(self.records), "seen": seen, "bad": len(self._bad),
                "bad_fraction": len(self._bad) / seen if seen else 0.0,
                "dropped_too_long": len(self._too_long), "truncated": self._truncated,
                "substituted": self._substituted, "errors": list(self._errors),
            }

    def format_report(self) -> str:
        """:meth:`report` as a few human-readable lines (for the end of a run)."""
        r = self.report()
        lines = [
            f"data: {r['samples']} samples from {r['records']} records; {r['seen']} records used, "
            f"{r['bad']} skipped for bad images ({r['bad_fraction']:.1%}), {r['dropped_too_long']} dropped "
            f"as too long, {r['truncated']} truncated, {r['substituted']} items served by the next record"
        ]
        lines += [f"  {e}" for e in r["errors"]]
        if r["bad"] > len(r["errors"]):
            lines.append(f"  ... and {r['bad'] - len(r['errors'])} more")
        return "\n".join(lines)

    def _fail(self, rid: int, message: str) -> None:
        with self._lock:
            self._bad.add(rid)
            if len(self._errors) < _KEEP_ERRORS:
                self._errors.append(message)
            seen, bad = len(self._seen), len(self._bad)
        self._check_fraction(seen, bad)

    def _check_fraction(self, seen: int, bad: int) -> None:
        if seen >= min(self.bad_fraction_after, len(self.records)) and bad > self.max_bad_fraction * seen:
            raise DataError(
                f"{bad} of the {seen} records tried so far have unreadable images ({bad / seen:.1%}), more than "
                f"max_bad_fraction={self.max_bad_fraction:g}; fix the data or raise the limit.\n"
                + self.format_report()
            )

    # ------------------------------------------------------------------ images
    def image_path(self, record: Record, k: int) -> Path:
        """The file of ``record``'s ``k``-th image; :class:`DataError` when it resolves
        (symlinks included) outside its dataset root."""
        root = self._roots[record.entry]
        path = (root / record.images[k]).resolve()
        if not path.is_relative_to(root):
            raise DataError(
                f"{record.source}: image path {record.images[k]!r} resolves to {path}, outside the dataset root {root}"
            )
        return path

    def _image_size(self, record: Record, k: int) -> tuple[int, int] | None:
        if record.sizes is not None:
            return record.sizes[k]
        try:
            with Image.open(self.image_path(record, k)) as im:  # reads the header only
                w, h = im.size
                orientation = im.getexif().get(0x0112)
        except DataError:
            raise
        except Exception:
            return None  # unreadable: __getitem__ will find out and count it
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)

    def _budget_share(self, record: Record) -> int | None:
        if self.max_visual_tokens is None:
            return None
        return self.max_visual_tokens // max(len(record.images), 1)

    # ------------------------------------------------------------------ lengths
    def _render(self, messages: Sequence[Mapping[str, str]]) -> str:
        system = None if messages[0]["role"] == "system" else self.processor.settings.system_message
        return render_prompt(self.processor.settings.template, messages, system_message=system)

    def record_length(self, rid: int) -> int:
        """Estimated token count of record ``rid`` (exact unless an image's real size differs
        from its recorded or header size); no image is decoded."""
        return self._record_lengths([rid])[0]

    def _record_lengths(self, rids: Sequence[int]) -> list[int]:
        tok = self.processor.tokenizer
        empty_block = IMG_START_TOKEN + IMG_END_TOKEN
        texts = [self._render(self.records[r].messages).replace(IMAGE_PLACEHOLDER, empty_block) for r in rids]
        counts = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
        out = []
        for rid, n_text in zip(rids, counts, strict=True):
            record = self.records[rid]
            s = self._settings[record.entry]
            tiles = 0
            for k in range(len(record.images)):
                size = self._image_size(record, k)
                if size is None:
                    tiles += 1
                    continue
                plan = plan_tiles(
                    size[0], size[1], tile_size=s.tile_size, min_tiles=s.min_tiles, max_tiles=s.max_tiles,
                    policy=s.policy, thumbnail=s.thumbnail, tokens_per_tile=s.tokens_per_tile,
                    max_visual_tokens=self._budget_share(record),
                )
                tiles += plan.num_tiles
            out.append(len(self.processor._prefix) + n_text + tiles * s.input_tokens_per_tile)
        return out

    @property
    def lengths(self) -> list[int]:
        """Estimated token count of every sample (computed once, without decoding images)."""
        if self._lengths is None:
            per_record: list[int] = []
            for start in range(0, len(self.records), 1000):
                per_record += self._record_lengths(range(start, min(start + 1000, len(self.records))))
            self._lengths = [per_record[r] for r in self._index.tolist()]
        return self._lengths

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self._index)

    def _encode(self, rid: int) -> dict[str, Any]:
        record = self.records[rid]
        tiling = self._tiling[record.entry]
        share = self._budget_share(record)
        processed = []
        for k in range(len(record.images)):
            path = self.image_path(record, k)
            try:
                processed.append(self.processor.process_image(path, max_visual_tokens=share, **tiling))
            except ImageError as e:
                raise _Skip("bad", f"{record.source}: {e}") from e
        sample = self.processor.encode_conversation(list(record.messages), processed)
        ids, labels = sample.input_ids, sample.labels
        assert labels is not None
        limit = self.max_seq_length
        if limit is not None and len(ids) > limit:
            if self.truncation == "drop":
                raise _Skip("long", f"{record.source}: {len(ids)} tokens > max_seq_length {limit}")
            ends = [i for i, t in enumerate(ids) if t == self._end_id] if processed else []
            keep = ends[-1] + 1 if ends else 0
            if keep > limit or all(v == IGNORE_INDEX for v in labels[:limit]):
                raise _Skip("long", f"{record.source}: {len(ids)} tokens cannot be cut to {limit}")
            ids, labels = ids[:limit], labels[:limit]
            with self._lock:
                self._truncated += 1
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": torch.cat([p.pixel_values for p in processed]) if processed else None,
            "image_tiles": [p.plan.num_tiles for p in processed],
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        i %= n
        for step in range(n):
            rid = int(self._index[(i + step) % n])
            with self._lock:
                known_bad = rid in self._bad or rid in self._too_long
                if not known_bad:
                    self._seen.add(rid)
            if known_bad:
                continue
            try:
                item = self._encode(rid)
            except _Skip as skip:
                kind, message = skip.args
                if kind == "bad":
                    self._fail(rid, message)
                else:
                    with self._lock:
                        self._too_long.add(rid)
                continue
            if step:
                with self._lock:
                    self._substituted += 1
            with self._lock:
                seen, bad = len(self._seen), len(self._bad)
            self._check_fraction(seen, bad)
            return item
        raise DataError(f"no usable sample in the dataset.\n{self.format_report()}")


# --------------------------------------------------------------------------------- batching


def collate_for_training(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    padding_side: str = "right",
    *,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """Pad and stack dataset items into model inputs.

    Returns ``input_ids`` and ``attention_mask`` ``[B, L]``, ``labels`` ``[B, L]`` (``-100`` on
    padding), ``pixel_values`` (every image's tiles concatenated in sample order, ``None`` when
    the batch has no image) and ``image_tiles`` (LongTensor of tiles per image, ``None``
    without images). The dict can be passed to the model as ``model(**batch)``.
    """
    if not features:
        raise ConfigError("collate_for_training needs at least one feature")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if pad_token_id is None:
        raise ConfigError("pad_token_id is None; set tokenizer.pad_token")
    seqs = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
    labels = []
    for f, ids in zip(features, seqs, strict=True):
        if f.get("labels") is None:
            raise ConfigError("every feature needs 'labels' (build features with InternVLDataset)")
        lab = torch.as_tensor(f["labels"], dtype=torch.long)
        if lab.shape != ids.shape:
            raise ConfigError(f"labels {list(lab.shape)} and input_ids {list(ids.shape)} differ in length")
        labels.append(lab)
    width = max(len(s) for s in seqs)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = len(seqs)
    input_ids = torch.full((batch, width), int(pad_token_id), dtype=torch.long)
    label_out = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for b, (ids, lab) in enumerate(zip(seqs, labels, strict=True)):
        n = len(ids)
        where = slice(width - n, width) if padding_side == "left" else slice(0, n)
        input_ids[b, where], label_out[b, where], mask[b, where] = ids, lab, 1
    pixels, tiles = [], []
    for f in features:
        pv = f.get("pixel_values")
        per_image = list(f.get("image_tiles") or [])
        if pv is None:
            if per_image:
                raise ConfigError(f"a feature lists image_tiles {per_image} but has no pixel_values")
            continue
        per_image = per_image or [int(pv.shape[0])]
        if sum(per_image) != pv.shape[0]:
            raise ConfigError(f"a feature has {pv.shape[0]} tiles but image_tiles {per_image}")
        pixels.append(pv)
        tiles += per_image
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": label_out,
        "pixel_values": torch.cat(pixels) if pixels else None,
        "image_tiles": torch.tensor(tiles, dtype=torch.long) if tiles else None,
    }


@dataclass
class TrainingCollator:
    """:func:`collate_for_training` as a callable ``data_collator`` (picklable for workers)."""

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return collate_for_training(
            features, self.pad_token_id, self.padding_side, pad_to_multiple_of=self.pad_to_multiple_of
        )


def length_grouped_sampler(
    dataset: InternVLDataset,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    seed: int = 0,
) -> torch.utils.data.Sampler:
    """transformers' length-grouped sampler over :attr:`InternVLDataset.lengths` (no image is
    decoded). ``batch_size`` is the per-step batch (times gradient accumulation, as Trainer
    uses). With ``num_replicas`` > 1 the distributed variant is returned (call its
    ``set_epoch`` each epoch)."""
    from transformers.trainer_pt_utils import DistributedLengthGroupedSampler, LengthGroupedSampler

    if num_replicas is not None and num_replicas > 1:
        return DistributedLengthGroupedSampler(
            batch_size, num_replicas=num_replicas, rank=rank or 0, seed=seed, lengths=dataset.lengths
        )
    return LengthGroupedSampler(batch_size, lengths=dataset.lengths, generator=generator)
