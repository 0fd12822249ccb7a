"""benchmarks/compression_table.py: every variant is a valid training run of the intended
compressor, and the report aggregates seeds correctly."""

from pathlib import Path

import pytest

from internvlx import InternVLXForConditionalGeneration
from internvlx.configuration import InternVLXConfig
from internvlx.train import RunConfig
from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    return load_benchmark("compression_table")


EXPECTED = {  # variant: (projector, tokens per tile at the LLM input, tokens per tile in the deep layers)
    "internvl2-mlp": ("mlp", 16, 16),
    "pvtc-r0.5": ("pvtc", 16, 16),
    "pvtc-r0.25": ("pvtc", 4, 4),
    "mlp-r0.25": ("mlp", 4, 4),
    "pvtc-lvtc": ("pvtc", 4, 16),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_low_resolution_variants_build_the_intended_compressor(table, name, tmp_path):
    raw = table.run_config(name, seed=1, steps=7, out=tmp_path, batch_size=4)
    cfg = RunConfig.from_dict(raw)
    assert cfg.stage == "scratch" and cfg.train["seed"] == 1 and cfg.train["max_steps"] == 7
    assert cfg.train["group_by_length"] is False
    model_cfg = InternVLXConfig.from_preset("demo", **cfg.model["config_overrides"])
    projector, tokens_in, tokens_deep = EXPECTED[name]
    assert model_cfg.projector.type == projector
    assert model_cfg.input_tokens_per_tile == tokens_in and model_cfg.tokens_per_tile == tokens_deep
    assert cfg.data["tiling"]["max_tiles"] == 1


def test_variants_share_everything_but_the_compressor(table, tmp_path):
    configs = {name: table.run_config(name, 0, 100, tmp_path) for name in table.VARIANTS}
    for raw in configs.values():  # identical optimisation and data order for every row
        assert raw["optim"] == configs["pvtc-r0.5"]["optim"]
        assert raw["train"] == configs["pvtc-r0.5"]["train"]
    policies = {configs[n]["data"]["tiling"]["policy"] for n in ("rvtc-stock", "rvtc-length", "rvtc-area")}
    assert policies == {"stock", "length", "area"}
    assert table.VARIANTS["pvtc-lvtc-free"]["reuse"] == "pvtc-r0.5"


def _result(variant, seed, score, flops, tokens=16.0):
    return {"variant": variant, "seed": seed, "score": score, "flops_prefill": flops,
            "per_type": {"colour": score, "shape": 0.5}, "tokens_llm_input": tokens,
            "tokens_mean_per_layer": tokens, "prefill_ms_batch8": 10.0, "train_samples_per_s": 12.0}


def test_report_table_averages_seeds_and_compares_flops_with_the_first_row(table):
    grouped = {
        "internvl2-mlp": [_result("internvl2-mlp", 0, 0.50, 4e9), _result("internvl2-mlp", 1, 0.60, 4e9)],
        "pvtc-r0.25": [_result("pvtc-r0.25", 0, 0.40, 1e9, 4.0), _result("pvtc-r0.25", 1, 0.40, 1e9, 4.0)],
    }
    lines = table.table(grouped, "one_tile").splitlines()
    base, small = lines[2], lines[3]
    assert "| 55.0 ± 5.0 |" in base and "| 1.00x |" in base
    assert "| 40.0 ± 0.0 |" in small and "| 0.25x |" in small and "| 4.0 |" in small
    assert table.table(grouped, "tiles").count("\n") == 1  # header only: no multi-tile rows


def test_mean_spread_of_one_seed_has_no_spread(table):
    assert table._mean_spread([0.25]) == "25.0"
    assert table._mean_spread([]) == "n/a"


def test_committed_results_page_states_command_machine_and_plot(table):
    page = table.DOC.read_text()
    assert "python benchmarks/compression_table.py run" in page and "CPU cores" in page
    assert f"img/{table.PLOT.name}" in page and table.PLOT.exists()
    for name in ("internvl2-mlp", "pvtc-r0.5", "pvtc-r0.25", "mlp-r0.25", "pvtc-lvtc",
                 "rvtc-stock", "rvtc-length", "rvtc-area"):
        assert table.VARIANTS[name]["label"] in page  # every required row was run and reported


def test_init_sweep_keeps_vit_and_llm_and_restarts_the_projector(table, tmp_path):
    """`run --init DIR`: projector/LLM variants re-initialise projector and LVTC; tiling variants
    keep the whole trained model; every row still shares optimisation and data order."""
    configs = {name: table.run_config(name, 0, 100, tmp_path, init="models/internvlx-demo") for name in table.VARIANTS}
    for name, raw in configs.items():
        cfg = RunConfig.from_dict(raw)
        assert cfg.model["init"] == "models/internvlx-demo" and "tokenizer" not in cfg.model
        assert cfg.model["reinit"] == (["projector", "lvtc"] if table.VARIANTS[name]["set"] == "one_tile" else [])
        assert cfg.optim == configs["pvtc-r0.5"]["optim"] and cfg.optim["lr"] < table.LR_SCRATCH["lr"]
    scratch = table.run_config("pvtc-r0.5", 0, 100, tmp_path)
    assert scratch["model"]["init"] == "preset:demo" and scratch["optim"]["lr"] == table.LR_SCRATCH["lr"]


def test_reinit_starts_named_modules_afresh_and_keeps_the_rest(tmp_path):
    import torch

    from internvlx.train import _load_for_training
    from tests.helpers import build_chat_model_dir

    base = build_chat_model_dir(tmp_path / "base", seed=4)
    saved = InternVLXForConditionalGeneration.from_pretrained(base).state_dict()
    model = _load_for_training(Path(base), {}, seed=9, reinit=("projector",))
    for key, value in model.state_dict().items():
        if key.startswith(("vision_model.", "language_model.")):
            assert torch.equal(value, saved[key]), key
    changed = [k for k, v in model.state_dict().items() if k.startswith("projector.") and not torch.equal(v, saved[k])]
    assert changed  # the projector was re-initialised, not loaded
    kept = _load_for_training(Path(base), {}, seed=9)
    assert all(torch.equal(v, saved[k]) for k, v in kept.state_dict().items())


def test_report_command_reproduces_each_section_budget(table, tmp_path, monkeypatch):
    """The page's command names, per section, the steps, batch size and evaluation size the runs
    recorded (a bare `run` would train 600 x 8 and evaluate 400, not what the page reports)."""
    monkeypatch.setattr(table, "RUNS", tmp_path)
    (tmp_path / "pvtc-r0.5-s0").mkdir()
    (tmp_path / "pvtc-r0.5-s0" / "run.yaml").write_text("model: {init: runs/demo-stage3/final}\n")

    def done(variant, seed, steps, count):
        return {**_result(variant, seed, 0.5, 1e9), "steps": steps, "batch_size": 16, "count": count}

    grouped = {"pvtc-r0.5": [done("pvtc-r0.5", 0, 200, 1000), done("pvtc-r0.5", 1, 200, 1000)],
               "rvtc-area": [done("rvtc-area", 0, 80, 300), done("rvtc-area", 1, 80, 300)]}
    text = table._commands(grouped)
    one_tile, tiles = text.split("`, `")[:2]
    assert "--init runs/demo-stage3/final" in one_tile and f"--runs {tmp_path}" in one_tile
    assert "--variants pvtc-r0.5 --seeds 0 1 --steps 200 --batch-size 16 --limit 1000" in one_tile
    assert "--variants rvtc-area --seeds 0 1 --steps 80 --batch-size 16 --limit 300" in tiles
    assert text.endswith(f"report --runs {tmp_path}`")
