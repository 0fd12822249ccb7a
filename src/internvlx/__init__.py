"""internvlx: InternVL-X on transformers."""

__version__ = "0.1.0"
