"""Typed errors. Each message says what was wrong and what to do about it."""

from __future__ import annotations


class InternVLXError(Exception):
    """Base class of every error raised on purpose by internvlx."""


class ConfigError(InternVLXError, ValueError):
    """A configuration value is invalid or inconsistent."""


class CheckpointError(InternVLXError, ValueError):
    """A checkpoint is incomplete, has unexpected keys, or tensors of the wrong shape."""


class ImageError(InternVLXError, ValueError):
    """An image cannot be read, is corrupt, or is too large."""


class PromptError(InternVLXError, ValueError):
    """Placeholders in a prompt do not match the images or features supplied."""


class DataError(InternVLXError, ValueError):
    """A data file is malformed or points outside its root."""
