"""`make demo`'s code path: the accounting table always; the shipped model answering when present."""

import importlib.util

from internvlx import demo
from internvlx.accounting import count_visual_tokens
from internvlx.configuration import InternVLXConfig


def test_accounting_table_compares_the_baseline_with_each_compressor():
    table = demo.accounting_table()
    for name in ("InternVL2-2B (MLP, stock tiling)", "+ RVTC length", "+ RVTC area", "+ LVTC"):
        assert name in table
    rows = [line for line in table.splitlines() if line.startswith("1024x768")]
    assert len(rows) == 5 and rows[0].rstrip().endswith("1.00x")
    # RVTC length caps 1024x768 at ceil(768/448)*ceil(1024/448) = 6 tiles (+ thumbnail)
    assert " 7 " in rows[2] and "1792" in rows[2]


def test_demo_main_runs(capsys):
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "visual-token accounting" in out and "demo finished" in out
    if demo.DEMO_MODEL.exists():  # the shipped model answers, with the ground truth beside it
        assert out.count("Q: ") >= 5 and out.count("ground truth") >= 5
        assert "answers match the ground truth" in out
        # every image gets its accounting against the baseline, at demo scale and at 2B size
        assert out.count("this model:") == out.count("at 2B size:") >= 5
        if importlib.util.find_spec("skimage") is not None:
            assert "astronaut" in out and "out of distribution" in out
    else:
        assert "No trained demo model" in out


def test_demo_scale_baseline_is_internvl2_style():
    cfg = InternVLXConfig.from_preset("demo")
    base = demo.baseline_for(cfg)
    assert base.projector.type == "mlp" and base.projector.downsample_ratio == 0.5
    assert base.tiling.policy == "stock" and not base.lvtc.enabled
    assert base.text_config.hidden_size == cfg.text_config.hidden_size
    # same tiles for a square image; LVTC's shallow layers take 4x fewer tokens than the baseline
    ours, theirs = count_visual_tokens(300, 300, cfg), count_visual_tokens(300, 300, base)
    assert ours.tiles == theirs.tiles and 4 * ours.llm_input_tokens == theirs.llm_input_tokens
    text = demo.image_accounting(300, 300, cfg)
    assert f"{ours.llm_input_tokens} visual tokens in" in text and f"{theirs.llm_input_tokens} tokens" in text


def test_model_card_states_commands_configs_and_accuracy(tmp_path):
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "package_demo_model", Path(__file__).resolve().parents[1] / "benchmarks" / "package_demo_model.py")
    pkg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pkg)
    data = tmp_path / "synth-easy"
    data.mkdir()
    options = {"resolution": "easy", "seed": 0, "caption_fraction": 0.15, "text_only_fraction": 0.05,
               "multi_image_fraction": 0.05, "multi_turn_fraction": 1.0, "max_follow_ups": 5}
    (data / "stats.json").write_text(json.dumps(
        {"resolution": "easy", "seed": 0, "test_fraction": 0.03125, "train": {"n": 62000}, "test": {"n": 2000},
         "options": options}))
    cfgs = []
    for name, steps, loss in (("one.yaml", 3600, 0.9), ("two.yaml", 2400, 0.7)):
        (tmp_path / name).write_text(f"output_dir: runs/{name}\ntrain: {{bf16: true, num_threads: 1}}\n")
        cfgs.append((tmp_path / name, {"steps": steps, "batch_size": 16, "train_loss": loss,
                                       "train_samples_per_second": 20.0,
                                       "log_history": [{"loss": 5.0}, {"loss": loss}, {"train_runtime": 600.0}]}))
    evaluation = {"score": 0.5, "count": 1000, "visual_tokens": {"llm_input_mean": 4.0, "mean_per_layer": 7.0},
                  "breakdown": {"qtype": {"colour": {"count": 150, "score": 0.75}}}}
    card = pkg.model_card(cfgs, evaluation, 15 * 2**20, 7_000_000, InternVLXConfig.from_preset(
        "demo", tiling={"max_tiles": 1}), data, Path("runs/demo"), limit=1000)
    assert ("internvlx data synth --out " + str(data) + " --n 64000 --seed 0 --test-fraction 0.03125 --resolution easy"
            " --multi-turn-fraction 1 --max-follow-ups 5\n") in card  # options at their defaults are left out
    assert "bf16 autocast with float32 master weights, one thread" in card
    assert f"internvlx train {cfgs[0][0]}\ninternvlx train {cfgs[1][0]}" in card
    assert "--limit 1000" in card and "| colour | 150 | 0.750 |" in card and "**0.500**" in card
    assert "capped at one tile" in card and "6000 x 16" in card
    assert "output_dir: runs/two.yaml" in card  # every config is embedded verbatim
