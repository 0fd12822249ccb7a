"""`internvlx serve`: OpenAI compatibility, batching, streaming, cancellation, limits, chat page.

One tiny random model directory is built per module; every app gets its own model instance
(the engine owns it). Answers are gibberish but deterministic, which is all equality needs.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from internvlx import InternVLXConfig, InternVLXForConditionalGeneration, InternVLXProcessor  # noqa: E402
from internvlx.accounting import count_visual_tokens  # noqa: E402
from internvlx.serve import ServeSettings, create_app  # noqa: E402
from internvlx.serve.engine import Engine, GenerationRequest  # noqa: E402
from tests.helpers import build_chat_model_dir, load_benchmark  # noqa: E402

NAME = "tiny"
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_chat_model_dir(tmp_path_factory.mktemp("serve"))


def load(model_dir, lvtc: bool | None = None):
    model = InternVLXForConditionalGeneration.from_pretrained(model_dir).eval()
    if lvtc:
        model.configure_lvtc(True)
    processor = InternVLXProcessor.from_pretrained(model_dir)
    if lvtc:
        processor = InternVLXProcessor(processor.tokenizer, processor.settings.replace(
            input_tokens_per_tile=model.config.input_tokens_per_tile))
    return model, processor


@pytest.fixture(scope="module")
def reference(model_dir):
    """A separate model instance for `model.chat` answers."""
    return load(model_dir)


def make_app(model_dir, **settings):
    model, processor = load(model_dir)
    return create_app(model, processor, ServeSettings(model_name=NAME, **settings))


class LiveServer:
    """uvicorn in a thread on an ephemeral loopback port."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine(self) -> Engine:
        return self.app.state.engine

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)


def png_url(width: int, height: int, seed: int = 0, fmt: str = "PNG") -> str:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    mime = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}[fmt]
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def url_image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def user(text: str, *urls: str) -> dict:
    return {"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}} for u in urls),
                                        {"type": "text", "text": text}]}


