"""internvlx: InternVL-X (PVTC, LVTC, RVTC visual-token compression) on transformers.

Importing the package registers `internvlx` with transformers' Auto classes, so
`AutoConfig`/`AutoModel`/`AutoModelForImageTextToText.from_pretrained(dir)` load our directories.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration import InternVLXConfig, ProjectorConfig, TilingConfig, preset_names
from .convert import convert_official, convert_to_official
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ImageError,
    InternVLXError,
    PromptError,
)
from .modeling import InternVLXForConditionalGeneration, InternVLXPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(InternVLXConfig.model_type, InternVLXConfig, exist_ok=True)
AutoModel.register(InternVLXConfig, InternVLXForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(InternVLXConfig, InternVLXForConditionalGeneration, exist_ok=True)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ImageError",
    "InternVLXConfig",
    "InternVLXError",
    "InternVLXForConditionalGeneration",
    "InternVLXPreTrainedModel",
    "ProjectorConfig",
    "PromptError",
    "TilingConfig",
    "convert_official",
    "convert_to_official",
    "preset_names",
]
