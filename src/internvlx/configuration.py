"""`InternVLXConfig`: one config for the ViT, the projector, the LLM, LVTC and tiling.

The vision and text parts are ordinary transformers configs (InternViT is transformers'
`InternVLVisionConfig`; the LLM is any decoder config, Llama and Qwen2 tested). The projector,
LVTC and tiling sections are small dataclasses stored as plain dicts in `config.json`.
Named presets: `InternVLXConfig.from_preset("internvlx-2b", **overrides)`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import AutoConfig, InternVLVisionConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .errors import ConfigError

PROJECTOR_TYPES = ("pvtc", "mlp")
TILE_POLICIES = ("stock", "length", "area")


@dataclass
class ProjectorConfig:
    """The vision→LLM projector.

    `type="pvtc"` is InternVL-X's point-to-region cross-attention compressor (SPEC §2);
    `type="mlp"` is InternVL2's pixel-shuffle + 2-layer MLP baseline. `downsample_ratio` r
    merges (1/r)² patches into one token. Heads, MLP ratio and depth are fixed in the
    authors' code (16, 4, 1); here they are settings with those defaults.
    """

    type: str = "pvtc"
    downsample_ratio: float = 0.5
    num_heads: int = 16
    mlp_ratio: int = 4
    depth: int = 1
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.1

    def validate(self) -> None:
        if self.type not in PROJECTOR_TYPES:
            raise ConfigError(f"projector.type must be one of {PROJECTOR_TYPES}, got {self.type!r}")
        side = 1.0 / self.downsample_ratio if self.downsample_ratio > 0 else 0.0
        if self.downsample_ratio <= 0 or abs(side - round(side)) > 1e-9:
            raise ConfigError(
                f"projector.downsample_ratio must be 1/M for an integer M (0.5, 0.25, ...), "
                f"got {self.downsample_ratio}"
            )
        if self.num_heads < 1 or self.mlp_ratio < 1 or self.depth < 1:
            raise ConfigError("projector num_heads, mlp_ratio and depth must be >= 1")

    @property
    def region(self) -> int:
        """M = 1/r: side of the patch region merged into one token."""
        return round(1.0 / self.downsample_ratio)


@dataclass
class TilingConfig:
    """Dynamic tiling (InternVL) and RVTC's resolution-aware cap on the tile count."""

    min_tiles: int = 1
    max_tiles: int = 12
    policy: str = "stock"
    thumbnail: bool = True

    def validate(self) -> None:
        if self.policy not in TILE_POLICIES:
            raise ConfigError(f"tiling.policy must be one of {TILE_POLICIES}, got {self.policy!r}")
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ConfigError(
                f"tiling needs 1 <= min_tiles <= max_tiles, got {self.min_tiles}, {self.max_tiles}"
            )


LVTC_POOLS = ("avg", "pixel_shuffle_linear")
LVTC_UPSAMPLES = ("bilinear", "nearest")
LVTC_RESIDUALS = ("projector", "none")


@dataclass
class LVTCConfig:
    """Layer-wise visual-token compression inside the LLM (SPEC §4, our re-derivation).

    Layers `0..expand_layer-1` see each tile's visual grid pooled by `stride` per side; before
    layer `expand_layer` the visual hidden states are upsampled back to the full grid and
    `gate ⊙ residual` is added (`residual="projector"`: the full-resolution projector output).
    `expand_layer=None` means `round(0.8 * num_layers)`. The gate is per channel and starts at
    `gate_init` (0: the deep layers first see exactly the upsampled shallow states, the closest
    start to a checkpoint trained without LVTC; training then learns how much detail to add).
    """

    enabled: bool = False
    expand_layer: int | None = None
    stride: int = 2
    pool: str = "avg"
    upsample: str = "bilinear"
    residual: str = "projector"
    gate_init: float = 0.0

    def validate(self) -> None:
        for name, value, allowed in (
            ("pool", self.pool, LVTC_POOLS),
            ("upsample", self.upsample, LVTC_UPSAMPLES),
            ("residual", self.residual, LVTC_RESIDUALS),
        ):
            if value not in allowed:
                raise ConfigError(f"lvtc.{name} must be one of {allowed}, got {value!r}")
        if self.stride < 1:
            raise ConfigError(f"lvtc.stride must be >= 1, got {self.stride}")

    def resolved_expand_layer(self, num_layers: int) -> int:
        return round(0.8 * num_layers) if self.expand_layer is None else self.expand_layer


