"""Helpers shared by the benchmarks (`internvlx.bench`, `benchmarks/*.py`): the machine-info
line, robust spread, a fixed-decimals table, a clock that works on CPU and CUDA, and a
peak-memory meter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from .accounting import format_table


# ------------------------------------------------------------------------------ machine
def machine_info(threads: int | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """CPU model, core count, SIMD level, library versions, torch threads, load average, and
    the GPU's name when `device` is a CUDA device."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads() if threads is None else threads,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda)
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line describing the machine (printed at the top of every benchmark)."""
    line = (
        f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs, {info['cpu_capability']}), "
        f"torch {info['torch']}, transformers {info['transformers']}, threads {info['threads']}, "
        f"load average at start {info['load_average_at_start']}"
    )
    if "gpu" in info:
        line += f"; GPU {info['gpu']} ({info['gpu_memory_bytes'] / 2**30:.0f} GiB, CUDA {info['cuda']})"
    return line


# ------------------------------------------------------------------------------ statistics
def iqr(values: Sequence[float]) -> float:
    """Interquartile range (inclusive quartiles); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def median_or_none(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


# ------------------------------------------------------------------------------ tables
def render_table(rows: Sequence[dict[str, Any]], spec: Sequence[tuple[str, str, str | None]]) -> str:
    """`format_table` of `rows` with the columns of `spec` = `(key, title, fmt)`: values with a
    format string are written with it and right-aligned; the others go to `format_table` as
    they are (numbers through `human_number`). Missing or None values are blank."""
    shown = []
    for row in rows:
        out = {}
        for key, title, fmt in spec:
            value = row.get(key)
            out[title] = value if fmt is None or value is None else fmt.format(value)
        shown.append(out)
    for _, title, fmt in spec:
        if fmt is None:
            continue
        cells = [r[title] for r in shown if r[title] is not None]
        width = max([len(title), *map(len, cells)])
        for r in shown:
            if r[title] is not None:
                r[title] = r[title].rjust(width)
    return format_table(shown, [title for _, title, _ in spec])


# ------------------------------------------------------------------------------ clock
class Clock:
    """Wall-clock marks on CPU (`time.perf_counter`), CUDA events on a GPU.

    `mark()` returns an opaque mark; `seconds(a, b)` the time between two marks (on CUDA it
    synchronises first, so call it after the work, outside the timed region)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end) -> float:
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any]) -> float:
        """Seconds one call of `fn` takes."""
        start = self.mark()
        fn()
        end = self.mark()
        return self.seconds(start, end)


# ------------------------------------------------------------------------------ memory
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_libc: Any = None


def _glibc():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc or None


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (`VmHWM`) of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory a block of code adds on top of what was allocated before it.

    GPU: `torch.cuda.max_memory_allocated() - memory_allocated()` before (the caching allocator
    is reset with `reset_peak_memory_stats`). CPU: resident set size, process-wide, so the meter
    measures a difference: glibc is first told to serve every allocation of 128 KiB and more
    with its own `mmap` (`mallopt(M_MMAP_THRESHOLD)`, which also stops the threshold from
    growing) so that freed tensors leave the process at once, free heap is trimmed
    (`malloc_trim`), the kernel's peak-RSS mark is reset (`/proc/self/clear_refs`) and the block
    adds `VmHWM - VmRSS(before)`. Where that is unavailable (not Linux/glibc) a thread polls
    the RSS with psutil every millisecond, which can miss short peaks. `method` says which.

    The allocator setting stays for the rest of the process (large allocations then always
    come from `mmap`), so benchmarks measure memory after their timings.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.peak_bytes = 0
        if self.device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated"
            return
        libc = _glibc()
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        self.method = "rss-hwm" if _reset_rss_peak() else "rss-poll"

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            return self
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(0)
        if self.method == "rss-hwm":
            _reset_rss_peak()
            self._before = _status_kib("VmRSS") * 1024
        else:
            import psutil

            proc = psutil.Process()
            self._before = proc.memory_info().rss
            self._poll_peak = self._before
            self._stop = threading.Event()

            def poll():
                while not self._stop.is_set():
                    self._poll_peak = max(self._poll_peak, proc.memory_info().rss)
                    time.sleep(0.001)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "rss-hwm":
            peak = _status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            peak = self._poll_peak
        self.peak_bytes = max(0, peak - self._before)


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of `module`, each storage counted once."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        total += t.untyped_storage().nbytes()
    return total