def post(port: int, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# ---------------------------------------------------------------------------- OpenAI client
def test_openai_client_matches_model_chat(model_dir, reference):
    openai = pytest.importorskip("openai")
    ref, processor = reference
    url = png_url(150, 90, seed=1)
    image = url_image(url)
    with LiveServer(make_app(model_dir, api_key="sk-test")) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="sk-test", max_retries=0)
        assert [m.id for m in client.models.list().data] == [NAME]

        # non-streaming, greedy: the answer of model.chat with the same settings
        expected = ref.chat(processor, [image], "What is shown?", max_new_tokens=12)
        out = client.chat.completions.create(model=NAME, messages=[user("What is shown?", url)], max_tokens=12)
        assert out.choices[0].message.content == expected
        assert out.choices[0].finish_reason in ("stop", "length")
        ids = processor([user_text("What is shown?")], [image])["input_ids"][0]
        assert out.usage.prompt_tokens == len(ids)
        assert out.usage.visual_tokens == int((ids == ref.config.image_token_id).sum()) > 0
        assert out.usage.completion_tokens == out.usage.total_tokens - out.usage.prompt_tokens > 0
        tiles = out.model_extra["internvlx"]["images"][0]["tiles"]
        assert out.usage.visual_tokens == tiles * ref.config.input_tokens_per_tile

        # streaming: the chunks add up to the same text; usage arrives in the last chunk
        chunks = list(client.chat.completions.create(
            model=NAME, messages=[user("What is shown?", url)], max_tokens=12, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
        assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens

        # multi-turn history, as model.chat(history=...) builds it
        turn2 = ref.chat(processor, [image], "And the colours?", history=[("What is shown?", expected)],
                         max_new_tokens=10)
        out2 = client.chat.completions.create(model=NAME, max_tokens=10, messages=[
            user("What is shown?", url), {"role": "assistant", "content": expected},
            {"role": "user", "content": "And the colours?"}])
        assert out2.choices[0].message.content == turn2

        # seeded sampling: the draw model.chat makes after torch.manual_seed(seed)
        torch.manual_seed(1234)
        sampled = ref.chat(processor, [image], "Describe it.", max_new_tokens=12, do_sample=True,
                           temperature=0.8, top_p=0.9)
        for _ in range(2):
            out3 = client.chat.completions.create(model=NAME, messages=[user("Describe it.", url)], max_tokens=12,
                                                  temperature=0.8, top_p=0.9, seed=1234)
            assert out3.choices[0].message.content == sampled

        # per-request tiling extras reach the processor
        tiling = {"policy": "stock", "max_tiles": 2, "min_tiles": 1}
        expected_tiles = ref.chat(processor, [image], "Tiles?", max_new_tokens=8, tiling=tiling)
        out4 = client.chat.completions.create(model=NAME, messages=[user("Tiles?", url)], max_tokens=8,
                                              extra_body={"policy": "stock", "max_tiles": 2})
        assert out4.choices[0].message.content == expected_tiles
        assert out4.model_extra["internvlx"]["images"][0]["tiles"] <= 3

        # a stop string cuts the answer there
        long = ref.chat(processor, [image], "What is shown?", max_new_tokens=20)
        stop = next(long[i:i + 2] for i in range(4, len(long) - 2) if long[i:i + 2].strip() == long[i:i + 2])
        cut = client.chat.completions.create(model=NAME, messages=[user("What is shown?", url)], max_tokens=20,
                                             stop=[stop])
        assert cut.choices[0].message.content == long[: long.index(stop)].strip()
        assert cut.choices[0].finish_reason == "stop"

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0).models.list()


def user_text(text: str) -> dict:
    return {"role": "user", "content": text}


# ---------------------------------------------------------------------------- batching
def test_concurrent_requests_are_batched_and_equal_sequential(model_dir, reference):
    ref, processor = reference
    urls = [png_url(60 + 23 * i, 50 + 17 * (i % 3), seed=i) for i in range(8)]
    questions = [f"Question {i}: what is{' really' * i} here?" for i in range(8)]
    sequential = [ref.chat(processor, [url_image(u)], q, max_new_tokens=6 + i)
                  for i, (u, q) in enumerate(zip(urls, questions, strict=True))]
    with LiveServer(make_app(model_dir, max_batch=8, batch_wait_ms=0)) as live:
        live.engine.pause()  # let all 8 queue up, then run them as one batch
        answers: dict[int, tuple[int, dict]] = {}

        def ask(i: int) -> None:
            answers[i] = post(live.port, {"model": NAME, "messages": [user(questions[i], urls[i])],
                                          "max_tokens": 6 + i})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: live.engine.counts()["queued"] == 8)
        live.engine.resume()
        for t in threads:
            t.join(60)
        assert live.engine.stats["largest_batch"] == 8
        for i in range(8):
            status, body = answers[i]
            assert status == 200, body
            assert body["choices"][0]["message"]["content"] == sequential[i]
            assert body["usage"]["completion_tokens"] <= 6 + i


def test_engine_batches_mixed_settings_like_single_runs(model_dir):
    """Greedy and seeded sampling rows, different limits and LVTC on/off in one queue: each
    answer equals the same request run alone."""
    model, processor = load(model_dir)
    engine = Engine(model, processor, max_batch=8, batch_wait_ms=0).start()
    try:
        image = url_image(png_url(120, 80, seed=3))
        specs = [dict(max_new_tokens=9), dict(max_new_tokens=5, temperature=0.7, seed=1),
                 dict(max_new_tokens=9, temperature=1.2, top_p=0.8, seed=2), dict(max_new_tokens=7, lvtc=True),
                 dict(max_new_tokens=8, temperature=0.9, seed=1, lvtc=True)]

        def request(i: int, spec: dict) -> GenerationRequest:
            sample = engine.processor_for(spec.get("lvtc")).encode([user_text(f"q{i}?")], [image])
            return GenerationRequest(sample, **spec)

        alone = [engine.submit(request(i, s)).result(60) for i, s in enumerate(specs)]
        engine.pause()
        handles = [engine.submit(request(i, s)) for i, s in enumerate(specs)]
        batches = engine.stats["batches"]
        engine.resume()
        together = [h.result(60) for h in handles]
        assert [r.text for r in together] == [r.text for r in alone]
        assert engine.stats["batches"] - batches == 2  # LVTC off rows, then LVTC on rows
    finally:
        engine.stop()
    assert model.lvtc is None and not model.config.lvtc.enabled  # the model's own setting is back


