"""The HTTP server: OpenAI-compatible chat completions over the batching `Engine`, a chat page.

Routes (`create_app`):

* `POST /v1/chat/completions`: OpenAI's chat format; images as `image_url` content parts
  holding `data:` URLs (base64 PNG, JPEG or WebP; `http(s)` URLs only with
  `allow_remote_images`). `stream: true` answers with server-sent events. Besides
  `max_tokens` (or `max_completion_tokens`), `temperature` (0 or absent: greedy, like
  `model.chat`), `top_p`, `stop` and `seed`, a request may carry the extras `policy`
  (`stock`/`length`/`area`), `max_tiles`, `max_visual_tokens`, `lvtc` (true/false) and
  `top_k`. `usage` holds `prompt_tokens`, `completion_tokens`, `total_tokens` and
  `visual_tokens` (the prompt's image slots); the extra `internvlx` object lists the tiles
  chosen for every image.
* `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`.
* `POST /v1/internvlx/plan` `{width, height, policy?, max_tiles?, max_visual_tokens?, lvtc?}`:
  the tiles and visual-token accounting of an image for this model and for the InternVL2-2B
  baseline (stock tiling), without running the model.
* `/` and `/static/*`: the chat page (no external resources).

Errors are OpenAI-style JSON, `{"error": {"message", "type", "param", "code"}}`; the status
code and `code` of every limit are listed in `docs/serving.md`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..accounting import count_visual_tokens
from ..configuration import InternVLXConfig
from ..errors import ConfigError, ImageError, PromptError
from ..images import load_image
from ..templates import IMAGE_PLACEHOLDER
from .engine import (
    Delta,
    Engine,
    EngineStoppedError,
    Failed,
    Finished,
    GenerationRequest,
    QueueFullError,
    RequestHandle,
)
from .settings import ServeSettings

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP"}
BASELINE_PRESET = "internvl2-2b"
BASELINE_NAME = "InternVL2-2B (MLP projector, stock tiling)"


# ---------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered as OpenAI-style JSON with the given status code."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


_HTTP_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 404: "not_found_error",
                     405: "invalid_request_error", 413: "invalid_request_error"}


class BodyLimitMiddleware:
    """413 for a body above `max_bytes`: from `Content-Length` before reading, or while
    reading a body sent without one."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = APIError(413, f"the request body is larger than the limit of {self.max_bytes} bytes",
                         code="request_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await error.response()(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise error
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------------------- schema
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    url: str
    detail: str | None = None


