"""`InternVLXForConditionalGeneration`: InternViT → projector (PVTC or MLP) → decoder LLM.

The vision tower is transformers' `InternVLVisionModel` (bit-exact with InternViT, CLS kept);
the LLM is whatever decoder `AutoModelForCausalLM` builds from `config.text_config`. Images
arrive as `pixel_values [total_tiles, 3, S, S]` — the tiles of every image of every sample,
concatenated in order — and fill the `<IMG_CONTEXT>` slots of `input_ids` in the same order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import InternVLXConfig
from .errors import CheckpointError, ConfigError, ImageError, PromptError
from .lvtc import (
    LVTCCache,
    LVTCCompressor,
    build_layout,
    expand_hidden,
    positions_from_mask,
    run_layers,
)
from .projectors import PVTCProjector, build_projector, resize_cls_scale, resize_position_embeddings

logger = logging.getLogger(__name__)

# Parameters whose shape depends on the tile grid: they are resized, not rejected, when a
# checkpoint is loaded for another tile size or downsample ratio.
_GRID_RESIZERS = {
    "projector.cls_scale": lambda t, cfg: resize_cls_scale(t, cfg.token_grid),
    "vision_model.embeddings.position_embeddings": lambda t, cfg: resize_position_embeddings(t, cfg.patch_grid),
}
# The PVTC local-query input width is M²·Cv: another downsample ratio cannot reuse it.
_RETRAIN_ON_RATIO_CHANGE = ("projector.mlp1.0.weight", "projector.mlp1.1.weight")


class InternVLXPreTrainedModel(PreTrainedModel):
    config_class = InternVLXConfig
    config: InternVLXConfig
    base_model_prefix = "internvlx"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["InternVLVisionLayer", "LlamaDecoderLayer", "Qwen2DecoderLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, PVTCProjector):
            init.normal_(module.cls_scale, mean=0.0, std=1.0)  # torch.randn, as the authors do
        if isinstance(module, LVTCCompressor):
            init.constant_(module.gate, module.gate_init)
            if module.pool_proj is not None:
                init.copy_(module.pool_proj.weight, module.average_pool_weight())


class InternVLXForConditionalGeneration(InternVLXPreTrainedModel, GenerationMixin):
    """InternVL-X (PVTC projector) or the InternVL2 baseline (MLP projector).

    `forward(input_ids, pixel_values, attention_mask, labels=None, ...)` returns
    `CausalLMOutputWithPast` (loss over `labels != -100`); `generate(...)` works as for any
    transformers decoder and returns prompt + new tokens.
    """

    def __init__(self, config: InternVLXConfig):
        super().__init__(config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.projector = build_projector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.lvtc = LVTCCompressor(config) if config.lvtc.enabled else None
        self.post_init()

    def configure_lvtc(self, enabled: bool = True, **fields) -> None:
        """Switch LVTC on or off (or change its settings) on a built model, e.g. for a
        checkpoint trained without it. New LVTC parameters start at their documented init."""
        settings = {**vars(self.config.lvtc), **fields, "enabled": enabled}
        self.config.lvtc = settings  # validated by the config
        self.config.validate_sections()
        if not enabled:
            self.lvtc = None
            return
        ref = self.get_input_embeddings().weight
        self.lvtc = LVTCCompressor(self.config).to(device=ref.device, dtype=ref.dtype)
        self._init_weights(self.lvtc)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict (missing or unexpected keys raise
        `CheckpointError` naming them), plus: loading weights for another tile size or
        downsample ratio resizes `cls_scale` (bilinear) and the ViT position table (bicubic)
        with a warning instead of failing. Any other shape mismatch still fails."""
        if not (Path(pretrained_model_name_or_path) / "config.json").is_file():
            raise CheckpointError(
                f"{pretrained_model_name_or_path} is not a model directory (no config.json there); "
                "models load from local directories only (a training run's model is its output_dir/final)"
            )
        if kwargs.get("ignore_mismatched_sizes"):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *args, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs
        )
        # LVTC switched on for a checkpoint trained without it: its parameters start at their
        # documented initialisation (see LVTCCompressor); everything else must be present.
        missing = {k for k in info["missing_keys"] if not k.startswith("lvtc.")}
        problems = [
            f"{what} keys ({len(keys)}): {', '.join(sorted(keys)[:12])}"
            for what, keys in (("missing", missing), ("unexpected", info["unexpected_keys"]))
            if keys
        ]
        if problems:
            raise CheckpointError(
                f"checkpoint {pretrained_model_name_or_path} does not match the model: " + "; ".join(problems)
            )
        mismatched = {key: (tuple(old), tuple(new)) for key, old, new in info["mismatched_keys"]}
        if mismatched:
            model._adapt_grid(Path(pretrained_model_name_or_path), mismatched)
        info["mismatched_keys"] = set()
        return (model, info) if want_info else model

    def _adapt_grid(self, path: Path, mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
        from .convert import read_safetensors_dir

        retrain = [k for k in mismatched if k in _RETRAIN_ON_RATIO_CHANGE]
        other = sorted(set(mismatched) - set(_GRID_RESIZERS) - set(retrain))
        if other or not path.is_dir():
            details = ", ".join(f"{k}: checkpoint {list(o)} vs model {list(n)}" for k, (o, n) in mismatched.items())
            raise CheckpointError(f"checkpoint {path} does not fit this configuration: {details}")
        tensors, _ = read_safetensors_dir(path)
        params = dict(self.named_parameters())
        with torch.no_grad():
            for key in set(mismatched) & set(_GRID_RESIZERS):
                params[key].copy_(_GRID_RESIZERS[key](tensors[key], self.config))
        if retrain:
            logger.warning(
                "the checkpoint was trained with another downsample ratio: %s were re-initialised "
                "and must be trained before the model is useful", ", ".join(retrain)
            )

    # ------------------------------------------------------------------ plumbing
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # -------------------------------------------------------------------- vision
    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        size = self.config.tile_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ImageError(
                f"pixel_values must have shape [tiles, 3, {size}, {size}] for this model "
                f"(tile size {size}), got {list(pixel_values.shape)}; preprocess images with "
                f"internvlx.image_to_pixel_values(..., tile_size={size})"
            )

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual tokens per tile: `[tiles, tokens_per_tile, llm_width]`."""
        self.check_pixel_values(pixel_values)
        vit = self.vision_model(pixel_values=pixel_values.to(self.vision_model.dtype))
        return self.projector(vit.last_hidden_state)

    def merge_image_features(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """Write `features` (tile-major, row-major) into the `<IMG_CONTEXT>` slots."""
        slots = input_ids == self.config.image_token_id
        n_slots, n_feats = int(slots.sum()), features.shape[0] * features.shape[1]
        if n_slots != n_feats:
            raise PromptError(
                f"the prompt has {n_slots} image slots (<IMG_CONTEXT>, id {self.config.image_token_id}) "
                f"but the images give {n_feats} features ({features.shape[0]} tiles x "
                f"{features.shape[1]} tokens per tile); build prompts with the processor so that "
                f"every <image> expands to the tile count of its image"
            )
        flat = features.reshape(-1, features.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(slots.unsqueeze(-1), flat)

    def embed_inputs(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, decoding: bool
    ) -> torch.Tensor:
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            return self.merge_image_features(input_ids, embeds, self.get_image_features(pixel_values))
        if not decoding:
            n_slots = int((input_ids == self.config.image_token_id).sum())
            if n_slots:
                raise PromptError(
                    f"the prompt has {n_slots} image slots (<IMG_CONTEXT>) but no pixel_values were given"
                )
        return embeds

    # ------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if cache is None and "past_key_values" in kwargs:
            cache = kwargs.pop("past_key_values")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if self.lvtc is not None:
            if inputs_embeds is not None:
                raise ConfigError("with LVTC enabled, pass input_ids (the image slots locate the tiles)")
            return self._forward_lvtc(
                input_ids, pixel_values, attention_mask, position_ids, cache, labels, use_cache,
                logits_to_keep, **kwargs,
            )
        if inputs_embeds is None:
            decoding = cache is not None and cache.get_seq_length() > 0
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, decoding)
        elif pixel_values is not None:
            raise ValueError("pixel_values cannot be combined with inputs_embeds; merge them first")
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _forward_lvtc(
        self, input_ids, pixel_values, attention_mask, position_ids, cache, labels, use_cache,
        logits_to_keep, output_hidden_states=None, **kwargs,
    ) -> CausalLMOutputWithPast:
        """Two-stage forward: layers 0..K-1 on the compressed sequence, K..L-1 on the expanded
        one (see `internvlx.lvtc`). Logits come back in the compressed (input) layout."""
        lm = self.language_model.model
        text_cfg = self.config.text_config
        k, n_layers = self.config.lvtc_expand_layer, text_cfg.num_hidden_layers
        use_cache = text_cfg.use_cache if use_cache is None else use_cache
        if self.is_activation_checkpointing and self.training:
            use_cache = False
        collect: list[torch.Tensor] | None = [] if output_hidden_states else None
        kwargs.pop("return_dict", None)
        decoding = cache is not None and cache.get_seq_length() > 0
        if not decoding:
            layout = build_layout(
                input_ids, attention_mask, self.config.image_token_id, self.config.token_grid, self.lvtc.stride
            )
            embeds = self.get_input_embeddings()(input_ids)
            features = None
            if pixel_values is not None:
                features = self.get_image_features(pixel_values)
                embeds = self.merge_image_features(input_ids, embeds, self.lvtc.compress(features))
            elif layout.tiles:
                raise PromptError(f"the prompt has image slots for {layout.tiles} tiles but no pixel_values")
            if use_cache:
                if not isinstance(cache, LVTCCache):
                    cache = LVTCCache(config=text_cfg)  # replaces the empty cache generate() made
                cache.hi_prompt_mask, cache.lo_prompt_width, cache.extra = (
                    layout.hi_mask, input_ids.shape[1], layout.extra)
            lo_pos = positions_from_mask(layout.lo_mask) if position_ids is None else position_ids
            hidden = run_layers(lm, embeds, range(k), layout.lo_mask, lo_pos, cache, use_cache, collect, **kwargs)
            hidden = expand_hidden(self.lvtc, hidden, input_ids, layout, self.config.image_token_id, features)
            hi_pos = positions_from_mask(layout.hi_mask)
            hidden = run_layers(lm, hidden, range(k, n_layers), layout.hi_mask, hi_pos, cache, use_cache, collect, **kwargs)
            hidden = lm.norm(hidden)
            c = hidden.shape[-1]
            hidden = hidden.gather(1, layout.lo_from_hi.unsqueeze(-1).expand(-1, -1, c))
        else:
            if pixel_values is not None:
                raise PromptError("LVTC cannot add images to a sequence that is already cached")
            if not isinstance(cache, LVTCCache) or cache.extra is None:
                raise ValueError("LVTC decoding needs the cache returned by its prefill forward")
            n_new = input_ids.shape[1]
            lo_mask = attention_mask
            if lo_mask is None:
                lo_mask = torch.ones(
                    (input_ids.shape[0], cache.get_seq_length() + n_new), dtype=torch.long, device=input_ids.device)
            hi_mask = torch.cat([cache.hi_prompt_mask, lo_mask[:, cache.lo_prompt_width:].to(torch.long)], dim=1)
            lo_pos = positions_from_mask(lo_mask)[:, -n_new:] if position_ids is None else position_ids
            hi_pos = lo_pos + cache.extra.unsqueeze(1)
            hidden = self.get_input_embeddings()(input_ids)
            hidden = run_layers(lm, hidden, range(k), lo_mask, lo_pos, cache, True, collect, **kwargs)
            hidden = run_layers(lm, hidden, range(k, n_layers), hi_mask, hi_pos, cache, True, collect, **kwargs)
            hidden = lm.norm(hidden)
        if collect is not None:
            collect.append(hidden)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) and logits_to_keep else slice(None)
        logits = self.language_model.lm_head(hidden[:, keep] if isinstance(logits_to_keep, int) else hidden[:, logits_to_keep])
        loss = None
        if labels is not None:
            loss = self.language_model.loss_function(
                logits=logits, labels=labels, vocab_size=text_cfg.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=cache if use_cache else None,
            hidden_states=tuple(collect) if collect is not None else None,
        )

    # ---------------------------------------------------------------------- chat
    @torch.no_grad()
    def chat(
        self,
        processor,
        images=(),
        question: str = "",
        history: list[tuple[str, str]] | None = None,
        *,
        return_history: bool = False,
        streamer=None,
        max_visual_tokens: int | None = None,
        tiling: dict | None = None,
        **generation,
    ):
        """Answer `question` about `images` (paths, bytes or PIL images), InternVL-style.

        `history` is a list of `(question, answer)` turns; images attach to the first user
        turn. Generation settings (`max_new_tokens`, `do_sample`, `temperature`, ...) pass to
        `generate`; decoding stops at the template's separator. Returns the answer, or
        `(answer, history)` with `return_history=True`.
        """
        if isinstance(images, (str, Path, bytes)) or hasattr(images, "size"):
            images = [images]
        messages = []
        for q, a in history or []:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        batch = processor(messages, list(images), max_visual_tokens=max_visual_tokens, **(tiling or {}))
        settings = {"max_new_tokens": 256, "do_sample": False, **generation}
        settings.setdefault("eos_token_id", processor.eos_token_id)
        settings.setdefault("pad_token_id", processor.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in batch.items() if k != "image_tiles"}
        out = self.generate(**inputs, streamer=streamer, **settings)
        answer = processor.decode_response(out[0, batch["input_ids"].shape[1]:])
        if return_history:
            return answer, [*(history or []), (question, answer)]
        return answer