def test_lvtc_switch_per_request_matches_lvtc_model(model_dir):
    on_model, on_processor = load(model_dir, lvtc=True)
    url = png_url(100, 70, seed=5)
    expected_on = on_model.chat(on_processor, [url_image(url)], "LVTC?", max_new_tokens=8)
    ref, processor = load(model_dir)
    expected_off = ref.chat(processor, [url_image(url)], "LVTC?", max_new_tokens=8)
    with TestClient(make_app(model_dir)) as client:
        for flag, expected in ((True, expected_on), (False, expected_off), (True, expected_on)):
            r = client.post("/v1/chat/completions", json={"model": NAME, "messages": [user("LVTC?", url)],
                                                          "max_tokens": 8, "lvtc": flag})
            assert r.status_code == 200, r.json()
            assert r.json()["choices"][0]["message"]["content"] == expected
            assert r.json()["internvlx"]["lvtc"] is flag


# ---------------------------------------------------------------------------- queue and cancellation
def test_full_queue_answers_503(model_dir):
    app = make_app(model_dir, max_batch=1, max_queue=2)
    with TestClient(app) as client:
        engine = app.state.engine
        engine.pause()
        sample = engine.processor_for(None).encode([user_text("hi")])
        held = [engine.submit(GenerationRequest(sample, max_new_tokens=3)) for _ in range(2)]
        r = client.post("/v1/chat/completions", json={"model": NAME, "messages": [user_text("one more")]})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "server_error" and r.json()["error"]["code"] == "queue_full"
        assert client.get("/health").json()["queued"] == 2
        engine.resume()
        assert all(h.result(60).finish_reason in ("stop", "length") for h in held)
        r = client.post("/v1/chat/completions", json={"model": NAME, "messages": [user_text("now")], "max_tokens": 3})
        assert r.status_code == 200


def test_cancelled_stream_frees_its_slot(model_dir):
    app = make_app(model_dir, max_batch=1, max_queue=1, max_tokens_limit=4000)
    with LiveServer(app) as live:
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
        body = {"model": NAME, "messages": [user("Tell me everything.", png_url(80, 60))], "max_tokens": 4000,
                "stream": True}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        while True:  # read until the first piece of answer text
            line = resp.readline()
            assert line, "stream ended early"
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break
        assert live.engine.counts()["active"] == 1
        conn.close()  # the client goes away mid-answer
        wait_for(lambda: live.engine.counts() == {"queued": 0, "active": 0})
        assert live.engine.stats["cancelled"] == 1
        started = time.monotonic()
        status, answer = post(live.port, {"model": NAME, "messages": [user_text("next")], "max_tokens": 4})
        assert status == 200 and answer["usage"]["completion_tokens"] <= 4
        assert time.monotonic() - started < 20  # not stuck behind 4000 tokens of the cancelled request


def test_engine_cancel_queued_request(model_dir):
    model, processor = load(model_dir)
    engine = Engine(model, processor, max_batch=1, max_queue=1).start()
    try:
        engine.pause()
        handle = engine.submit(GenerationRequest(engine.processor_for(None).encode([user_text("x")])))
        assert engine.counts() == {"queued": 1, "active": 0}
        handle.cancel()
        assert engine.counts() == {"queued": 0, "active": 0}
        assert handle.result(1).finish_reason == "cancelled"
    finally:
        engine.stop()


# ---------------------------------------------------------------------------- limits and auth
@pytest.fixture(scope="module")
def limited(model_dir):
    app = make_app(model_dir, api_key="secret", max_body_bytes=300_000, max_images=2, max_image_pixels=200 * 200,
                   max_tokens_limit=64, max_tiles_limit=4)
    with TestClient(app) as client:
        yield client


AUTH = {"Authorization": "Bearer secret"}


def error_of(response, status: int, code: str | None, kind: str = "invalid_request_error") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind and error["code"] == code and error["message"]
    return error


