"""Load test of `internvlx serve`: N concurrent clients for T seconds against a local server.

Each client sends chat completions (one image + a question, streamed by default) back to back
until the time is up. Reported: requests/s, p50/p95 latency, p50/p95 time to first token
(streaming), completion tokens/s and errors by kind.

Only loopback servers are accepted (`127.0.0.0/8`, `::1`, `localhost`), with at most 64
clients and 600 seconds: this is a benchmark for your own machine, not a load generator.

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 8 --duration 20
    python benchmarks/serve_load.py --model-dir models/internvlx-demo --clients 4 --duration 10
        # starts the server in-process on a free loopback port for the run
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import ipaddress
import json
import math
import os
import platform
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_CLIENTS = 64
MAX_DURATION_S = 600.0


@dataclass
class Sample:
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Target:
    host: str
    port: int
    api_key: str | None
    model: str
    timeout_s: float
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"--url must look like http://127.0.0.1:PORT, got {url!r}")
    host = parts.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise SystemExit(f"refusing {host}: this benchmark only targets loopback servers")
    return host, parts.port or 80


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def demo_image_url(width: int = 640, height: int = 480) -> str:
    """A synthetic PNG (gradient and shapes) as a data URL."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(40 + 160 * y // height, 90, 200 - 120 * y // height))
    draw.ellipse([width // 5, height // 5, width // 2, height // 2], fill=(230, 60, 40))
    draw.rectangle([width // 2, height // 2, 4 * width // 5, 4 * height // 5], fill=(250, 210, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_file_url(path: str) -> str:
    data = open(path, "rb").read()
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    mime = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}.get(ext)
    if mime is None:
        raise SystemExit(f"--image must be PNG, JPEG or WebP, got {path}")
    return f"data:image/{mime};base64," + base64.b64encode(data).decode()


def headers(target: Target) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    if target.api_key:
        out["Authorization"] = f"Bearer {target.api_key}"
    return out


def first_model(target: Target) -> str:
    conn = http.client.HTTPConnection(target.host, target.port, timeout=target.timeout_s)
    try:
        conn.request("GET", "/v1/models", headers=headers(target))
        resp = conn.getresponse()
        body = json.loads(resp.read() or b"{}")
        if resp.status != 200:
            raise SystemExit(f"GET /v1/models answered {resp.status}: {body}")
        return body["data"][0]["id"]
    finally:
        conn.close()


def one_request(target: Target, body: bytes, stream: bool) -> Sample:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(target.host, target.port, timeout=target.timeout_s)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers(target))
        resp = conn.getresponse()
        if resp.status != 200:
            try:
                code = json.loads(resp.read()).get("error", {}).get("code")
            except ValueError:
                code = None
            return Sample(False, time.perf_counter() - start, error=f"HTTP {resp.status}" + (f" {code}" if code else ""))
        if not stream:
            data = json.loads(resp.read())
            return Sample(True, time.perf_counter() - start,
                          completion_tokens=int(data.get("usage", {}).get("completion_tokens", 0)))
        ttft, tokens = None, 0
        while True:
            line = resp.readline()
            if not line:
                return Sample(False, time.perf_counter() - start, ttft, tokens, "stream ended without [DONE]")
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return Sample(True, time.perf_counter() - start, ttft, tokens)
            chunk = json.loads(payload)
            if "error" in chunk:
                return Sample(False, time.perf_counter() - start, ttft, tokens, "stream error")
            for choice in chunk.get("choices", []):
                if ttft is None and choice.get("delta", {}).get("content"):
                    ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = int(chunk["usage"].get("completion_tokens", 0))
    except (OSError, http.client.HTTPException, ValueError) as e:
        return Sample(False, time.perf_counter() - start, error=type(e).__name__)
    finally:
        conn.close()


def client_loop(target: Target, body: bytes, stream: bool, deadline: float) -> None:
    while time.perf_counter() < deadline:
        sample = one_request(target, body, stream)
        with target.lock:
            target.samples.append(sample)


def run_load(url: str, *, clients: int = 4, duration: float = 10.0, max_tokens: int = 32, stream: bool = True,
             image_url: str | None = None, question: str = "What is in the image?", api_key: str | None = None,
             model: str | None = None, timeout_s: float = 120.0, extra: dict | None = None) -> dict:
    """Run the load test and return the summary (see the module docstring)."""
    if not 1 <= clients <= MAX_CLIENTS:
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS}, got {clients}")
    if not 0 < duration <= MAX_DURATION_S:
        raise SystemExit(f"--duration must be in (0, {MAX_DURATION_S:.0f}] seconds, got {duration}")
    host, port = check_loopback(url)
    target = Target(host, port, api_key, model or "", timeout_s)
    target.model = model or first_model(target)
    content = [{"type": "text", "text": question}]
    if image_url is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image_url}})
    request = {"model": target.model, "messages": [{"role": "user", "content": content}],
               "max_tokens": max_tokens, "stream": stream, **(extra or {})}
    if stream:
        request["stream_options"] = {"include_usage": True}
    body = json.dumps(request).encode()
    start = time.perf_counter()
    deadline = start + duration
    threads = [threading.Thread(target=client_loop, args=(target, body, stream, deadline), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + timeout_s + 5)
    elapsed = time.perf_counter() - start
    samples = list(target.samples)
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.error or "error"] = errors.get(s.error or "error", 0) + 1
    latencies = [s.latency_s for s in ok]
    ttfts = [s.ttft_s for s in ok if s.ttft_s is not None]
    tokens = sum(s.completion_tokens for s in ok)

    def ms(x: float | None) -> float | None:
        return None if x is None else round(1000 * x, 1)

    return {
        "url": url, "model": target.model, "clients": clients, "duration_s": duration, "elapsed_s": round(elapsed, 2),
        "stream": stream, "max_tokens": max_tokens, "requests": len(samples), "ok": len(ok),
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "requests_per_s": round(len(ok) / elapsed, 3) if elapsed else None,
        "latency_ms": {"p50": ms(percentile(latencies, 50)), "p95": ms(percentile(latencies, 95)),
                       "mean": ms(statistics.fmean(latencies)) if latencies else None},
        "ttft_ms": {"p50": ms(percentile(ttfts, 50)), "p95": ms(percentile(ttfts, 95))},
        "completion_tokens_per_s": round(tokens / elapsed, 1) if elapsed else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def start_local_server(model_dir: str, max_batch: int, api_key: str | None) -> tuple[str, object, threading.Thread]:
    """Load `model_dir` and serve it with uvicorn in a thread on a free loopback port."""
    import uvicorn

    from internvlx.serve import ServeSettings, load_app

    settings = ServeSettings(model_name=os.path.basename(os.path.abspath(model_dir)), max_batch=max_batch,
                             api_key=api_key, max_queue=max(MAX_CLIENTS, 4 * max_batch))
    app = load_app(model_dir, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit("the local server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def format_summary(r: dict) -> str:
    lines = [
        f"{r['clients']} clients x {r['duration_s']} s against {r['url']} ({r['model']}), "
        f"{'streaming' if r['stream'] else 'non-streaming'}, max_tokens {r['max_tokens']}",
        f"  requests: {r['requests']} ({r['ok']} ok, {r['errors']} errors{' ' + str(r['errors_by_kind']) if r['errors'] else ''})",
        f"  throughput: {r['requests_per_s']} requests/s, {r['completion_tokens_per_s']} completion tokens/s",
        f"  latency: p50 {r['latency_ms']['p50']} ms, p95 {r['latency_ms']['p95']} ms",
    ]
    if r["stream"]:
        lines.append(f"  time to first token: p50 {r['ttft_ms']['p50']} ms, p95 {r['ttft_ms']['p95']} ms")
    lines.append(f"  machine: {r['machine']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (loopback only)")
    where.add_argument("--model-dir", help="start a server for this model directory in-process")
    p.add_argument("--clients", type=int, default=4, help=f"concurrent clients (1..{MAX_CLIENTS})")
    p.add_argument("--duration", type=float, default=10.0, help=f"seconds (at most {MAX_DURATION_S:.0f})")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--no-stream", action="store_true", help="non-streaming requests (no time to first token)")
    p.add_argument("--image", default=None, help="PNG/JPEG/WebP file to send (default: a synthetic 640x480 PNG)")
    p.add_argument("--no-image", action="store_true", help="text-only requests")
    p.add_argument("--question", default="What is in the image?")
    p.add_argument("--api-key", default=os.environ.get("INTERNVLX_API_KEY"))
    p.add_argument("--model", default=None, help="model id (default: the server's first)")
    p.add_argument("--max-batch", type=int, default=8, help="with --model-dir: the server's batch size")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    p.add_argument("--json", default=None, help="also write the summary here")
    args = p.parse_args(argv)
    image = None if args.no_image else (image_file_url(args.image) if args.image else demo_image_url())
    server = None
    url = args.url
    if args.model_dir:
        url, server, thread = start_local_server(args.model_dir, args.max_batch, args.api_key)
    try:
        result = run_load(url, clients=args.clients, duration=args.duration, max_tokens=args.max_tokens,
                          stream=not args.no_stream, image_url=image, question=args.question,
                          api_key=args.api_key, model=args.model, timeout_s=args.timeout)
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(30)
    print(format_summary(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
