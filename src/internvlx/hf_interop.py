"""Interoperability with transformers' own InternVL (`InternVLForConditionalGeneration`, the
`-hf` checkpoints): our MLP-projector baseline and theirs are the same network, so weights move
both ways by renaming. Used to load `-hf` checkpoints as the InternVL2 baseline and by the
benchmarks, which run transformers' implementation on our weights side by side with ours.
"""

from __future__ import annotations

from pathlib import Path

from transformers import InternVLConfig, InternVLForConditionalGeneration

from .configuration import InternVLXConfig
from .errors import CheckpointError, ConfigError
from .modeling import InternVLXForConditionalGeneration

# ours → transformers (prefix renames; the MLP projector's Sequential indices become names)
_PREFIXES = [
    ("vision_model.", "model.vision_tower."),
    ("projector.mlp.0.", "model.multi_modal_projector.layer_norm."),
    ("projector.mlp.1.", "model.multi_modal_projector.linear_1."),
    ("projector.mlp.3.", "model.multi_modal_projector.linear_2."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
]


def _rename(key: str, reverse: bool) -> str:
    for ours, theirs in _PREFIXES:
        src, dst = (theirs, ours) if reverse else (ours, theirs)
        if key.startswith(src):
            return dst + key[len(src):]
    raise CheckpointError(f"no mapping for key {key!r} between internvlx and transformers' InternVL")


def transformers_config(config: InternVLXConfig) -> InternVLConfig:
    if config.projector.type != "mlp":
        raise ConfigError("only the MLP-projector baseline exists in transformers' InternVL (PVTC does not)")
    if config.lvtc.enabled:
        raise ConfigError("transformers' InternVL has no LVTC; disable it first")
    return InternVLConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_id=config.image_token_id,
        image_seq_length=config.tokens_per_tile,
        downsample_ratio=config.projector.downsample_ratio,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=bool(config.text_config.tie_word_embeddings),
    )


def to_transformers_internvl(model: InternVLXForConditionalGeneration) -> InternVLForConditionalGeneration:
    """transformers' `InternVLForConditionalGeneration` holding a copy of our MLP baseline's weights."""
    hf_config = transformers_config(model.config)
    hf_config._attn_implementation = model.config._attn_implementation
    ref = model.get_input_embeddings().weight
    hf = InternVLForConditionalGeneration(hf_config)
    state = {_rename(k, reverse=False): v.detach() for k, v in model.state_dict().items()}
    if hf_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    expected = set(hf.state_dict())
    missing = sorted(expected - set(state) - ({"lm_head.weight"} if hf_config.tie_word_embeddings else set()))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"weight mapping to transformers' InternVL failed: missing {missing}, unexpected {unexpected}")
    hf.load_state_dict(state, strict=False)
    return hf.to(device=ref.device, dtype=ref.dtype).eval()


def from_transformers_internvl(path: str | Path) -> InternVLXForConditionalGeneration:
    """Load a transformers `-hf` InternVL checkpoint directory as our MLP baseline."""
    hf = InternVLForConditionalGeneration.from_pretrained(path)
    c = hf.config
    if c.vision_feature_layer != -1 or c.vision_feature_select_strategy != "default":
        raise ConfigError("only vision_feature_layer=-1 with the 'default' select strategy maps to InternVL2's mlp1")
    config = InternVLXConfig(
        vision_config=c.vision_config.to_dict(), text_config=c.text_config.to_dict(),
        projector={"type": "mlp", "downsample_ratio": c.downsample_ratio},
        tiling={"policy": "stock", "max_tiles": 12}, image_token_id=c.image_token_id,
        tie_word_embeddings=bool(c.tie_word_embeddings),
    )
    if c.tie_word_embeddings:
        config.text_config.tie_word_embeddings = True
    ours = InternVLXForConditionalGeneration(config)
    state = {_rename(k, reverse=True): v for k, v in hf.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.text_config.tie_word_embeddings and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing {missing}, unexpected {unexpected}")
    return ours.eval()