@pytest.mark.parametrize("headers,code", [({}, "missing_api_key"),
                                          ({"Authorization": "Bearer nope"}, "invalid_api_key"),
                                          ({"Authorization": "Basic secret"}, "invalid_api_key")])
def test_auth_required_when_configured(limited, headers, code):
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/internvlx/plan")):
        r = limited.request(method, path, headers=headers, json={})
        error_of(r, 401, code)
    assert limited.get("/health").status_code == 200  # liveness stays open
    assert limited.get("/").status_code == 200
    assert limited.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == NAME


def chat(client, messages, **extra):
    return client.post("/v1/chat/completions", headers=AUTH,
                       json={"model": NAME, "messages": messages, "max_tokens": 3, **extra})


def test_limits_answer_documented_errors(limited):
    small = png_url(40, 30)
    assert chat(limited, [user("ok?", small)]).status_code == 200
    # body size: Content-Length above the limit, and a chunked body that grows past it
    error_of(limited.post("/v1/chat/completions", headers=AUTH, content=b"x" * 300_001), 413, "request_too_large")
    chunks = (b"y" * 100_000 for _ in range(4))
    error_of(limited.post("/v1/chat/completions", headers=AUTH, content=chunks), 413, "request_too_large")
    # malformed JSON and schema violations
    error_of(limited.post("/v1/chat/completions", headers=AUTH, content=b"{not json"), 400, "invalid_json")
    e = error_of(limited.post("/v1/chat/completions", headers=AUTH, json={"model": NAME}), 422, "invalid_schema")
    assert e["param"] == "messages"
    e = error_of(chat(limited, [user_text("x")], temperature=5), 422, "invalid_schema")
    assert e["param"] == "temperature"
    error_of(chat(limited, [{"role": "tool", "content": "x"}]), 422, "invalid_schema")
    error_of(chat(limited, [{"role": "user", "content": [{"type": "video", "url": "x"}]}]), 422, "invalid_schema")
    error_of(chat(limited, [user_text("x")], stop=["a", "b", "c", "d", "e"]), 422, "invalid_schema")
    error_of(limited.post("/v1/chat/completions", headers=AUTH, json=[1, 2]), 422, "invalid_schema")
    # images: count, pixels, undecodable, unsupported type, remote URLs
    error_of(chat(limited, [user("x", small, small, small)]), 400, "too_many_images")
    e = error_of(chat(limited, [user("x", png_url(201, 200))]), 400, "image_too_large")
    assert e["param"] == "messages.0.content.0.image_url"
    error_of(chat(limited, [user("x", "data:image/png;base64," + base64.b64encode(b"not a png").decode())]),
             400, "invalid_image")
    error_of(chat(limited, [user("x", "data:image/png;base64,@@@")]), 400, "invalid_image_url")
    error_of(chat(limited, [user("x", png_url(20, 20, fmt="GIF"))]), 400, "unsupported_image_format")
    error_of(chat(limited, [user("x", "http://127.0.0.1:9/cat.png")]), 400, "remote_images_disabled")
    error_of(chat(limited, [user("x", "file:///etc/passwd")]), 400, "invalid_image_url")
    # placeholders that do not match the images
    error_of(chat(limited, [user_text("<image> but no image")]), 400, "invalid_prompt")
    # server-side limits on generation settings
    error_of(chat(limited, [user_text("x")], max_tokens=65), 400, "max_tokens_too_large")
    error_of(chat(limited, [user_text("x")], max_tiles=5), 400, "max_tiles_too_large")
    error_of(chat(limited, [user_text("x")], n=2), 400, "unsupported_parameter")
    e = error_of(chat(limited, [user_text("x")], model="gpt-4o"), 404, "model_not_found", "not_found_error")
    assert e["param"] == "model"
    error_of(limited.get("/v1/nothing", headers=AUTH), 404, None, "not_found_error")
    error_of(limited.get("/v1/chat/completions", headers=AUTH), 405, None)