_SECTIONS: dict[str, type] = {"projector": ProjectorConfig, "tiling": TilingConfig, "lvtc": LVTCConfig}


def _section(cls: type, value: Any, name: str):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return copy.deepcopy(value)
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown {name} setting(s) {unknown}; known: {sorted(known)}")
        return cls(**value)
    raise ConfigError(f"{name} must be a dict or {cls.__name__}, got {type(value).__name__}")


class InternVLXConfig(PreTrainedConfig):
    """Configuration of `InternVLXForConditionalGeneration`.

    Args:
        vision_config: InternViT settings (`InternVLVisionConfig` or dict).
        text_config: decoder settings (any transformers decoder config or dict with
            `model_type`; default Llama, which InternLM2 converts to).
        projector: `ProjectorConfig` or dict.
        tiling: `TilingConfig` or dict.
        lvtc: `LVTCConfig` or dict (disabled by default).
        image_token_id: id of `<IMG_CONTEXT>` in the tokenizer.
        template: chat template name (`internlm2-chat`, `Hermes-2`, `phi3-chat`, ...).
    """

    model_type = "internvlx"
    sub_configs_defaults: ClassVar[dict[str, Any]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": InternVLVisionConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector: dict | ProjectorConfig | None = None
    tiling: dict | TilingConfig | None = None
    lvtc: dict | LVTCConfig | None = None
    image_token_id: int = 92546
    template: str = "internlm2-chat"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for name, cls in _SECTIONS.items():
            setattr(self, name, _section(cls, getattr(self, name), name))
        super().__post_init__(**kwargs)
        self.validate_sections()

    # ----------------------------------------------------------------- derived sizes
    def validate_sections(self) -> None:
        for name in _SECTIONS:
            getattr(self, name).validate()
        size, patch = self.tile_size, self.vision_config.patch_size[0]
        if size % patch:
            raise ConfigError(f"vision image_size {size} is not a multiple of patch_size {patch}")
        grid = size // patch
        if grid % self.projector.region:
            raise ConfigError(
                f"patch grid {grid}x{grid} is not divisible by the projector region "
                f"{self.projector.region} (downsample_ratio {self.projector.downsample_ratio})"
            )
        if self.lvtc.enabled:
            layers = self.text_config.num_hidden_layers
            k = self.lvtc.resolved_expand_layer(layers)
            if not 1 <= k <= layers - 1:
                raise ConfigError(
                    f"lvtc.expand_layer must lie in 1..{layers - 1} for a {layers}-layer LLM, got {k}"
                )
            if self.token_grid % self.lvtc.stride:
                raise ConfigError(
                    f"lvtc.stride {self.lvtc.stride} does not divide the {self.token_grid}x"
                    f"{self.token_grid} visual token grid of a tile"
                )

    @property
    def lvtc_expand_layer(self) -> int:
        """The first LLM layer that sees the expanded (full-resolution) visual tokens."""
        return self.lvtc.resolved_expand_layer(self.text_config.num_hidden_layers)

    @property
    def tile_size(self) -> int:
        return int(self.vision_config.image_size[0])

    @property
    def patch_grid(self) -> int:
        """Patches per side of one tile (32 at 448 px / patch 14)."""
        return self.tile_size // int(self.vision_config.patch_size[0])

    @property
    def token_grid(self) -> int:
        """Projector output tokens per side of one tile (16 for 448 px, r = 0.5)."""
        return self.patch_grid // self.projector.region

    @property
    def tokens_per_tile(self) -> int:
        return self.token_grid**2

    def __setattr__(self, name: str, value: Any) -> None:
        # keep the sections typed when they are assigned after construction (e.g. by
        # from_pretrained(..., lvtc={...}) or model.configure_lvtc)
        if name in _SECTIONS and value is not None:
            value = _section(_SECTIONS[name], value, name)
        super().__setattr__(name, value)

    @property
    def input_tokens_per_tile(self) -> int:
        """`<IMG_CONTEXT>` slots per tile in the LLM input: compressed by LVTC when enabled."""
        if self.lvtc.enabled:
            return (self.token_grid // self.lvtc.stride) ** 2
        return self.tokens_per_tile

    # ------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for name in _SECTIONS:
            value = getattr(self, name)
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out

    # ------------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> InternVLXConfig:
        """Build a named preset; keyword overrides replace top-level fields, and dicts for
        `vision_config`/`text_config`/`projector`/`tiling` are merged into the preset's."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        spec = copy.deepcopy(PRESETS[name])
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key].update(value)
            else:
                spec[key] = value
        return cls(**spec)


def preset_names() -> list[str]:
    return sorted(PRESETS)


# ----------------------------------------------------------------------- presets
_INTERNVIT_300M = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "image_size": 448,
    "patch_size": 14,
    "attention_bias": True,
    "use_qk_norm": False,
    "norm_type": "layer_norm",
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
    "use_mean_pooling": True,
}


def _internlm2(hidden: int, inter: int, layers: int, heads: int, kv: int) -> dict[str, Any]:
    """An InternLM2 LLM expressed as the Llama config it converts to."""
    return {
        "model_type": "llama",
        "vocab_size": 92553,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }


_LLM_1_8B = _internlm2(2048, 8192, 24, 16, 8)
_LLM_7B = _internlm2(4096, 14336, 32, 32, 8)


def _full_size(llm: dict[str, Any], projector: str, *, max_tiles: int, policy: str = "length") -> dict[str, Any]:
    """InternViT-300M + an InternLM2 LLM at 448-px tiles (256 tokens per tile, r = 0.5); the
    non-HD InternVL-X models use one tile, the HD ones up to 6 (RVTC length policy)."""
    return {
        "vision_config": _INTERNVIT_300M,
        "text_config": llm,
        "projector": {"type": projector, "downsample_ratio": 0.5},
        "tiling": {"max_tiles": max_tiles, "policy": policy},
        "image_token_id": 92546,
    }

PRESETS: dict[str, dict[str, Any]] = {
    # Tests: the sizes of the official tiny fixture (4 LLM layers so that LVTC has room).
    "tiny": {
        "vision_config": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "image_size": 56,
            "patch_size": 14,
            "attention_bias": True,
            "layer_norm_eps": 1e-6,
        },
        "text_config": {
            **_internlm2(64, 128, 4, 4, 2),
            "vocab_size": 160,
        },
        "projector": {"type": "pvtc", "downsample_ratio": 0.5},
        "tiling": {"max_tiles": 6, "policy": "length"},
        "image_token_id": 153,
        "template": "internlm2-chat",
    },
    # The shipped demo model (trained from scratch on the synthetic data, ~7.5M parameters).
    "demo": {
        "vision_config": {
            "hidden_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 512,
            "image_size": 112,
            "patch_size": 14,
            "attention_bias": True,
            "layer_norm_eps": 1e-6,
        },
        "text_config": {
            **_internlm2(256, 512, 8, 4, 2),
            "vocab_size": 1024,
            "max_position_embeddings": 4096,
        },
        "projector": {"type": "pvtc", "downsample_ratio": 0.5, "num_heads": 8, "mlp_ratio": 2},
        "tiling": {"max_tiles": 4, "policy": "length"},
        "lvtc": {"enabled": True},
        "image_token_id": 13,
        "template": "internlm2-chat",
    },
    "internvl2-2b": _full_size(_LLM_1_8B, "mlp", max_tiles=12, policy="stock"),
    "internvlx-2b": _full_size(_LLM_1_8B, "pvtc", max_tiles=1),
    "internvlx-2b-hd": _full_size(_LLM_1_8B, "pvtc", max_tiles=6),
    "internvlx-8b": _full_size(_LLM_7B, "pvtc", max_tiles=1),
    "internvlx-8b-hd": _full_size(_LLM_7B, "pvtc", max_tiles=6),
}
