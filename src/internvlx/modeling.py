"""`InternVLXForConditionalGeneration`: InternViT → projector (PVTC or MLP) → decoder LLM.

The vision tower is transformers' `InternVLVisionModel` (bit-exact with InternViT, CLS kept);
the LLM is whatever decoder `AutoModelForCausalLM` builds from `config.text_config`. Images
arrive as `pixel_values [total_tiles, 3, S, S]` — the tiles of every image of every sample,
concatenated in order — and fill the `<IMG_CONTEXT>` slots of `input_ids` in the same order.
"""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import InternVLXConfig
from .errors import ImageError, PromptError
from .projectors import PVTCProjector, build_projector


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
        self.post_init()

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
