"""`internvlx serve`: an OpenAI-compatible HTTP server with request batching and a chat page.

    internvlx serve MODEL_DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch 8] ...

In Python: `create_app(model, processor, ServeSettings(...))` returns the FastAPI app (run it
with uvicorn); `Engine` is the batching engine underneath. See `docs/serving.md`.

Importing this package is cheap (FastAPI, uvicorn and torch load on first use), so that the
command-line parser can register the command without them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from .settings import ServeSettings

__all__ = ["Engine", "GenerationRequest", "ServeSettings", "add_serve_parser", "create_app", "load_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Engine", "GenerationRequest"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_app(model_dir: str | os.PathLike, settings: ServeSettings, *, dtype: str | None = None,
             device: str | None = None, lvtc: bool | None = None) -> Any:
    """Load a model directory and build its app (the model name defaults to the directory's)."""
    from ..evaluation import load_for_eval
    from .app import create_app

    model, processor = load_for_eval(model_dir, dtype=dtype, device=device, lvtc=lvtc)
    return create_app(model, processor, settings)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    """The `internvlx serve` command."""
    import uvicorn

    values = {name: getattr(args, name) for name in ServeSettings.field_names() if getattr(args, name, None) is not None}
    values.setdefault("model_name", Path(args.model).resolve().name)
    if values.get("api_key") is None and os.environ.get("INTERNVLX_API_KEY"):
        values["api_key"] = os.environ["INTERNVLX_API_KEY"]
    try:
        settings = ServeSettings(**values)
    except ValueError as e:
        from ..errors import ConfigError

        raise ConfigError(f"invalid server setting: {e}") from None
    if not _is_loopback(settings.host) and not settings.api_key:
        print(f"internvlx serve: warning: listening on {settings.host} without an API key; anyone who can reach "
              "this address can use the model (set --api-key or INTERNVLX_API_KEY)", file=sys.stderr)
    app = load_app(args.model, settings, dtype=args.dtype, device=args.device,
                   lvtc=None if args.lvtc is None else args.lvtc == "on")
    print(f"serving {settings.model_name!r} on http://{settings.host}:{settings.port}/ "
          f"(chat page at /, OpenAI API at /v1)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """Register `internvlx serve` (no heavy imports)."""
    d = ServeSettings()
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server with batching and a chat page")
    p.add_argument("model", help="model directory (weights, tokenizer, processor_config.json)")
    p.add_argument("--host", default=d.host, help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 (default: $INTERNVLX_API_KEY, else none)")
    p.add_argument("--model-name", default=None, help="model id clients send (default: the directory's name)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="requests generated together")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests before answering 503")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long an idle worker waits for more requests to fill a batch")
    p.add_argument("--allow-remote-images", action="store_true", default=None,
                   help="let image_url be http(s) (the server downloads it); default: data: URLs only")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="request body limit (413)")
    p.add_argument("--max-images", type=int, default=d.max_images, help="images per request (400)")
    p.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels, help="width x height per image (400)")
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    p.add_argument("--max-tokens-limit", type=int, default=d.max_tokens_limit, help="largest max_tokens (400)")
    p.add_argument("--max-tiles-limit", type=int, default=d.max_tiles_limit, help="largest max_tiles (400)")
    p.add_argument("--lvtc", choices=["on", "off"], default=None,
                   help="the model's LVTC setting (requests may still switch it with \"lvtc\": true/false)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=serve)
