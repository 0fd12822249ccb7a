"""`InternVLXProcessor`: images + conversations → `input_ids`, `attention_mask`, `pixel_values`.

It tiles each image (stock InternVL tiling or RVTC, with an optional token budget), renders
the conversation with the model's chat template, expands every `<image>` into
`<img>` + `<IMG_CONTEXT>`×(slots per tile × tiles) + `</img>` (slots per tile are the LLM-input
count: compressed when LVTC is on), tokenizes so that text typed by a user can never become
an image slot, and left-pads batches. Saved beside the model (`processor_config.json` +
tokenizer files) and loadable with `AutoProcessor` once `internvlx` is imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature

from .configuration import TILE_POLICIES, InternVLXConfig
from .errors import ConfigError, PromptError
from .images import DEFAULT_MAX_PIXELS, ImageSource, preprocess_image
from .templates import (
    IMAGE_PLACEHOLDER,
    IMG_CONTEXT_TOKEN,
    assistant_spans,
    encode_prompt,
    expand_image_placeholders,
    get_template,
)
from .tiling import TilePlan

PROCESSOR_CONFIG = "processor_config.json"
IGNORE_INDEX = -100  # label of a token the loss ignores (PyTorch's cross-entropy default)
_HUB_KWARGS = ("_from_auto", "revision", "trust_remote_code", "cache_dir", "token", "local_files_only",
               "force_download", "subfolder", "use_fast")
Message = Mapping[str, Any]


@dataclass
class ProcessorSettings:
    """Everything the processor needs besides the tokenizer (stored in processor_config.json)."""

    tile_size: int = 448
    tokens_per_tile: int = 256  # full-resolution visual tokens per tile (token budgets count these)
    input_tokens_per_tile: int = 256  # <IMG_CONTEXT> slots per tile in the prompt
    min_tiles: int = 1
    max_tiles: int = 12
    policy: str = "stock"
    thumbnail: bool = True
    template: str = "internlm2-chat"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    alpha: str = "white"
    system_message: str | None = None

    @classmethod
    def from_config(cls, config: InternVLXConfig, **overrides: Any) -> ProcessorSettings:
        t = config.tiling
        base = cls(
            tile_size=config.tile_size, tokens_per_tile=config.tokens_per_tile,
            input_tokens_per_tile=config.input_tokens_per_tile, min_tiles=t.min_tiles,
            max_tiles=t.max_tiles, policy=t.policy, thumbnail=t.thumbnail, template=config.template,
        )
        return base.replace(**overrides)

    def replace(self, **overrides: Any) -> ProcessorSettings:
        known = set(asdict(self))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown processor setting(s) {unknown}; known: {sorted(known)}")
        out = ProcessorSettings(**{**asdict(self), **overrides})
        if out.policy not in TILE_POLICIES:
            raise ConfigError(f"policy must be one of {TILE_POLICIES}, got {out.policy!r}")
        get_template(out.template)  # raises on an unknown template
        return out


@dataclass
class ProcessedImage:
    pixel_values: torch.Tensor
    plan: TilePlan


@dataclass
class Sample:
    """One encoded conversation (before batching). `labels` (from `encode_conversation`): the
    token id where the model is trained to predict it, `IGNORE_INDEX` (-100) elsewhere."""

    input_ids: list[int]
    images: list[ProcessedImage] = field(default_factory=list)
    labels: list[int] | None = None


class InternVLXProcessor:
    """Turns images and chat messages into model inputs (see the module docstring)."""

    def __init__(self, tokenizer: Any, settings: ProcessorSettings | None = None, **overrides: Any):
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError("InternVLXProcessor needs a fast tokenizer (convert SentencePiece models first)")
        self.tokenizer = tokenizer
        self.settings = (settings or ProcessorSettings()).replace(**overrides)
        if IMG_CONTEXT_TOKEN not in tokenizer.get_added_vocab():
            raise ConfigError(f"the tokenizer has no {IMG_CONTEXT_TOKEN} token; add InternVL's special tokens")
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        # special tokens the tokenizer puts around a text (InternLM2: <s> in front)
        self._prefix = tokenizer("", add_special_tokens=True)["input_ids"]

    @classmethod
    def from_config(cls, config: InternVLXConfig, tokenizer: Any, **overrides: Any) -> InternVLXProcessor:
        processor = cls(tokenizer, ProcessorSettings.from_config(config, **overrides))
        if processor.image_token_id != config.image_token_id:
            raise ConfigError(
                f"tokenizer's {IMG_CONTEXT_TOKEN} id {processor.image_token_id} differs from the model's "
                f"image_token_id {config.image_token_id}"
            )
        return processor

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        payload = {"processor_class": type(self).__name__, **asdict(self.settings)}
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(payload, indent=2, ensure_ascii=False))

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> InternVLXProcessor:
        for key in _HUB_KWARGS:  # what AutoProcessor forwards; we only read local directories
            overrides.pop(key, None)
        directory = Path(directory)
        path = directory / PROCESSOR_CONFIG
        if not path.exists():
            raise ConfigError(f"{path} is missing: save the processor with the model (processor.save_pretrained)")
        data = json.loads(path.read_text())
        data.pop("processor_class", None)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(tokenizer, ProcessorSettings().replace(**data), **overrides)

    # ------------------------------------------------------------------ images
    def process_image(self, image: ImageSource, **tiling: Any) -> ProcessedImage:
        s = self.settings.replace(**{k: v for k, v in tiling.items() if k != "max_visual_tokens"})
        pixel_values, plan = preprocess_image(
            image, tile_size=s.tile_size, min_tiles=s.min_tiles, max_tiles=s.max_tiles, policy=s.policy,
            thumbnail=s.thumbnail, tokens_per_tile=s.tokens_per_tile,
            max_visual_tokens=tiling.get("max_visual_tokens"), alpha=s.alpha, max_pixels=s.max_pixels,
        )
        return ProcessedImage(pixel_values, plan)

    # ------------------------------------------------------------------ text
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The prompt string (with `<image>` placeholders still in place)."""
        from .templates import render_prompt

        msgs = list(messages)
        if add_generation_prompt and (not msgs or msgs[-1].get("role") != "assistant"):
            msgs.append({"role": "assistant", "content": None})
        return render_prompt(self.settings.template, msgs, system_message=self.settings.system_message)

    def encode(
        self,
        messages: Sequence[Message],
        images: Sequence[ImageSource] = (),
        *,
        add_generation_prompt: bool = True,
        max_visual_tokens: int | None = None,
        **tiling: Any,
    ) -> Sample:
        """Encode one conversation. `<image>` placeholders in the messages take the images in
        order; when there are none, they are added to the first user message (`<image>\\n` for
        one image, `Image-1: <image>\\nImage-2: <image>\\n…` for several). `max_visual_tokens`
        is the budget of the whole request, shared equally between its images."""
        messages = _with_placeholders(list(messages), len(images))
        share = None if max_visual_tokens is None else max_visual_tokens // max(len(images), 1)
        processed = [self.process_image(img, max_visual_tokens=share, **tiling) for img in images]
        prompt = self.render(messages, add_generation_prompt)
        expanded, spans = expand_image_placeholders(
            prompt, [p.plan.num_tiles for p in processed], self.settings.input_tokens_per_tile
        )
        ids = self._prefix + encode_prompt(self.tokenizer, expanded, spans)
        return Sample(ids, processed)

    def encode_conversation(
        self,
        messages: Sequence[Message],
        images: Sequence[ImageSource | ProcessedImage] = (),
        *,
        max_visual_tokens: int | None = None,
        **tiling: Any,
    ) -> Sample:
        """Encode a complete conversation for training: `input_ids` and `labels`.

        The conversation (optionally led by a system message) must contain at least one
        assistant message. Labels hold the token ids of every assistant message's text and of
        the template separator written after it (e.g. `<|im_end|>`), which is what the model
        must generate after the prompt `encode` builds for that turn; every other token (BOS,
        system, user turns, role prefixes, image blocks) is `IGNORE_INDEX`. Placeholders,
        image expansion and literal-token safety are those of `encode`; `images` may also be
        already processed (`ProcessedImage`), which are used as they are.

        Tokens are found from the tokenizer's character offsets over the whole prompt: a token is
        labelled when its characters overlap an assistant span (a token merged across the start
        of an answer, which the ChatML role line's newline normally prevents, is labelled too);
        tokens inside an image block never are.
        """
        msgs = _with_placeholders([dict(m) for m in messages], len(images))
        if not any(m.get("role") == "assistant" for m in msgs):
            raise PromptError("a training conversation needs at least one assistant message")
        share = None if max_visual_tokens is None else max_visual_tokens // max(len(images), 1)
        processed = [
            img if isinstance(img, ProcessedImage) else self.process_image(img, max_visual_tokens=share, **tiling)
            for img in images
        ]
        system = None if msgs and msgs[0].get("role") == "system" else self.settings.system_message
        prompt, answers = assistant_spans(self.settings.template, msgs, system)
        expanded, blocks = expand_image_placeholders(
            prompt, [p.plan.num_tiles for p in processed], self.settings.input_tokens_per_tile
        )
        # where each character position of `prompt` lands in `expanded`
        growth, at = [], 0
        for a, b in blocks:
            at = prompt.index(IMAGE_PLACEHOLDER, at)
            growth.append((at + len(IMAGE_PLACEHOLDER), (b - a) - len(IMAGE_PLACEHOLDER)))
            at += len(IMAGE_PLACEHOLDER)

        def moved(x: int) -> int:
            return x + sum(delta for end, delta in growth if end <= x)

        answers = [(moved(a), moved(b)) for a, b in answers]
        ids, offsets = encode_prompt(self.tokenizer, expanded, blocks, return_offsets=True)
        labels = []
        for token_id, (start, end) in zip(ids, offsets, strict=True):
            in_image = any(a <= start and end <= b for a, b in blocks)
            in_answer = any((start < b and end > a) or (start == end and a <= start < b) for a, b in answers)
            labels.append(token_id if in_answer and not in_image else IGNORE_INDEX)
        return Sample(self._prefix + ids, processed, [IGNORE_INDEX] * len(self._prefix) + labels)

    def collate(self, samples: Sequence[Sample], padding_side: str = "left") -> BatchFeature:
        """Pad (left by default, as generation needs) and stack a batch of samples."""
        pad = self.tokenizer.pad_token_id
        if pad is None:
            raise ConfigError("the tokenizer has no pad token; set tokenizer.pad_token")
        width = max(len(s.input_ids) for s in samples)
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for i, s in enumerate(samples):
            n = len(s.input_ids)
            where = slice(width - n, width) if padding_side == "left" else slice(0, n)
            ids[i, where] = torch.tensor(s.input_ids, dtype=torch.long)
            mask[i, where] = 1
        data: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        images = [img for s in samples for img in s.images]
        if images:
            data["pixel_values"] = torch.cat([img.pixel_values for img in images])
            data["image_tiles"] = torch.tensor([img.plan.num_tiles for img in images], dtype=torch.long)
        return BatchFeature(data)

    def __call__(
        self,
        messages: Sequence[Message] | Sequence[Sequence[Message]],
        images: Sequence[ImageSource] | Sequence[Sequence[ImageSource]] | None = None,
        *,
        add_generation_prompt: bool = True,
        max_visual_tokens: int | None = None,
        padding_side: str = "left",
        **tiling: Any,
    ) -> BatchFeature:
        """One conversation (a list of messages) with its images, or a batch (a list of
        conversations with a list of image lists)."""
        batched = bool(messages) and not isinstance(messages[0], Mapping)
        convs = list(messages) if batched else [messages]
        if images is None:
            image_lists: list[Sequence[ImageSource]] = [[] for _ in convs]
        elif batched:
            image_lists = list(images)
        else:
            image_lists = [images]
        if len(image_lists) != len(convs):
            raise PromptError(f"{len(convs)} conversations but {len(image_lists)} image lists")
        samples = [
            self.encode(c, imgs, add_generation_prompt=add_generation_prompt,
                        max_visual_tokens=max_visual_tokens, **tiling)
            for c, imgs in zip(convs, image_lists, strict=True)
        ]
        return self.collate(samples, padding_side)

    def decode_response(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Decode generated ids and cut at the template's separator, as InternVL's chat() does."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        return get_template(self.settings.template).strip_response(_drop_pads(text, self.tokenizer))

    @property
    def eos_token_id(self) -> int:
        """The id `chat()` stops on: the template's separator token (e.g. `<|im_end|>`)."""
        token = get_template(self.settings.template).eos_token
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ConfigError(f"the tokenizer has no {token!r} token required by template {self.settings.template!r}")
        return tid


def _drop_pads(text: str, tokenizer: Any) -> str:
    pad = tokenizer.pad_token
    return text.replace(pad, "") if pad and pad != tokenizer.eos_token else text


def _with_placeholders(messages: list[dict], n_images: int) -> list[dict]:
    present = sum(str(m.get("content") or "").count(IMAGE_PLACEHOLDER) for m in messages)
    if present or not n_images:
        return messages
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise PromptError("images were given but the conversation has no user message to attach them to")
    first = users[0]
    if n_images == 1:
        head = f"{IMAGE_PLACEHOLDER}\n"
    else:
        head = "".join(f"Image-{i + 1}: {IMAGE_PLACEHOLDER}\n" for i in range(n_images))
    out = [dict(m) for m in messages]
    out[first]["content"] = head + (out[first].get("content") or "")
    return out