class ContentPart(_Lenient):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | str | None = None

    @field_validator("image_url")
    @classmethod
    def _wrap(cls, value: Any) -> Any:
        return ImageURL(url=value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _complete(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text content part needs 'text'")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url content part needs 'image_url'")
        return self


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    # InternVL-X extras
    policy: Literal["stock", "length", "area"] | None = None
    max_tiles: int | None = Field(None, ge=1)
    max_visual_tokens: int | None = Field(None, ge=1)
    lvtc: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes at most 4 non-empty strings")
        return value


class PlanRequest(_Lenient):
    width: int = Field(ge=1, le=1_000_000)
    height: int = Field(ge=1, le=1_000_000)
    policy: Literal["stock", "length", "area"] | None = None
    max_tiles: int | None = Field(None, ge=1)
    max_visual_tokens: int | None = Field(None, ge=1)
    lvtc: bool | None = None


def _validate(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = first.get("msg", "invalid value")
        raise APIError(422, f"{where}: {message}" if where else message, code="invalid_schema",
                       param=where or None) from None


# ---------------------------------------------------------------------------- requests
@dataclass
class Prepared:
    request: GenerationRequest
    prompt_tokens: int
    visual_tokens: int
    images: list[dict[str, Any]]


@cache
def _baseline_config() -> InternVLXConfig:
    return InternVLXConfig.from_preset(BASELINE_PRESET)


def _count_dict(count: Any, tile_size: int) -> dict[str, Any]:
    return {"cols": count.cols, "rows": count.rows, "thumbnail": count.thumbnail, "tiles": count.tiles,
            "tile_size": tile_size, "tokens_per_tile": count.tokens_per_tile, "full_tokens": count.full_tokens,
            "llm_input_tokens": count.llm_input_tokens, "mean_per_layer": count.mean_per_layer,
            "per_layer": list(count.per_layer)}


class _Server:
    """The request logic behind the routes (kept out of `create_app` to stay testable)."""

    def __init__(self, engine: Engine, settings: ServeSettings):
        self.engine = engine
        self.settings = settings
        self.created = int(time.time())
        self.context_limit = getattr(engine.base_config.text_config, "max_position_embeddings", None)

    # ------------------------------------------------------------------ auth
    def check_auth(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization")
        if not header:
            raise APIError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                           code="missing_api_key")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    # ------------------------------------------------------------------ tiling
    def tiling(self, policy: str | None, max_tiles: int | None) -> dict[str, Any]:
        tiling: dict[str, Any] = {}
        if policy is not None:
            tiling["policy"] = policy
        if max_tiles is not None:
            if max_tiles > self.settings.max_tiles_limit:
                raise APIError(400, f"max_tiles {max_tiles} is above this server's limit of "
                               f"{self.settings.max_tiles_limit}", code="max_tiles_too_large", param="max_tiles")
            tiling["max_tiles"] = max_tiles
            tiling["min_tiles"] = min(self.engine.processor_for(None).settings.min_tiles, max_tiles)
        return tiling

    def processor(self, lvtc: bool | None) -> Any:
        try:
            return self.engine.processor_for(lvtc)
        except ConfigError as e:
            raise APIError(400, f"this model cannot run with LVTC {'on' if lvtc else 'off'}: {e}",
                           code="lvtc_unavailable", param="lvtc") from None

    # ------------------------------------------------------------------ images
    def fetch(self, url: str, param: str) -> bytes:
        if url.startswith("data:"):
            header, sep, payload = url.partition(",")
            params = header[5:].split(";")
            mime = params[0].strip().lower()
            if not sep or "base64" not in [p.strip().lower() for p in params[1:]]:
                raise APIError(400, "image data URLs must be base64: data:image/png;base64,...",
                               code="invalid_image_url", param=param)
            if mime not in IMAGE_FORMATS:
                raise APIError(400, f"unsupported image type {mime or '(none)'!r}; send PNG, JPEG or WebP",
                               code="unsupported_image_format", param=param)
            try:
                return base64.b64decode("".join(payload.split()), validate=True)
            except (binascii.Error, ValueError):
                raise APIError(400, "the image data URL is not valid base64", code="invalid_image_url",
                               param=param) from None
        if url.startswith(("http://", "https://")):
            if not self.settings.allow_remote_images:
                raise APIError(400, "remote image URLs are disabled on this server (start it with "
                               "--allow-remote-images); send the image as a data: URL",
                               code="remote_images_disabled", param=param)
            limit = self.settings.max_body_bytes
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "internvlx-serve"})
                with urllib.request.urlopen(req, timeout=self.settings.remote_image_timeout_s) as resp:
                    data = resp.read(limit + 1)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise APIError(400, f"cannot download the image: {e}", code="image_download_failed",
                               param=param) from None
            if len(data) > limit:
                raise APIError(400, f"the remote image is larger than {limit} bytes", code="image_too_large",
                               param=param)
            return data
        raise APIError(400, "image_url must be a data: URL (or http(s) with --allow-remote-images)",
                       code="invalid_image_url", param=param)

    def decode_image(self, data: bytes, param: str) -> Image.Image:
        limit = self.settings.max_image_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:  # header only
                    (width, height), fmt = probe.size, probe.format
        except Image.DecompressionBombError:
            raise APIError(400, f"the image is above this server's limit of {limit} pixels",
                           code="image_too_large", param=param) from None
        except Exception:
            raise APIError(400, "the image cannot be decoded (not a PNG, JPEG or WebP image?)",
                           code="invalid_image", param=param) from None
        if width * height > limit:
            raise APIError(400, f"the image is {width}x{height} = {width * height} pixels, above this "
                           f"server's limit of {limit} pixels", code="image_too_large", param=param)
        if fmt not in set(IMAGE_FORMATS.values()):
            raise APIError(400, f"unsupported image format {fmt}; send PNG, JPEG or WebP",
                           code="unsupported_image_format", param=param)
        try:
            return load_image(data, max_pixels=limit)
        except ImageError as e:
            raise APIError(400, str(e), code="invalid_image", param=param) from None

    # ------------------------------------------------------------------ chat
    def conversation(self, req: ChatCompletionRequest) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Messages for the processor and the image URLs (with their parameter path).

        Images attach as `model.chat` attaches them: when they all sit in the first user
        message (and no text holds a literal `<image>`), the processor puts them at its start;
        otherwise each image part becomes `<image>\\n` (`Image-k: <image>\\n` for several) where
        it stands. Text parts of one message are joined with newlines."""
        segments: list[list[str | None]] = []  # None marks an image
        urls: list[tuple[str, str]] = []
        first_user = next((i for i, m in enumerate(req.messages) if m.role == "user"), None)
        image_messages: set[int] = set()
        for i, message in enumerate(req.messages):
            parts: list[str | None] = []
            if isinstance(message.content, str):
                parts.append(message.content)
            elif message.content is not None:
                for j, part in enumerate(message.content):
                    if part.type == "text":
                        parts.append(part.text)
                    else:
                        if message.role != "user":
                            raise APIError(400, "images may only appear in user messages", code="invalid_image_url",
                                           param=f"messages.{i}.content.{j}")
                        parts.append(None)
                        urls.append((part.image_url.url, f"messages.{i}.content.{j}.image_url"))
                        image_messages.add(i)
            segments.append(parts)
        if len(urls) > self.settings.max_images:
            raise APIError(400, f"{len(urls)} images in the request, above this server's limit of "
                           f"{self.settings.max_images}", code="too_many_images", param="messages")
        literal = any(IMAGE_PLACEHOLDER in (p or "") for parts in segments for p in parts)
        in_place = bool(urls) and not literal and image_messages != {first_user}
        messages, k = [], 0
        for message, parts in zip(req.messages, segments, strict=True):
            texts = []
            for p in parts:
                if p is not None:
                    texts.append(p)
                elif in_place:
                    k += 1
                    tag = f"{IMAGE_PLACEHOLDER}\n" if len(urls) == 1 else f"Image-{k}: {IMAGE_PLACEHOLDER}\n"
                    texts.append(tag)
            content = _join(texts)
            if message.content is None and message.role == "assistant":
                content = None
            messages.append({"role": "system" if message.role == "developer" else message.role,
                             "content": content})
        return messages, urls

    def prepare(self, req: ChatCompletionRequest) -> Prepared:
        """Validate a request against the server's limits and encode it (runs in a worker thread)."""
        s = self.settings
        if req.model != s.model_name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves {s.model_name!r}",
                           type="not_found_error", code="model_not_found", param="model")
        if (req.n or 1) != 1:
            raise APIError(400, "only n=1 is supported", code="unsupported_parameter", param="n")
        if req.logprobs:
            raise APIError(400, "logprobs are not supported", code="unsupported_parameter", param="logprobs")
        if req.tools:
            raise APIError(400, "tools are not supported", code="unsupported_parameter", param="tools")
        max_tokens = req.max_completion_tokens or req.max_tokens or s.default_max_tokens
        if max_tokens > s.max_tokens_limit:
            raise APIError(400, f"max_tokens {max_tokens} is above this server's limit of {s.max_tokens_limit}",
                           code="max_tokens_too_large", param="max_tokens")
        tiling = self.tiling(req.policy, req.max_tiles)
        processor = self.processor(req.lvtc)
        messages, urls = self.conversation(req)
        images = [self.decode_image(self.fetch(url, param), param) for url, param in urls]
        sizes = [img.size for img in images]
        try:
            sample = processor.encode(messages, images, max_visual_tokens=req.max_visual_tokens, **tiling)
        except ImageError as e:
            raise APIError(400, str(e), code="invalid_image") from None
        except PromptError as e:
            raise APIError(400, str(e), code="invalid_prompt", param="messages") from None
        except ConfigError as e:
            raise APIError(400, str(e), code="invalid_value") from None
        prompt_tokens = len(sample.input_ids)
        visual = sum(1 for t in sample.input_ids if t == processor.image_token_id)
        cfg = self.engine.config_for(req.lvtc)
        extra = sum(img.plan.num_tiles for img in sample.images) * (cfg.tokens_per_tile - cfg.input_tokens_per_tile)
        if self.context_limit and prompt_tokens + extra + max_tokens > self.context_limit:
            raise APIError(400, f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceed the "
                           f"model's context of {self.context_limit} tokens", code="context_length_exceeded",
                           param="messages")
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        temperature = req.temperature or 0.0
        request = GenerationRequest(
            sample, max_new_tokens=max_tokens, temperature=temperature,
            top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k, seed=req.seed, stop=stop, lvtc=req.lvtc)
        plans = [{"width": w, "height": h, "cols": img.plan.cols, "rows": img.plan.rows,
                  "thumbnail": img.plan.thumbnail, "tiles": img.plan.num_tiles}
                 for (w, h), img in zip(sizes, sample.images, strict=True)]
        return Prepared(request, prompt_tokens, visual, plans)

    def submit(self, prepared: Prepared) -> RequestHandle:
        try:
            return self.engine.submit(prepared.request, loop=asyncio.get_running_loop())
        except QueueFullError as e:
            raise APIError(503, f"the server is busy: {e}; retry later", type="server_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineStoppedError:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down") from None

    def usage(self, prepared: Prepared, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prepared.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prepared.prompt_tokens + completion_tokens,
                "visual_tokens": prepared.visual_tokens}

    def extras(self, prepared: Prepared, handle: RequestHandle) -> dict[str, Any]:
        t0 = handle.submitted_at
        timing = {name: None if at is None else round(at - t0, 4)
                  for name, at in (("queued_s", handle.started_at), ("first_token_s", handle.first_token_at),
                                   ("total_s", handle.finished_at))}
        return {"lvtc": handle.lvtc, "images": prepared.images, "visual_tokens": prepared.visual_tokens,
                "timing": timing}

    def plan(self, req: PlanRequest) -> dict[str, Any]:
        try:
            cfg = self.engine.config_for(req.lvtc)
        except ConfigError as e:
            raise APIError(400, f"this model cannot run with LVTC {'on' if req.lvtc else 'off'}: {e}",
                           code="lvtc_unavailable", param="lvtc") from None
        ps = self.engine.processor_for(None).settings
        tiling = {"min_tiles": ps.min_tiles, "max_tiles": ps.max_tiles, "policy": ps.policy,
                  "thumbnail": ps.thumbnail, **self.tiling(req.policy, req.max_tiles)}
        try:
            ours = count_visual_tokens(req.width, req.height, cfg, max_visual_tokens=req.max_visual_tokens, **tiling)
            base_cfg = _baseline_config()
            base = count_visual_tokens(req.width, req.height, base_cfg)
        except ConfigError as e:
            raise APIError(400, str(e), code="invalid_value") from None
        model = {"name": self.settings.model_name, "lvtc": cfg.lvtc.enabled, "policy": tiling["policy"],
                 "max_tiles": tiling["max_tiles"], "max_visual_tokens": req.max_visual_tokens,
                 **_count_dict(ours, cfg.tile_size)}
        baseline = {"name": BASELINE_NAME, "policy": base_cfg.tiling.policy, "max_tiles": base_cfg.tiling.max_tiles,
                    **_count_dict(base, base_cfg.tile_size)}
        return {"width": req.width, "height": req.height, "model": model, "baseline": baseline}


