"""internvlx.trainstate: the optimizer, scheduler and RNG states round-trip through safetensors
and JSON exactly (a resumed run continues as if never stopped), and mismatched or damaged
files raise CheckpointError instead of restoring half a state."""

import random

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from internvlx import trainstate
from internvlx.errors import CheckpointError


def _model_and_optimizer(seed=0, second=(3,)):
    torch.manual_seed(seed)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(4, 3), "b": torch.nn.Linear(3, *second)})
    groups = [{"params": list(model["a"].parameters()), "lr": 1e-2, "name": "a", "weight_decay": 0.1},
              {"params": list(model["b"].parameters()), "lr": 3e-3, "name": "b", "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, betas=(0.9, 0.95))


def _step(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 4, generator=g)
    loss = model["b"](model["a"](x)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_optimizer_round_trip_continues_identically(tmp_path):
    model, opt = _model_and_optimizer()
    for k in range(3):
        _step(model, opt, k)
    trainstate.save_optimizer(opt, tmp_path)
    twin, twin_opt = _model_and_optimizer(seed=1)
    twin.load_state_dict(model.state_dict())
    trainstate.load_optimizer(twin_opt, tmp_path)
    assert twin_opt.param_groups[0]["betas"] == (0.9, 0.95) and twin_opt.param_groups[1]["name"] == "b"
    for k in range(3, 6):
        _step(model, opt, k)
        _step(twin, twin_opt, k)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), name
    # a fresh optimizer (no state yet) continues differently: the state was really restored
    fresh, fresh_opt = _model_and_optimizer(seed=1)
    fresh.load_state_dict(twin.state_dict())
    _step(fresh, fresh_opt, 9)
    _step(twin, twin_opt, 9)
    assert not torch.equal(fresh["a"].weight, twin["a"].weight)


def test_optimizer_mismatches_are_refused(tmp_path):
    model, opt = _model_and_optimizer()
    _step(model, opt, 0)
    trainstate.save_optimizer(opt, tmp_path)
    _, other = _model_and_optimizer(second=(5,))  # b's output size changed
    with pytest.raises(CheckpointError, match="shape"):
        trainstate.load_optimizer(other, tmp_path)
    single = torch.optim.AdamW(model.parameters())  # one group instead of two
    with pytest.raises(CheckpointError, match="parameter groups"):
        trainstate.load_optimizer(single, tmp_path)
    path = tmp_path / trainstate.OPTIMIZER_FILE
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        trainstate.load_optimizer(opt, tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        trainstate.load_optimizer(opt, tmp_path / "nowhere")


def test_foreign_safetensors_file_is_not_taken_for_a_state(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / trainstate.OPTIMIZER_FILE))
    _, opt = _model_and_optimizer()
    with pytest.raises(CheckpointError, match="not written by internvlx"):
        trainstate.load_optimizer(opt, tmp_path)


def test_scheduler_round_trip(tmp_path):
    _, opt = _model_and_optimizer()
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=20)
    for _ in range(7):
        opt.step()
        sched.step()
    trainstate.save_scheduler(sched, tmp_path)
    _, opt2 = _model_and_optimizer()
    sched2 = get_scheduler("cosine", opt2, num_warmup_steps=2, num_training_steps=20)
    trainstate.load_scheduler(sched2, tmp_path)
    assert sched2.last_epoch == 7
    for _ in range(3):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
    (tmp_path / trainstate.SCHEDULER_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        trainstate.load_scheduler(sched2, tmp_path)
    (tmp_path / trainstate.SCHEDULER_FILE).write_text('{"base_lrs": [1]}')
    with pytest.raises(CheckpointError, match="last_epoch"):
        trainstate.load_scheduler(sched2, tmp_path)


def _draws():
    return (random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist())


@pytest.mark.parametrize("rank", [None, 1])
def test_rng_round_trip_replays_the_same_numbers(tmp_path, rank):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    trainstate.save_rng(tmp_path, rank)
    expected = _draws()
    _draws()
    trainstate.load_rng(tmp_path, rank)
    assert _draws() == expected
    assert (tmp_path / trainstate.rng_file(rank)).exists()
    with pytest.raises(CheckpointError, match="missing"):
        trainstate.load_rng(tmp_path, 7)


def test_non_json_state_value_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        trainstate.save_json_state({"fn": object()}, tmp_path / "x.json")
