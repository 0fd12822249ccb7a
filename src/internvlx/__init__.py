"""internvlx: InternVL-X (PVTC, LVTC, RVTC visual-token compression) on transformers.

Importing the package registers `internvlx` with transformers' Auto classes, so
`AutoConfig`/`AutoModel`/`AutoModelForImageTextToText.from_pretrained(dir)` load our directories.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .accounting import count_visual_tokens, layer_token_counts, prefill_flops
from .configuration import InternVLXConfig, LVTCConfig, ProjectorConfig, TilingConfig, preset_names
from .convert import convert_official, convert_to_official
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ImageError,
    InternVLXError,
    PromptError,
)
from .images import image_to_pixel_values, load_image, preprocess_image
from .modeling import InternVLXForConditionalGeneration, InternVLXPreTrainedModel
from .processing import InternVLXProcessor
from .templates import render_prompt
from .tiling import plan_tiles, tile_grid

__version__ = "0.1.0"

AutoConfig.register(InternVLXConfig.model_type, InternVLXConfig, exist_ok=True)
AutoModel.register(InternVLXConfig, InternVLXForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(InternVLXConfig, InternVLXForConditionalGeneration, exist_ok=True)
AutoProcessor.register(InternVLXConfig, InternVLXProcessor, exist_ok=True)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ImageError",
    "InternVLXConfig",
    "InternVLXError",
    "InternVLXForConditionalGeneration",
    "InternVLXPreTrainedModel",
    "InternVLXProcessor",
    "LVTCConfig",
    "ProjectorConfig",
    "PromptError",
    "TilingConfig",
    "convert_official",
    "convert_to_official",
    "count_visual_tokens",
    "image_to_pixel_values",
    "layer_token_counts",
    "load_image",
    "plan_tiles",
    "prefill_flops",
    "preprocess_image",
    "preset_names",
    "render_prompt",
    "tile_grid",
]
