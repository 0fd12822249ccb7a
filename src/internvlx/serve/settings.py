"""Server settings (a plain dataclass: importing it costs nothing, so the CLI parser can use it)."""

from __future__ import annotations

from dataclasses import dataclass, fields

MiB = 1024 * 1024


@dataclass
class ServeSettings:
    """Everything `create_app` needs besides the model and the processor.

    Limits (see `docs/serving.md` for the status code each one answers with):

    * `max_body_bytes`: request body size (413).
    * `max_images`: images per request (400); `max_image_pixels`: width × height of each (400).
    * `max_tokens_limit`: the largest `max_tokens` a request may ask for (400).
    * `max_tiles_limit`: the largest `max_tiles` a request may ask for (400).
    * `max_batch`: requests generated together; `max_queue`: requests waiting for the worker
      beyond those (a full queue answers 503).
    """

    model_name: str = "internvlx"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 32
    batch_wait_ms: float = 5.0
    allow_remote_images: bool = False
    remote_image_timeout_s: float = 10.0
    max_body_bytes: int = 20 * MiB
    max_images: int = 4
    max_image_pixels: int = 4096 * 4096
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048
    max_tiles_limit: int = 12
    stream_poll_s: float = 0.25

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_body_bytes", "max_image_pixels", "default_max_tokens",
                    "max_tokens_limit", "max_tiles_limit")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_queue", "max_images"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.stream_poll_s <= 0:
            raise ValueError("batch_wait_ms must be >= 0 and stream_poll_s > 0")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens_limit)
        if self.api_key == "":
            self.api_key = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
