"""Pickle-free training state: optimizer, LR scheduler, RNG states and training arguments.

transformers' `Trainer` writes `optimizer.pt`, `scheduler.pt`, `rng_state.pth` and
`training_args.bin` with `torch.save` (pickle) and reads them back with `torch.load`. Our
checkpoints hold no pickle at all (the model is already safetensors):

* ``optimizer.safetensors``: every tensor of ``optimizer.state_dict()["state"]``, named
  ``state.<param index>.<key>``; its metadata holds the parameter groups and any non-tensor
  state as JSON;
* ``scheduler.json``: ``lr_scheduler.state_dict()`` (numbers and lists only); ``scaler.json``
  likewise for a mixed-precision grad scaler, when there is one;
* ``rng_state.safetensors`` (``rng_state_<rank>.safetensors`` with several processes): the
  torch CPU and accelerator generator states as tensors, Python's and numpy's as JSON metadata;
* ``training_args.json``: ``TrainingArguments.to_dict()``, for people (nothing reads it back).

Loading checks what it reads against the live optimizer (same groups, same parameter count,
same shapes) and raises :class:`~internvlx.errors.CheckpointError` naming the file on any
mismatch, so a resume never silently continues with a half-restored state.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError

OPTIMIZER_FILE = "optimizer.safetensors"
SCHEDULER_FILE = "scheduler.json"
SCALER_FILE = "scaler.json"
TRAINING_ARGS_FILE = "training_args.json"
PICKLED_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt")
_META_KEY = "internvlx"


def rng_file(rank: int | None = None) -> str:
    """``rng_state.safetensors``, or ``rng_state_<rank>.safetensors`` for one of several processes."""
    return "rng_state.safetensors" if rank is None else f"rng_state_{rank}.safetensors"


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete; resume from an earlier one")


def _write_text(path: Path, text: str) -> Path:
    """``text`` into ``path`` through a temporary name and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """safetensors file with ``meta`` as JSON metadata, written to a temporary name then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={_META_KEY: json.dumps(meta)})
    tmp.replace(path)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    _require_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors' SafetensorError: header or data corrupt / truncated
        raise CheckpointError(f"{path} is corrupt ({exc}); resume from an earlier checkpoint") from exc
    try:
        meta = json.loads(metadata[_META_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has no internvlx training-state metadata; "
                              "it was not written by internvlx") from exc
    return tensors, meta


def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    raise CheckpointError(f"cannot store {type(value).__name__} {value!r} in a JSON training state")


# ------------------------------------------------------------------ optimizer and scheduler


def save_optimizer(optimizer: torch.optim.Optimizer, directory: str | Path) -> Path:
    """Write ``optimizer.state_dict()`` to ``directory/optimizer.safetensors``."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = _json_ready(value)
    path = Path(directory) / OPTIMIZER_FILE
    _write(path, tensors, {"param_groups": _json_ready(sd["param_groups"]), "scalars": scalars})
    return path


def load_optimizer(optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """Restore what :func:`save_optimizer` wrote into ``optimizer`` (built the same way)."""
    path = Path(directory) / OPTIMIZER_FILE
    tensors, meta = _read(path)
    live = optimizer.state_dict()
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(live["param_groups"]):
        raise CheckpointError(f"{path}: {len(groups) if isinstance(groups, list) else 'no'} parameter groups, the "
                              f"optimizer has {len(live['param_groups'])}: the run's trainable modules changed")
    for saved, current in zip(groups, live["param_groups"], strict=True):
        if len(saved.get("params", [])) != len(current["params"]):
            raise CheckpointError(f"{path}: group {current.get('name', '?')!r} holds {len(saved.get('params', []))} "
                                  f"parameters, the optimizer {len(current['params'])}: the model changed")
        for key, value in current.items():  # keep tuples tuples (betas) as the optimizer built them
            if isinstance(value, tuple) and isinstance(saved.get(key), list):
                saved[key] = tuple(saved[key])
    params = {i: p for group, saved in zip(optimizer.param_groups, groups, strict=True)
              for i, p in zip(saved["params"], group["params"], strict=True)}
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    for index, values in state.items():
        if index not in params:
            raise CheckpointError(f"{path}: state for parameter {index}, which no group holds")
        for key, value in values.items():
            if torch.is_tensor(value) and value.dim() and value.shape != params[index].shape:
                raise CheckpointError(f"{path}: {key} of parameter {index} has shape {tuple(value.shape)}, the "
                                      f"parameter {tuple(params[index].shape)}: the model changed")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_json_state(state: dict[str, Any], path: Path) -> Path:
    """A ``state_dict()`` of numbers and lists (a scheduler's, a grad scaler's) as JSON."""
    return _write_text(path, json.dumps(_json_ready(state), indent=1))


def load_json_state(path: Path, required: str | None = None) -> dict[str, Any]:
    _require_file(path)
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); resume from an earlier checkpoint") from exc
    if not isinstance(state, dict) or (required and required not in state):
        raise CheckpointError(f"{path} is not the state it should hold (no {required!r})")
    return state


def save_scheduler(scheduler, directory: str | Path) -> Path:
    return save_json_state(scheduler.state_dict(), Path(directory) / SCHEDULER_FILE)


def load_scheduler(scheduler, directory: str | Path) -> None:
    scheduler.load_state_dict(load_json_state(Path(directory) / SCHEDULER_FILE, required="last_epoch"))


# ------------------------------------------------------------------ random number generators


def save_rng(directory: str | Path, rank: int | None = None) -> Path:
    """Python's, numpy's, torch's CPU and (when present) CUDA generator states."""
    tensors = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.random.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy())
    meta = {"python": [version, list(internal), gauss],
            "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    path = Path(directory) / rng_file(rank)
    path.parent.mkdir(parents=True, exist_ok=True)  # a process can get here before rank 0 saved the model
    _write(path, tensors, meta)
    return path


def load_rng(directory: str | Path, rank: int | None = None) -> None:
    tensors, meta = _read(Path(directory) / rng_file(rank))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    n = meta["numpy"]
    keys = tensors["numpy.keys"].numpy().view(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.random.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.random.set_rng_state_all(cuda)


def save_training_args(args, directory: str | Path) -> Path:
    return _write_text(Path(directory) / TRAINING_ARGS_FILE, args.to_json_string())
