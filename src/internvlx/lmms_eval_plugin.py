"""An lmms-eval model for internvlx checkpoints (``--model internvlx``).

lmms-eval is optional and heavy (it pins torchvision, wandb, datasets, spaCy...), so it is not
an internvlx dependency. When it is importable, :class:`InternVLX` subclasses its ``lmms``
base class; otherwise it is a plain class with the same interface, usable and testable
without lmms-eval.

Registration with lmms-eval (0.7 and later) goes through the ``lmms_eval.models`` entry-point
group, whose payload is :func:`lmms_eval_manifest`::

    [project.entry-points."lmms_eval.models"]
    internvlx = "internvlx.lmms_eval_plugin:lmms_eval_manifest"

then ``lmms-eval --model internvlx --model_args pretrained=/path/to/model,batch_size=4 ...``.
Model arguments: ``pretrained`` (model directory), ``device``, ``dtype``, ``batch_size``,
``lvtc`` (``on``/``off``), ``policy``, ``max_tiles``, ``max_visual_tokens``.

Requests (``Instance.args``) follow lmms-eval's "simple" model protocol:
``generate_until``: ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``;
``loglikelihood``: ``(context, doc_to_target, doc_to_visual, doc_id, task, split)`` where
``doc_to_target`` is the continuation string or a function of the document. Visuals come from
``doc_to_visual(self.task_dict[task][split][doc_id])`` (PIL images or paths; videos are not
supported). Greedy decoding unless ``temperature > 0``; the reply is cut at the first of the
``until`` strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigError

try:  # pragma: no cover - depends on the environment
    from lmms_eval.api.model import lmms as _LmmsBase

    HAVE_LMMS_EVAL = True
except ImportError:  # pragma: no cover - depends on the environment
    _LmmsBase = object
    HAVE_LMMS_EVAL = False

__all__ = ["HAVE_LMMS_EVAL", "InternVLX", "lmms_eval_manifest"]

_GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")


def lmms_eval_manifest() -> Any:
    """The ``ModelManifest`` lmms-eval's entry-point loader expects (needs lmms-eval)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="internvlx", simple_class_path=f"{__name__}.InternVLX")


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if isinstance(visuals, (list, tuple)):
        out: list[Any] = []
        for v in visuals:
            out += _flatten(v)
        return out
    return [visuals]


def _bool_arg(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "1", "yes"):
        return True
    if text in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"lvtc must be on or off, got {value!r}")


