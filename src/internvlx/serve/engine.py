"""A batching generation engine: one worker thread owns the model and serves a bounded queue.

* **Queue.** `Engine.submit` puts an encoded request (`GenerationRequest`: a processor `Sample`
  plus sampling settings) in a FIFO of at most `max_queue` waiting requests; a full queue
  raises `QueueFullError` at once (the server answers 503) instead of waiting.
* **Batching.** The worker takes the oldest waiting request and, in queue order, up to
  `max_batch - 1` others with the same LVTC mode (LVTC is a model-level switch, so a batch
  never mixes on and off; the worker switches the model between batches and keeps the
  trained LVTC module aside while it is off). Everything else is per row: `max_tokens`,
  `temperature`, `top_p`, `seed` and `stop` may differ inside one batch. Prompts are
  left-padded (`InternVLXProcessor.collate`), which gives each row the answer it would get
  alone with greedy decoding. Batches are static: a request that arrives while a batch runs
  waits for the next one.
* **Sampling.** Rows with `temperature > 0` draw their tokens from their own
  `torch.Generator` seeded with the request's `seed` (a random one when absent): the row's
  scores go through transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` (top-k 50
  unless the model's generation config says otherwise, as in `generate`) and
  `TopPLogitsWarper`, then
  `torch.multinomial(..., generator=...)`; the drawn token is forced through greedy
  selection. That is the draw `model.chat(..., do_sample=True)` makes after
  `torch.manual_seed(seed)`, so a seeded request gets the same answer alone, in any batch,
  and from `model.chat`.
* **Streaming and stops.** A `StoppingCriteria` sees each new token of every row: it decodes
  the row, cuts it at the first stop string (the template's, e.g. `<|im_end|>`, plus the
  request's `stop`), sends the new text to that request's event queue (holding back what
  could still become a stop string, trailing white space and incomplete characters), and
  returns a per-row "done" tensor, so finished rows stop while the others continue.
  The final text is `decode_response`'s: cut at the stop and stripped.
* **Cancellation.** `RequestHandle.cancel()` removes a waiting request from the queue at
  once; a running row is marked done at its next decoding step (the whole batch ends early
  when every row is done). Either way its slot is free again.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import queue
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..errors import ConfigError
from ..processing import InternVLXProcessor, Sample
from ..templates import get_template

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The engine's waiting queue is full; try again later."""


class EngineStoppedError(RuntimeError):
    """The engine is stopped (or stopping) and takes no more requests."""


@dataclass
class GenerationRequest:
    """One encoded conversation and how to continue it.

    `sample` must come from `engine.processor_for(lvtc)` (the `<IMG_CONTEXT>` slot count
    depends on the LVTC mode). `temperature == 0` is greedy; `top_k=None` is transformers'
    default for the model (its `generation_config.top_k`, else 50; 0 turns top-k off);
    `lvtc=None` keeps the model's own setting.
    """

    sample: Sample
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    lvtc: bool | None = None

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


@dataclass(frozen=True)
class Delta:
    """New answer text (the concatenated deltas of a request equal its final text)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The request is complete: `finish_reason` is "stop", "length" or "cancelled"."""

    text: str
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Delta | Finished | Failed
_ids = itertools.count(1)