def test_plan_endpoint_reports_model_and_baseline(limited):
    r = limited.post("/v1/internvlx/plan", headers=AUTH,
                     json={"width": 1920, "height": 1080, "policy": "area", "max_tiles": 4})
    assert r.status_code == 200
    plan = r.json()
    model = limited.app.state.engine.base_config
    ours = count_visual_tokens(1920, 1080, model, policy="area", max_tiles=4, min_tiles=1)
    base = count_visual_tokens(1920, 1080, InternVLXConfig.from_preset("internvl2-2b"))
    assert (plan["model"]["cols"], plan["model"]["rows"], plan["model"]["tiles"]) == (ours.cols, ours.rows, ours.tiles)
    assert plan["model"]["llm_input_tokens"] == ours.llm_input_tokens
    assert plan["baseline"]["tiles"] == base.tiles and plan["baseline"]["mean_per_layer"] == base.mean_per_layer
    lvtc = limited.post("/v1/internvlx/plan", headers=AUTH, json={"width": 1920, "height": 1080, "lvtc": True}).json()
    assert lvtc["model"]["lvtc"] and lvtc["model"]["llm_input_tokens"] < lvtc["model"]["full_tokens"]
    error_of(limited.post("/v1/internvlx/plan", headers=AUTH, json={"width": 0, "height": 5}), 422, "invalid_schema")


def test_chat_page_is_served_and_self_contained(limited):
    page = limited.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert limited.get(asset).status_code == 200
    static = Path(__import__("internvlx.serve.app", fromlist=["STATIC_DIR"]).STATIC_DIR)
    for f in static.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


# ---------------------------------------------------------------------------- CLI and benchmark
def test_cli_registers_serve(model_dir):
    from internvlx.cli import build_parser

    args = build_parser().parse_args(["serve", str(model_dir), "--max-batch", "4", "--api-key", "k"])
    assert args.command == "serve" and args.max_batch == 4 and args.host == "127.0.0.1" and args.port == 8000
    assert args.allow_remote_images is None and args.func.__name__ == "serve"


def serve_load_benchmark():
    return load_benchmark("serve_load")


def test_load_benchmark_runs_against_local_server(model_dir):
    bench = serve_load_benchmark()
    with pytest.raises(SystemExit):
        bench.run_load("http://10.0.0.1:8000", clients=1, duration=1)
    with pytest.raises(SystemExit):
        bench.run_load("http://127.0.0.1:8000", clients=1000, duration=1)
    with LiveServer(make_app(model_dir, max_batch=4)) as live:
        result = bench.run_load(live.url, clients=3, duration=1.5, max_tokens=4, image_url=png_url(64, 48))
    assert result["ok"] >= 3 and result["errors"] == 0 and result["model"] == NAME
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"]
    assert result["ttft_ms"]["p50"] is not None and result["requests_per_s"] > 0
    assert "requests/s" in bench.format_summary(result)


def test_images_attach_where_model_chat_puts_them(limited):
    from internvlx.serve.app import ChatCompletionRequest

    server = limited.app.state.server
    a, b = png_url(20, 20, seed=1), png_url(20, 20, seed=2)

    def build(*messages):
        return server.conversation(ChatCompletionRequest(model=NAME, messages=list(messages)))

    # all images in the first user message: no placeholders (the processor adds them, as model.chat)
    messages, urls = build(user("q1", a, b), {"role": "assistant", "content": "a1"}, user_text("q2"))
    assert [m["content"] for m in messages] == ["q1", "a1", "q2"] and [u for u, _ in urls] == [a, b]
    # an image in a later turn stays in that turn
    messages, urls = build({"role": "developer", "content": "be brief"}, user_text("q1"),
                           {"role": "assistant", "content": "a1"}, user("q2", a))
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert messages[3]["content"] == "<image>\nq2"
    messages, _ = build(user("q1", a), {"role": "assistant", "content": "a1"}, user("q2", b))
    assert messages[0]["content"] == "Image-1: <image>\nq1" and messages[2]["content"] == "Image-2: <image>\nq2"
    # literal placeholders written by the client are kept as they are
    messages, _ = build({"role": "user", "content": [{"type": "text", "text": "left <image> right <image>"},
                                                     {"type": "image_url", "image_url": a},
                                                     {"type": "image_url", "image_url": {"url": b}}]})
    assert messages[0]["content"] == "left <image> right <image>"