class InternVLX(_LmmsBase):  # type: ignore[misc, valid-type]
    """lmms-eval model wrapping :class:`~internvlx.InternVLXForConditionalGeneration`.

    Pass ``pretrained`` (a model directory) or an already loaded ``model`` and ``processor``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: Any = None,
        processor: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        lvtc: Any = None,
        policy: str | None = None,
        max_tiles: int | str | None = None,
        max_visual_tokens: int | str | None = None,
        max_new_tokens: int | str = 256,
        **unused: Any,
    ) -> None:
        super().__init__()
        if not hasattr(self, "task_dict"):  # lmms' __init__ sets these; without lmms-eval we do
            self.task_dict: dict[str, Any] = {}
            self._rank, self._world_size = 0, 1
        from .evaluation import load_for_eval, sync_processor

        if model is None:
            if pretrained is None:
                raise ConfigError("InternVLX needs pretrained=MODEL_DIR (or model= and processor=)")
            model, processor = load_for_eval(pretrained, dtype=dtype, lvtc=_bool_arg(lvtc), device=device)
        elif processor is None:
            raise ConfigError("pass the processor together with the model")
        self.model = model
        self.processor = sync_processor(model, processor)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size!r}")
        self.max_new_tokens = int(max_new_tokens)
        self.tiling: dict[str, Any] = {}
        if policy is not None:
            self.tiling["policy"] = str(policy)
        if max_tiles is not None:
            self.tiling["max_tiles"] = int(max_tiles)
            self.tiling["min_tiles"] = min(self.processor.settings.min_tiles, int(max_tiles))
        self.max_visual_tokens = None if max_visual_tokens is None else int(max_visual_tokens)
        self.unused_args = dict(unused)

    # lmms-eval reads these
    @property
    def rank(self) -> int:
        return getattr(self, "_rank", 0)

    @property
    def world_size(self) -> int:
        return getattr(self, "_world_size", 1)

    @property
    def device(self) -> Any:
        return self.model.device

    # ----------------------------------------------------------------------- helpers
    def _visuals(self, doc_to_visual: Callable[[Any], Any] | None, doc_id: Any, task: str, split: str) -> list[Any]:
        if doc_to_visual is None:
            return []
        doc = self.task_dict[task][split][doc_id]
        visuals = _flatten(doc_to_visual(doc))
        for v in visuals:
            if isinstance(v, str) and v.lower().endswith((".mp4", ".avi", ".mov", ".mkv", ".webm")):
                raise ConfigError(f"InternVLX in lmms-eval handles images only, got the video {v}")
        return visuals

    def _batch(self, contexts: Sequence[str], visuals: Sequence[list[Any]]) -> Any:
        convs = [[{"role": "user", "content": c}] for c in contexts]
        return self.processor(convs, [list(v) for v in visuals], max_visual_tokens=self.max_visual_tokens,
                              **self.tiling)

    def _feed(self, batch: Any) -> dict[str, Any]:
        feed = {k: v.to(self.model.device) for k, v in batch.items() if k != "image_tiles"}
        if "pixel_values" in feed:
            feed["pixel_values"] = feed["pixel_values"].to(self.model.dtype)
        return feed

    def _settings(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        until = gen_kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        settings: dict[str, Any] = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)}
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        if temperature > 0:
            settings.update(do_sample=True, temperature=temperature, top_p=float(gen_kwargs.get("top_p") or 1.0))
        else:
            settings["do_sample"] = False
        settings["num_beams"] = int(gen_kwargs.get("num_beams") or 1)
        return settings, [u for u in until if isinstance(u, str) and u]

    # ----------------------------------------------------------------------- lmms API
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Answer each request; consecutive requests with equal settings share a batch."""
        import torch

        jobs = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            settings, until = self._settings(dict(gen_kwargs or {}))
            jobs.append((context, self._visuals(doc_to_visual, doc_id, task, split), settings, until))
        out: list[str] = []
        i = 0
        while i < len(jobs):
            group = [jobs[i]]
            while (len(group) < self.batch_size and i + len(group) < len(jobs)
                   and jobs[i + len(group)][2] == group[0][2]):
                group.append(jobs[i + len(group)])
            batch = self._batch([j[0] for j in group], [j[1] for j in group])
            with torch.no_grad():
                ids = self.model.generate(
                    **self._feed(batch), **group[0][2], eos_token_id=self.processor.eos_token_id,
                    pad_token_id=self.processor.tokenizer.pad_token_id,
                )
            width = batch["input_ids"].shape[1]
            for row, (_, _, _, until) in zip(ids, group, strict=True):
                text = self.processor.decode_response(row[width:].tolist())
                for stop in until:
                    text = text.split(stop, 1)[0]
                out.append(text)
            i += len(group)
        return out

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """``(sum of log-probabilities of the continuation's tokens after the prompt, whether
        greedy decoding would produce exactly them)`` per request. The prompt is the chat
        prompt up to the assistant's turn; the continuation is tokenized on its own."""
        import torch

        results = []
        for req in requests:
            context, target, doc_to_visual, doc_id, task, split = req.args
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            batch = self._batch([context], [visuals])
            cont = self.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont:
                results.append((0.0, True))
                continue
            feed = self._feed(batch)
            prompt_len = feed["input_ids"].shape[1]
            extra = torch.tensor([cont], dtype=torch.long, device=self.model.device)
            feed["input_ids"] = torch.cat([feed["input_ids"], extra], dim=1)
            feed["attention_mask"] = torch.cat([feed["attention_mask"], torch.ones_like(extra)], dim=1)
            with torch.no_grad():
                logits = self.model(**feed).logits[0, prompt_len - 1: prompt_len - 1 + len(cont)].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = extra[0]
            total = float(logprobs.gather(1, targets[:, None]).sum())
            greedy = bool((logits.argmax(dim=-1) == targets).all())
            results.append((total, greedy))
        return results

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("InternVLX does not implement lmms-eval's multi-round generation")