def _join(texts: list[str]) -> str:
    out = ""
    for t in texts:
        out += t if not out or out.endswith("\n") else "\n" + t
    return out


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _read_json(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None


# ---------------------------------------------------------------------------- app
def create_app(model: Any, processor: Any, settings: ServeSettings | None = None, *,
               engine: Engine | None = None) -> FastAPI:
    """The FastAPI app serving `model` with `processor`. The engine (`app.state.engine`) starts
    with the app's lifespan and stops with it; pass `engine` to supply your own."""
    settings = settings or ServeSettings()
    engine = engine or Engine(model, processor, max_batch=settings.max_batch, max_queue=settings.max_queue,
                              batch_wait_ms=settings.batch_wait_ms)
    server = _Server(engine, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop)

    app = FastAPI(title="internvlx", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.settings = settings
    app.state.server = server
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_ERROR_TYPES.get(exc.status_code, "server_error" if exc.status_code >= 500 else
                                     "invalid_request_error")
        return APIError(exc.status_code, str(exc.detail), type=kind, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.running
        body = {"status": "ok" if ok else "unavailable", "model": settings.model_name, **engine.counts(),
                "max_batch": engine.max_batch, "max_queue": engine.max_queue, "stats": dict(engine.stats)}
        return JSONResponse(body, status_code=200 if ok else 503)

    def _model_card() -> dict[str, Any]:
        return {"id": settings.model_name, "object": "model", "created": server.created, "owned_by": "internvlx"}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        server.check_auth(request)
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        server.check_auth(request)
        if model_id != settings.model_name:
            raise APIError(404, f"model {model_id!r} does not exist", type="not_found_error", code="model_not_found")
        return _model_card()

    @app.post("/v1/internvlx/plan")
    async def plan(request: Request) -> dict[str, Any]:
        server.check_auth(request)
        req = _validate(PlanRequest, await _read_json(request))
        return server.plan(req)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        server.check_auth(request)
        req = _validate(ChatCompletionRequest, await _read_json(request))
        prepared = await run_in_threadpool(server.prepare, req)
        handle = server.submit(prepared)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _stream(request, server, handle, prepared, ident, created, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while not handle.done:
                event = await handle.next_event(settings.stream_poll_s)
                if event is None and await request.is_disconnected():
                    handle.cancel()
                    return Response(status_code=499)
                if isinstance(event, (Finished, Failed)):
                    break
        finally:
            if not handle.done:
                handle.cancel()
        outcome = handle.outcome
        if isinstance(outcome, Failed):
            if isinstance(outcome.error, EngineStoppedError):
                raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
            raise APIError(500, f"generation failed: {outcome.error}", type="server_error")
        if outcome.finish_reason == "cancelled":  # only the server stopping cancels a connected client
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": created, "model": settings.model_name,
            "system_fingerprint": "internvlx",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text},
                         "logprobs": None, "finish_reason": outcome.finish_reason}],
            "usage": server.usage(prepared, outcome.completion_tokens),
            "internvlx": server.extras(prepared, handle),
        })

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _stream(request: Request, server: _Server, handle: RequestHandle, prepared: Prepared, ident: str,
                  created: int, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format; a client that goes away cancels the request."""
    name = server.settings.model_name

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                     "system_fingerprint": "internvlx",
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await handle.next_event(server.settings.stream_poll_s)
            if event is None:
                if await request.is_disconnected():
                    handle.cancel()
                    return
                continue
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
            elif isinstance(event, Finished):
                yield chunk({}, event.finish_reason)
                if include_usage:
                    yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                                "system_fingerprint": "internvlx", "choices": [],
                                "usage": server.usage(prepared, event.completion_tokens),
                                "internvlx": server.extras(prepared, handle)})
                yield "data: [DONE]\n\n"
                return
            else:
                error = APIError(500, f"generation failed: {event.error}", type="server_error")
                yield _sse(error.body())
                yield "data: [DONE]\n\n"
                return
    finally:
        if not handle.done:
            handle.cancel()
