"""Training: stages, scratch + LVTC, resume, LoRA + merge, per-module learning rates, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

from internvlx import ConfigError, InternVLXForConditionalGeneration
from internvlx.errors import CheckpointError
from internvlx.synth import generate_synthetic
from internvlx.train import (
    RunConfig,
    build_optimizer,
    latest_complete_checkpoint,
    merge_lora,
    set_trainable,
    train,
)
from tests.helpers import build_chat_model_dir


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, 40, progress=False, seed=3)
    return root / "meta_train.json"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_chat_model_dir(tmp_path_factory.mktemp("base"), seed=5)


def run_cfg(tmp_path, meta, **over):
    raw = {
        "output_dir": str(tmp_path / "run"),
        "model": {"init": "preset:tiny", "tokenizer": "bpe:400", "system_message": ""},
        "data": {"meta": str(meta), "max_seq_length": 512},
        "stage": "scratch",
        "optim": {"lr": 1e-3},
        "train": {"max_steps": 4, "batch_size": 2, "logging_steps": 1, "save_steps": 100,
                  "report_to": [], "disable_tqdm": True},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return RunConfig.from_dict(raw)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_stage1_trains_only_the_projector(tmp_path, synth, base_dir):
    before = _state(InternVLXForConditionalGeneration.from_pretrained(base_dir))
    cfg = run_cfg(tmp_path, synth, model={"init": str(base_dir)}, stage="1")
    summary = train(cfg)
    after = _state(InternVLXForConditionalGeneration.from_pretrained(summary["final_dir"]))
    changed = {k.split(".")[0] for k in before if not before[k].equal(after[k])}
    assert changed == {"projector"}
    logs = [h for h in summary["log_history"] if "loss" in h]
    assert logs and all("samples_per_s" in h and "visual_tokens_per_s" in h for h in logs)
    assert summary["trainable_parameters"]["llm"] == 0 and summary["trainable_parameters"]["projector"] > 0
    assert (Path(summary["final_dir"]) / "processor_config.json").exists()


def test_scratch_with_lvtc_and_checkpointing_learns(tmp_path, synth):
    cfg = run_cfg(tmp_path, synth, model={"config_overrides": {"lvtc": {"enabled": True}}},
                  train={"max_steps": 12, "gradient_checkpointing": True, "batch_size": 4})
    summary = train(cfg)
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    model = InternVLXForConditionalGeneration.from_pretrained(summary["final_dir"])
    assert model.config.lvtc.enabled and model.lvtc.gate.abs().sum() > 0  # the gate moved


def test_resume_continues_from_the_last_complete_checkpoint(tmp_path, synth):
    cfg = run_cfg(tmp_path, synth, train={"max_steps": 4, "save_steps": 2})
    train(cfg)
    out = Path(cfg.output_dir)
    assert latest_complete_checkpoint(out).name == "checkpoint-4"
    assert (out / "checkpoint-4" / "processor_config.json").exists()  # a loadable model directory
    # a checkpoint folder without the completion marker (a crash while saving) is ignored
    (out / "checkpoint-9").mkdir()
    assert latest_complete_checkpoint(out).name == "checkpoint-4"
    more = run_cfg(tmp_path, synth, train={"max_steps": 6, "save_steps": 2})
    summary = train(more, resume=True)
    assert summary["steps"] == 6
    steps = [h["step"] for h in summary["log_history"] if "loss" in h]
    assert steps[0] <= 4 and steps[-1] == 6  # history carried over from the checkpoint
    assert (out / "checkpoint-9").exists()  # nothing was deleted


def test_lora_adapter_and_merge(tmp_path, synth, base_dir):
    cfg = run_cfg(tmp_path, synth, model={"init": str(base_dir)}, stage="2",
                  lora={"llm": {"r": 4, "alpha": 8, "dropout": 0.0}}, optim={"lr": 5e-3})
    summary = train(cfg)
    final = Path(summary["final_dir"])
    assert (final / "adapter_config.json").exists() and (final / "adapter_model.safetensors").exists()
    merged = merge_lora(final, tmp_path / "merged", base_dir)
    plain = InternVLXForConditionalGeneration.from_pretrained(merged).eval()
    base = InternVLXForConditionalGeneration.from_pretrained(base_dir).eval()
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(InternVLXForConditionalGeneration.from_pretrained(base_dir), str(final)).eval()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        merged_logits = plain(input_ids=ids).logits
        torch.testing.assert_close(merged_logits, peft_model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
        assert not merged_logits.equal(base(input_ids=ids).logits)
    assert not any("lora" in k for k in plain.state_dict())


def test_per_module_learning_rates(base_dir):
    model = InternVLXForConditionalGeneration.from_pretrained(base_dir)
    set_trainable(model, ("projector", "llm"))
    opt, _ = build_optimizer(model, {"lr": 1e-4, "lr_projector": 1e-3}, 10)
    lrs = {g["name"]: g["initial_lr"] for g in opt.param_groups}  # "lr" is 0 at warm-up start
    assert lrs == {"projector": 1e-3, "llm": 1e-4}


def test_config_errors(tmp_path, synth):
    with pytest.raises(ConfigError, match="stage"):
        run_cfg(tmp_path, synth, stage="3")
    with pytest.raises(ConfigError, match="unknown trainable"):
        run_cfg(tmp_path, synth, trainable=["decoder"])
    with pytest.raises(ConfigError, match="LoRA adapts an existing model"):
        train(run_cfg(tmp_path, synth, lora={"llm": {"r": 2}}))
    with pytest.raises(ConfigError, match="unknown top-level"):
        RunConfig.from_dict({"output_dir": "x", "model": {}, "data": {}, "epochz": 1})


def test_cli_train_with_overrides(tmp_path, synth):
    from internvlx.cli import main

    cfg = run_cfg(tmp_path, synth).__dict__
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "run.yaml"), "--set", "train.max_steps=2"]) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_torchrun_ddp_two_processes(tmp_path, synth):
    cfg = run_cfg(tmp_path, synth, train={"max_steps": 2, "ddp_backend": "gloo"}).__dict__
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         "-m", "internvlx.cli", "train", str(tmp_path / "run.yaml")],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2


def test_internvl2_checkpoint_gets_a_new_pvtc_projector(tmp_path, synth, tmp_path_factory):
    base = build_chat_model_dir(tmp_path_factory.mktemp("internvl2"), seed=6, projector={"type": "mlp"})
    before = InternVLXForConditionalGeneration.from_pretrained(base)
    cfg = run_cfg(tmp_path, synth, model={"init": str(base), "config_overrides": {"projector": {"type": "pvtc"}}},
                  stage="1", train={"max_steps": 2})
    after = InternVLXForConditionalGeneration.from_pretrained(train(cfg)["final_dir"])
    assert type(after.projector).__name__ == "PVTCProjector"
    for k, v in before.state_dict().items():
        if not k.startswith("projector."):
            assert after.state_dict()[k].equal(v), k  # ViT and LLM kept (stage 1 froze them)


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def _losses(summary):
    return {h["step"]: h["loss"] for h in summary["log_history"] if "loss" in h}


def test_kill_and_resume_gives_the_same_losses(tmp_path, synth):
    fixed = {"projector": {"drop_path_rate": 0.0}}
    train_cfg = {"max_steps": 6, "save_steps": 3, "batch_size": 2}
    full = train(run_cfg(tmp_path / "a", synth, model={"config_overrides": fixed}, train=train_cfg))
    stopped = run_cfg(tmp_path / "b", synth, model={"config_overrides": fixed}, train=train_cfg)
    train(stopped, callbacks=[_StopAt(3)])  # "killed" right after the step-3 checkpoint
    assert latest_complete_checkpoint(stopped.output_dir).name == "checkpoint-3"
    resumed = train(run_cfg(tmp_path / "b", synth, model={"config_overrides": fixed}, train=train_cfg), resume=True)
    a, b = _losses(full), _losses(resumed)
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-4), (step, a, b)
    # the checkpoint it resumed from holds no pickle: the optimizer, scheduler, RNG states and
    # arguments are safetensors and JSON
    names = {p.name for p in (tmp_path / "b" / "run" / "checkpoint-3").iterdir()}
    assert {"optimizer.safetensors", "scheduler.json", "rng_state.safetensors", "training_args.json",
            "model.safetensors"} <= names, names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl"))], names


def test_resume_refuses_a_pickled_optimizer_state(tmp_path, synth):
    cfg = run_cfg(tmp_path, synth, train={"max_steps": 2, "save_steps": 2})
    train(cfg)
    ckpt = latest_complete_checkpoint(cfg.output_dir)
    (ckpt / "optimizer.safetensors").unlink()
    (ckpt / "optimizer.pt").write_bytes(b"\x80\x04pickle")  # what transformers' Trainer writes
    more = run_cfg(tmp_path, synth, train={"max_steps": 4, "save_steps": 2})
    with pytest.raises(CheckpointError, match="pickle"):
        train(more, resume=True)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_ddp_loss_curve_equals_single_process(tmp_path, synth):
    """2 processes x batch 1 (gloo) vs 1 process x batch 2: same global batches, same losses."""
    common = {"model": {"config_overrides": {"projector": {"drop_path_rate": 0.0}}},
              "train": {"max_steps": 4, "batch_size": 1, "group_by_length": False, "ddp_backend": "gloo"}}
    ddp = run_cfg(tmp_path / "ddp", synth, **common)
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(ddp.__dict__))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29523",
         "-m", "internvlx.train", str(tmp_path / "ddp.yaml")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_losses = _losses(json.loads((tmp_path / "ddp" / "run" / "train_summary.json").read_text()))
    single_train = {k: v for k, v in common["train"].items() if k != "ddp_backend"}
    single = run_cfg(tmp_path / "single", synth, **{**common, "train": {**single_train, "batch_size": 2}})
    single_losses = _losses(train(single))
    assert sorted(ddp_losses) == sorted(single_losses) == [1, 2, 3, 4]
    for step, loss in single_losses.items():
        assert ddp_losses[step] == pytest.approx(loss, rel=2e-3), (ddp_losses, single_losses)


def test_data_tiling_is_recorded_in_the_model_config(tmp_path, synth):
    from internvlx.train import build_model_and_processor, conversation_texts

    cfg = run_cfg(tmp_path, synth, data={"meta": str(synth), "tiling": {"policy": "area", "max_tiles": 2}})
    model, processor = build_model_and_processor(cfg, list(conversation_texts(synth)))
    assert (processor.settings.policy, processor.settings.max_tiles) == ("area", 2)
    assert (model.config.tiling.policy, model.config.tiling.max_tiles) == ("area", 2)


def test_batches_are_shuffled_unless_length_grouping_is_asked_for(tmp_path, synth):
    from internvlx.train import training_arguments

    assert training_arguments(run_cfg(tmp_path, synth), 4).train_sampling_strategy != "group_by_length"
    grouped = run_cfg(tmp_path, synth, train={"max_steps": 4, "group_by_length": True})
    assert training_arguments(grouped, 4).train_sampling_strategy == "group_by_length"


def test_bf16_checkpoint_trains_from_float32_master_weights(tmp_path, synth, base_dir):
    from internvlx.train import build_model_and_processor

    half = tmp_path / "bf16"
    InternVLXForConditionalGeneration.from_pretrained(base_dir).to(torch.bfloat16).save_pretrained(half)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        if (Path(base_dir) / name).exists():
            (half / name).write_bytes((Path(base_dir) / name).read_bytes())
    cfg = run_cfg(tmp_path, synth, model={"init": str(half)})
    model, _ = build_model_and_processor(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_reinit_names_only_projector_or_lvtc(tmp_path, synth, base_dir):
    from internvlx.train import build_model_and_processor

    cfg = run_cfg(tmp_path, synth, model={"init": str(base_dir), "reinit": ["llm"]})
    with pytest.raises(ConfigError, match="reinit"):
        build_model_and_processor(cfg)


def test_lvtc_checkpoint_fine_tunes_with_lvtc_switched_off(tmp_path):
    from internvlx.train import _load_for_training

    base = build_chat_model_dir(tmp_path / "lvtc", seed=2, lvtc=True)
    saved = InternVLXForConditionalGeneration.from_pretrained(base).state_dict()
    assert any(k.startswith("lvtc.") for k in saved)
    model = _load_for_training(Path(base), {"lvtc": {"enabled": False}}, seed=0)
    assert model.lvtc is None and not model.config.lvtc.enabled
    for key, value in model.state_dict().items():  # everything else, projector included, is kept
        assert torch.equal(value, saved[key]), key