class RequestHandle:
    """What `Engine.submit` returns: the request's events, its state and `cancel()`.

    With an event loop (`submit(..., loop=...)`), read events with `await next_event()`;
    without one, with `iter_events()` or `result()`.
    """

    def __init__(self, engine: Engine, request: GenerationRequest, lvtc: bool,
                 loop: asyncio.AbstractEventLoop | None):
        self.id = next(_ids)
        self.request = request
        self.lvtc = lvtc
        self.state = "queued"  # queued -> running -> done
        self.cancelled = False
        self.outcome: Finished | Failed | None = None
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._engine = engine
        self._loop = loop
        self._async_events: asyncio.Queue[Event] | None = asyncio.Queue() if loop is not None else None
        self._sync_events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop this request: dropped from the queue, or its row stopped at the next step."""
        self._engine._cancel(self)

    def _emit(self, event: Event) -> None:
        if self._async_events is None:
            self._sync_events.put(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._async_events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds without one."""
        if self._async_events is None:
            raise RuntimeError("this request was submitted without an event loop; use iter_events()")
        try:
            return await asyncio.wait_for(self._async_events.get(), timeout)
        except TimeoutError:
            return None

    def iter_events(self, timeout: float | None = None):
        """Events until the request is finished (blocking; for requests submitted without a loop)."""
        if self._async_events is not None:
            raise RuntimeError("this request was submitted with an event loop; use next_event()")
        while True:
            event = self._sync_events.get(timeout=timeout)
            yield event
            if isinstance(event, (Finished, Failed)):
                return

    def result(self, timeout: float | None = None) -> Finished:
        """Wait for the outcome (any thread); raises the error of a failed request."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} is not finished after {timeout} s")
        if isinstance(self.outcome, Failed):
            raise self.outcome.error
        return self.outcome


class Engine:
    """See the module docstring. `start()` launches the worker; `stop()` ends it."""

    def __init__(self, model: Any, processor: InternVLXProcessor, *, max_batch: int = 8,
                 max_queue: int = 32, batch_wait_ms: float = 5.0):
        if max_batch < 1 or max_queue < 0:
            raise ConfigError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch}, {max_queue}")
        self.model = model
        self.max_batch = int(max_batch)
        self.max_queue = int(max_queue)
        self.batch_wait = max(0.0, batch_wait_ms) / 1000
        self.base_config = copy.deepcopy(model.config)
        self.default_lvtc = bool(model.config.lvtc.enabled)
        self.tokenizer = processor.tokenizer
        self.eos_token_id = processor.eos_token_id
        self.pad_token_id = processor.tokenizer.pad_token_id
        self.stop_strings = tuple(get_template(processor.settings.template).stop_strings)
        generation_config = getattr(model, "generation_config", None)
        top_k = getattr(generation_config, "top_k", None)
        self.default_top_k = 50 if top_k is None else int(top_k)  # transformers' default
        # SentencePiece byte-fallback pieces: a run of them decodes all at once (one U+FFFD per
        # byte while it is not valid UTF-8), so text from a trailing run is not final yet
        byte_piece = re.compile(r"<0x[0-9A-Fa-f]{2}>")
        self.byte_token_ids = frozenset(
            i for t, i in processor.tokenizer.get_vocab().items() if byte_piece.fullmatch(t))
        self._base_processor = processor
        self._processors: dict[bool, InternVLXProcessor | ConfigError] = {}
        self._configs: dict[bool, Any] = {}
        self._lvtc_modules: dict[bool, Any] = {}
        self._cond = threading.Condition()
        self._queue: deque[RequestHandle] = deque()
        self._running: set[RequestHandle] = set()
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = {"submitted": 0, "completed": 0, "cancelled": 0, "failed": 0, "rejected": 0,
                      "batches": 0, "largest_batch": 0}

    # ------------------------------------------------------------------ configuration
    def config_for(self, lvtc: bool | None) -> Any:
        """The model configuration with LVTC on or off (`None`: the model's own); shared, do not
        modify it. Raises `ConfigError` when the model cannot run in that mode."""
        flag = self.default_lvtc if lvtc is None else bool(lvtc)
        if flag not in self._configs:
            try:
                cfg = copy.deepcopy(self.base_config)
                if flag != cfg.lvtc.enabled:
                    cfg.lvtc = {**vars(cfg.lvtc), "enabled": flag}
                    cfg.validate_sections()
                self._configs[flag] = cfg
            except ConfigError as e:
                self._configs[flag] = e
        found = self._configs[flag]
        if isinstance(found, ConfigError):
            raise found
        return found

    def processor_for(self, lvtc: bool | None) -> InternVLXProcessor:
        """The processor whose `<IMG_CONTEXT>` slot count matches the model in that LVTC mode.
        Raises `ConfigError` when the model cannot run in that mode."""
        flag = self.default_lvtc if lvtc is None else bool(lvtc)
        if flag not in self._processors:
            try:
                cfg = self.config_for(flag)
                settings = self._base_processor.settings.replace(
                    input_tokens_per_tile=cfg.input_tokens_per_tile, tokens_per_tile=cfg.tokens_per_tile)
                self._processors[flag] = InternVLXProcessor(self.tokenizer, settings)
            except ConfigError as e:
                self._processors[flag] = e
        found = self._processors[flag]
        if isinstance(found, ConfigError):
            raise found
        return found

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Engine:
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("a stopped engine cannot be restarted; build a new one")
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name="internvlx-engine", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Refuse new requests, fail the waiting ones, stop the running rows, join the worker."""
        with self._cond:
            self._stopping = True
            waiting = list(self._queue)
            self._queue.clear()
            for handle in self._running:
                handle.cancelled = True
            self._cond.notify_all()
        for handle in waiting:
            self._finish(handle, Failed(EngineStoppedError("the server is shutting down")))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def pause(self) -> None:
        """Let the running batch finish but start no new one (requests keep queueing)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def counts(self) -> dict[str, int]:
        """Requests waiting (`queued`) and rows still generating (`active`)."""
        with self._cond:
            return {"queued": len(self._queue), "active": len(self._running)}

    # ------------------------------------------------------------------ requests
    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        """Queue a request. Raises `QueueFullError` when `max_queue` requests already wait,
        `EngineStoppedError` after `stop()`, `ConfigError` for an LVTC mode the model lacks."""
        flag = self.default_lvtc if request.lvtc is None else bool(request.lvtc)
        self.processor_for(flag)  # raises for an impossible LVTC mode
        handle = RequestHandle(self, request, flag, loop)
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("the engine is stopped")
            if len(self._queue) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFullError(
                    f"the request queue is full ({self.max_queue} waiting, {len(self._running)} generating)")
            self._queue.append(handle)
            self.stats["submitted"] += 1
            self._cond.notify_all()
        return handle

    def _cancel(self, handle: RequestHandle) -> None:
        with self._cond:
            if handle.state == "done":
                return
            handle.cancelled = True
            queued = handle.state == "queued"
            if queued:
                self._queue.remove(handle)
        if queued:
            self._finish(handle, Finished("", "cancelled", 0))

    def _finish(self, handle: RequestHandle, outcome: Finished | Failed) -> None:
        with self._cond:
            if handle.state == "done":
                return
            handle.state = "done"
            handle.outcome = outcome
            handle.finished_at = time.monotonic()
            self._running.discard(handle)
            if isinstance(outcome, Failed):
                self.stats["failed"] += 1
            elif outcome.finish_reason == "cancelled":
                self.stats["cancelled"] += 1
            else:
                self.stats["completed"] += 1
            self._cond.notify_all()
        handle._emit(outcome)
        handle._done.set()

    # ------------------------------------------------------------------ worker
    def _worker(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._run_batch(batch)
        finally:
            try:
                self._set_lvtc(self.default_lvtc)
            except Exception:  # pragma: no cover - never leave the thread with an exception
                logger.exception("could not restore the model's LVTC setting")

    def _next_batch(self) -> list[RequestHandle] | None:
        with self._cond:
            while not self._stopping and (self._paused or not self._queue):
                self._cond.wait()
            if self._stopping:
                return None
            if self.batch_wait and len(self._queue) < self.max_batch:
                deadline = time.monotonic() + self.batch_wait
                while not self._stopping and len(self._queue) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stopping:
                    return None
                if self._paused or not self._queue:
                    return []
            flag = self._queue[0].lvtc
            batch = [h for h in self._queue if h.lvtc == flag][: self.max_batch]
            now = time.monotonic()
            for handle in batch:
                self._queue.remove(handle)
                handle.state = "running"
                handle.started_at = now
                self._running.add(handle)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            return batch

    def _set_lvtc(self, flag: bool) -> None:
        model = self.model
        if bool(model.config.lvtc.enabled) == flag:
            return
        if not flag:
            self._lvtc_modules[True] = model.lvtc  # keep the (trained) compressor for later
            model.configure_lvtc(False)
            return
        model.configure_lvtc(True)  # a compressor at its documented initialisation ...
        if True in self._lvtc_modules:
            model.lvtc = self._lvtc_modules[True]  # ... replaced by the one set aside
        else:
            self._lvtc_modules[True] = model.lvtc

    def _run_batch(self, batch: list[RequestHandle]) -> None:
        live = []
        for handle in batch:
            if handle.cancelled:
                self._finish(handle, Finished("", "cancelled", 0))
            else:
                live.append(handle)
        if not live:
            return
        rows = [_Row(self, handle) for handle in live]
        try:
            self._set_lvtc(live[0].lvtc)
            processor = self.processor_for(live[0].lvtc)
            inputs = processor.collate([h.request.sample for h in live])
            device = self.model.device
            inputs = {k: v.to(device) for k, v in inputs.items() if k != "image_tiles"}
            kwargs: dict[str, Any] = {
                "max_new_tokens": max(h.request.max_new_tokens for h in live),
                "do_sample": False,
                "eos_token_id": self.eos_token_id,
                "pad_token_id": self.pad_token_id,
                "stopping_criteria": StoppingCriteriaList([_RowStopper(rows)]),
            }
            if any(h.request.do_sample for h in live):
                kwargs["logits_processor"] = LogitsProcessorList([_RowSampler(rows, self.default_top_k)])
            with torch.no_grad():
                self.model.generate(**inputs, **kwargs)
        except Exception as e:
            logger.exception("generation failed for a batch of %d request(s)", len(live))
            for row in rows:
                if not row.done:
                    row.done = True
                    self._finish(row.handle, Failed(e))
            return
        for row in rows:  # generate() ended before a row's own limit: cannot happen, but be safe
            if not row.done:
                row.finish("length")


class _Row:
    """Per-row decoding state: generated ids, emitted text, stop strings, RNG."""

    def __init__(self, engine: Engine, handle: RequestHandle):
        self.engine = engine
        self.handle = handle
        self.request = handle.request
        self.ids: list[int] = []
        self.emitted = ""
        self.done = False
        self.stops = tuple(dict.fromkeys(s for s in (*engine.stop_strings, *self.request.stop) if s))
        self.generator: torch.Generator | None = None
        seed = self.request.seed
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        tok = engine.tokenizer
        self.pad_text = tok.pad_token if tok.pad_token and tok.pad_token != tok.eos_token else None

    def text(self, ids: list[int] | None = None) -> tuple[str, bool]:
        """The answer so far, cut at the first stop string, and whether one was found."""
        raw = self.engine.tokenizer.decode(self.ids if ids is None else ids, skip_special_tokens=False)
        if self.pad_text:
            raw = raw.replace(self.pad_text, "")
        cut = min((i for i in (raw.find(s) for s in self.stops) if i >= 0), default=-1)
        return (raw[:cut], True) if cut >= 0 else (raw, False)

    def safe_prefix(self, text: str) -> str:
        """What can be sent now: nothing that may still turn into a stop string, trailing white
        space (the final answer is stripped) or an incomplete character (U+FFFD at the end;
        `step` also holds back the text of trailing byte-fallback pieces)."""
        out = text.lstrip().rstrip("\ufffd")
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(out)), hold, -1):
                if out.endswith(stop[:k]):
                    hold = k
                    break
        if hold:
            out = out[:-hold]
        return out.rstrip()

    def step(self, token: int) -> None:
        if self.handle.cancelled:
            self.finish("cancelled")
            return
        self.ids.append(int(token))
        if self.handle.first_token_at is None:
            self.handle.first_token_at = time.monotonic()
        text, hit = self.text()
        if hit or token == self.engine.eos_token_id:
            self.finish("stop", text)
        elif len(self.ids) >= self.request.max_new_tokens:
            self.finish("length", text)
        else:
            pending = 0  # trailing byte-fallback pieces: their text may still change
            while pending < len(self.ids) and self.ids[-1 - pending] in self.engine.byte_token_ids:
                pending += 1
            safe = self.safe_prefix(self.text(self.ids[:-pending])[0] if pending else text)
            if len(safe) > len(self.emitted) and safe.startswith(self.emitted):
                self.handle._emit(Delta(safe[len(self.emitted):]))
                self.emitted = safe

    def finish(self, reason: str, text: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        if text is None:
            text, _ = self.text()
        final = text.strip()
        if final.startswith(self.emitted):
            if len(final) > len(self.emitted):
                self.handle._emit(Delta(final[len(self.emitted):]))
        else:  # the decoded text changed behind what was streamed (should not happen)
            logger.warning("request %d: streamed text is not a prefix of the final answer", self.handle.id)
        self.engine._finish(self.handle, Finished(final, reason, len(self.ids)))


class _RowStopper(StoppingCriteria):
    """Feeds each row its new token; returns which rows are done (finished or cancelled)."""

    def __init__(self, rows: list[_Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, tokens, strict=True):
            if not row.done:
                row.step(token)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


class _RowSampler(LogitsProcessor):
    """Per-row multinomial sampling with each row's own generator; the drawn token is left as
    the only finite score so that greedy selection picks it."""

    def __init__(self, rows: list[_Row], default_top_k: int):
        self.rows = rows
        self.warpers: list[list[LogitsProcessor]] = []
        for row in rows:  # transformers' order: temperature, top-k, top-p
            req = row.request
            warpers: list[LogitsProcessor] = []
            top_k = default_top_k if req.top_k is None else req.top_k
            if req.do_sample and req.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(req.temperature))
            if req.do_sample and top_k:
                warpers.append(TopKLogitsWarper(top_k))
            if req.do_sample and req.top_p < 1.0:
                warpers.append(TopPLogitsWarper(req.top_p))
            self.warpers.append(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        for i, row in enumerate(self.rows):
            if row.done or not row.request.do_sample:
                continue
            if row.generator is None:
                row.generator = torch.Generator(device=scores.device).manual_seed(row.seed)
            s = scores[i : i + 1]
            for warper in self.warpers[i]:
                s = warper(input_ids[i : i + 1], s)
            probs = torch.nn.functional.softmax(s, dim=-1)
            token = torch.multinomial(probs, num_samples=1, generator=row.generator)[0, 0]
            out[i] = float("-inf")
            out[i, token] = 0.0
        return out
