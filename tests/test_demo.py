"""`make demo`'s code path: the accounting table always; the shipped model answering when present."""

import importlib.util

from internvlx import demo
from internvlx.accounting import count_visual_tokens
from internvlx.configuration import InternVLXConfig
from tests.helpers import load_benchmark


def test_accounting_table_compares_the_baseline_with_each_compressor():
    table = demo.accounting_table()
    for name in ("InternVL2-2B (MLP, stock tiling)", "+ RVTC length", "+ RVTC area", "+ LVTC"):
        assert name in table
    rows = [line for line in table.splitlines() if line.startswith("1024x768")]
    assert len(rows) == 5 and rows[0].rstrip().endswith("1.00x")
    # RVTC length caps 1024x768 at ceil(768/448)*ceil(1024/448) = 6 tiles (+ thumbnail)
    assert " 7 " in rows[2] and "1792" in rows[2]


def test_demo_main_runs(capsys):
    """`make demo`'s code path with the shipped model (committed, so it must be there)."""
    assert (demo.DEMO_MODEL / "model.safetensors").exists(), f"the shipped demo model is missing from {demo.DEMO_MODEL}"
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "visual-token accounting" in out and "demo finished" in out
    # the shipped model answers, with the ground truth beside it
    assert out.count("Q: ") >= 5 and out.count("ground truth") >= 5
    assert "answers match the ground truth" in out
    # every image gets its accounting against the baseline, at demo scale and at 2B size
    assert out.count("this model:") == out.count("at 2B size:") >= 5
    if importlib.util.find_spec("skimage") is not None:
        assert "astronaut" in out and "out of distribution" in out


def test_demo_without_a_model_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "DEMO_MODEL", tmp_path / "missing")
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "visual-token accounting" in out and "No trained demo model" in out and "Q: " not in out


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

    pkg = load_benchmark("package_demo_model")
    data = tmp_path / "synth-easy-mt"
    data.mkdir()
    options = {"resolution": "easy", "seed": 0, "caption_fraction": 0.15, "text_only_fraction": 0.05,
               "multi_image_fraction": 0.05, "multi_turn_fraction": 1.0, "max_follow_ups": 5}

    def write_stats():
        (data / "stats.json").write_text(json.dumps(
            {"resolution": "easy", "seed": 0, "test_fraction": 0.02, "train": {"n": 98000}, "test": {"n": 2000},
             "options": options}))

    write_stats()
    command = pkg.synth_command(data)
    # options at their defaults are left out
    assert command == (f"internvlx data synth --out {data} --n 100000 --seed 0 --test-fraction 0.02 "
                       "--resolution easy --multi-turn-fraction 1 --max-follow-ups 5")
    # per-question-type weights come back as the CLI spells them (and the command re-parses)
    options["qtype_weights"] = [1.0, 4.0, 1.0, 1.0, 0.5]
    write_stats()
    weighted = pkg.synth_command(data)
    flag = "colour=1,shape=4,count=1,position=1,text=0.5"
    assert weighted == command + f" --qtype-weights {flag}"
    from internvlx.cli import _qtype_weights

    assert list(_qtype_weights(flag)) == options.pop("qtype_weights")
    write_stats()
    # an earlier stage (from a previous model's training_stages.json) on another data set
    earlier = {"config": "configs/one.yaml", "config_text": "output_dir: runs/one", "data_command": "synth OLD",
               "steps": 3600, "batch_size": 16, "loss_first": 5.4, "loss_last": 0.9, "train_loss": 1.0,
               "samples_per_s": 17.8, "runtime_min": 54.0, "precision": "float32, one thread",
               "machine": "x86_64, 2 CPU cores"}
    cfg = tmp_path / "two.yaml"
    cfg.write_text("output_dir: runs/two\ntrain: {bf16: false, num_threads: 2}\n")
    summary = {"steps": 2400, "batch_size": 16, "train_loss": 0.7, "train_samples_per_second": 20.0,
               "log_history": [{"loss": 5.0}, {"loss": 0.6}, {"train_runtime": 600.0}]}
    stage = pkg.stage_record(cfg, summary, command)
    assert stage["loss_first"] == 5.0 and stage["loss_last"] == 0.6 and stage["runtime_min"] == 10.0
    assert stage["precision"] == "float32, 2 threads"
    evaluation = {"score": 0.5, "count": 1000, "visual_tokens": {"llm_input_mean": 4.0, "mean_per_layer": 7.0},
                  "breakdown": {"qtype": {"colour": {"count": 150, "score": 0.75}}}}
    card = pkg.model_card([earlier, stage], evaluation, 15 * 2**20, 7_000_000, InternVLXConfig.from_preset(
        "demo", tiling={"max_tiles": 1}), data, Path("runs/two"), limit=1000, package_args="--config two.yaml ")
    # each data set is generated right before the first stage that trains on it
    assert f"synth OLD\ninternvlx train configs/one.yaml\n{command}\ninternvlx train {cfg}\n" in card
    assert "--limit 1000" in card and "| colour | 150 | 0.750 |" in card and "**0.500**" in card
    assert "capped at one tile" in card and "6000 x 16" in card
    assert "loss 5.00 → 0.60 (mean 0.700), 20.0 samples/s, 10 min, float32, 2 threads" in card
    assert "output_dir: runs/one" in card and "output_dir: runs/two" in card  # every config verbatim


def test_shipped_model_records_its_stages():
    import json

    stages_file = demo.DEMO_MODEL / "training_stages.json"
    assert stages_file.exists(), "the shipped demo model must list the stages that made it"
    stages = json.loads(stages_file.read_text())
    assert len(stages) >= 2 and all(s["steps"] > 0 and s["data_command"].startswith("internvlx data synth")
                                    for s in stages)
    card = (demo.DEMO_MODEL / "README.md").read_text()
    for s in stages:  # the card shows every stage's command and config
        assert f"internvlx train {s['config']}" in card and s["config_text"] in card


def test_demo_recipe_configs_parse_and_chain():
    """configs/demo*.yaml: stage 1 starts from the preset, every later stage from the one before."""
    from pathlib import Path

    from internvlx.train import RunConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    chain = [RunConfig.from_yaml(root / name) for name in ("demo.yaml", "demo-stage2.yaml", "demo-stage3.yaml",
                                                                 "demo-stage4.yaml")]
    assert chain[0].model["init"] == "preset:demo"
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.model["init"] == f"{before.output_dir}/final"
    assert chain[2].data["meta"] == chain[3].data["meta"] == "data/synth-easy-mt/meta_train.json"
    # each stage continues at a lower peak learning rate than the one before, in a data order of its own
    assert chain[0].optim["lr"] > chain[1].optim["lr"] > chain[2].optim["lr"] > chain[3].optim["lr"]
    assert len({c.train["seed"] for c in chain}) == len(chain)
    # stages 5 and 6 continue the chain with a pretrained ViT (model.vision_init), frozen (stage 2)
    later = [RunConfig.from_yaml(root / name) for name in ("demo-stage5.yaml", "demo-stage6.yaml")]
    for before, after in zip([chain[-1], *later[:-1]], later, strict=True):
        assert after.model["init"] == f"{before.output_dir}/final" and after.model["vision_init"]
        assert str(after.stage) == "2"
    # stages 7 and 8 (shipped) continue with the ViT already in the model, on stage 6's data
    last = [RunConfig.from_yaml(root / name) for name in ("demo-stage7.yaml", "demo-stage8.yaml")]
    for before, after in zip([later[-1], last[0]], last, strict=True):
        assert after.model["init"] == f"{before.output_dir}/final" and "vision_init" not in after.model
        assert str(after.stage) == "2" and after.data["meta"] == later[-1].data["meta"]
    # stages 9 and 10 (shipped) continue likewise, on stage 6's two data sets plus a position-heavy
    # set (9) and a set with where questions (10)
    import json

    on = [RunConfig.from_yaml(root / name) for name in ("demo-stage9.yaml", "demo-stage10.yaml")]
    for before, after, added in zip([last[-1], on[0]], on, ("synth-easy-pos", "synth-easy-where"), strict=True):
        assert after.model["init"] == f"{before.output_dir}/final" and "vision_init" not in after.model
        meta = json.loads((root.parent / after.data["meta"]).read_text())
        roots = {Path(e["root"]).name for e in meta.values()}
        assert {"synth-easy-mt", "synth-easy-shape", added} <= roots and str(after.stage) == "2"
    # stage 12 (shipped) swaps in a word-heavy ViT (model.vision_init) on stage 10's data
    swap = RunConfig.from_yaml(root / "demo-stage12.yaml")
    assert swap.model["init"] == f"{on[-1].output_dir}/final" and swap.model["vision_init"]
    assert swap.data["meta"] == on[-1].data["meta"] and str(swap.stage) == "2"
    # stage 13 swaps in a longer word-heavy ViT and adds the hinted-position / text-only set
    hint = RunConfig.from_yaml(root / "demo-stage13.yaml")
    assert hint.model["init"] == f"{swap.output_dir}/final" and hint.model["vision_init"] != swap.model["vision_init"]
    roots = {Path(e["root"]).name for e in json.loads((root.parent / hint.data["meta"]).read_text()).values()}
    assert roots == {Path(e["root"]).name for e in json.loads((root.parent / swap.data["meta"]).read_text()).values()
                     } | {"synth-easy-hint"} and str(hint.stage) == "2"
    # stage 15 (shipped) continues stage 13 on its mix plus a position-only set, ViT unchanged
    pos = RunConfig.from_yaml(root / "demo-stage15.yaml")
    assert pos.model["init"] == f"{hint.output_dir}/final" and "vision_init" not in pos.model
    roots15 = {Path(e["root"]).name for e in json.loads((root.parent / pos.data["meta"]).read_text()).values()}
    assert roots15 == roots | {"synth-easy-posonly"} and str(pos.stage) == "2"
    # stage 17 continues stage 15 on its mix plus a colour-heavy set and a text-only set
    more = RunConfig.from_yaml(root / "demo-stage17.yaml")
    assert more.model["init"] == f"{pos.output_dir}/final" and "vision_init" not in more.model
    roots17 = {Path(e["root"]).name for e in json.loads((root.parent / more.data["meta"]).read_text()).values()}
    assert roots17 == roots15 | {"synth-easy-colour", "synth-easy-textonly"} and str(more.stage) == "2"
    # stage 18 continues stage 17 on the same mix, at a lower peak learning rate
    longer = RunConfig.from_yaml(root / "demo-stage18.yaml")
    assert longer.model["init"] == f"{more.output_dir}/final" and "vision_init" not in longer.model
    assert longer.data["meta"] == more.data["meta"] and str(longer.stage) == "2"
    assert longer.optim["lr"] < more.optim["lr"] and longer.optim["lr_projector"] < more.optim["lr_projector"]
    seeds = {c.train["seed"] for c in [*chain, *later, *last, *on, swap, hint, pos, more, longer]}
    assert len(seeds) == len(chain) + len(later) + len(last) + len(on) + 5


def test_recipe_puts_a_stages_vision_pretraining_before_it(tmp_path):
    """A stage with `model.vision_init` gets its `internvlx pretrain-vision` command, read back
    from the ViT directory's metrics.json, right before its `internvlx train` line."""
    import json

    pkg = load_benchmark("package_demo_model")
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "metrics.json").write_text(json.dumps({"config": {"out": str(vit), "steps": 50, "lr": 0.002}}))
    cfg = tmp_path / "five.yaml"
    cfg.write_text(f"output_dir: runs/five\nmodel: {{init: runs/four/final, vision_init: {vit}}}\n")
    summary = {"steps": 10, "log_history": []}
    stage = pkg.stage_record(cfg, summary, "synth D")
    assert stage["vision_command"] == f"internvlx pretrain-vision --out {vit} --steps 50 --lr 0.002"
    plain = pkg.stage_record(tmp_path / "five.yaml", summary, "synth D") | {"vision_command": None}
    assert pkg.recipe([plain, stage]) == (f"synth D\ninternvlx train {cfg}\n{stage['vision_command']}\n"
                                          f"internvlx train {cfg}")


def test_recipe_makes_every_data_set_and_chained_vit_once(tmp_path, monkeypatch):
    """A stage on a two-data-set meta gets both `data synth` commands; a ViT continued from an
    earlier pretrain-vision output (`--init`) gets that run's command first; nothing repeats."""
    import json

    pkg = load_benchmark("package_demo_model")
    monkeypatch.chdir(tmp_path)
    for name, seed in (("a", 0), ("b", 5)):
        d = tmp_path / "data" / name
        d.mkdir(parents=True)
        (d / "train.jsonl").write_text("")
        (d / "stats.json").write_text(json.dumps({"resolution": "easy", "seed": seed, "test_fraction": 0.02,
                                                  "train": {"n": 98}, "test": {"n": 2}, "options": {}}))
    (tmp_path / "configs").mkdir()
    meta = tmp_path / "configs" / "mix.json"
    meta.write_text(json.dumps({n: {"root": f"../data/{n}", "annotation": f"../data/{n}/train.jsonl"}
                                for n in ("a", "b")}))
    commands = pkg.data_commands(meta)
    assert commands.splitlines() == [
        f"internvlx data synth --out data/{n} --n 100 --seed {seed} --test-fraction 0.02 --resolution easy"
        for n, seed in (("a", 0), ("b", 5))]
    for name, cfg in (("vit1", {"out": "vit1", "steps": 50}), ("vit2", {"out": "vit2", "init": "vit1"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"config": cfg}))
    assert pkg.vision_commands("vit2") == ("internvlx pretrain-vision --out vit1 --steps 50\n"
                                           "internvlx pretrain-vision --out vit2 --init vit1")
    five = {"config": "five.yaml", "data_command": commands.splitlines()[0],
            "vision_command": pkg.vision_commands("vit1")}
    six = {"config": "six.yaml", "data_command": commands, "vision_command": pkg.vision_commands("vit2")}
    assert pkg.recipe([five, six]).splitlines() == [
        commands.splitlines()[0], "internvlx pretrain-vision --out vit1 --steps 50", "internvlx train five.yaml",
        commands.splitlines()[1], "internvlx pretrain-vision --out vit2 --init vit1", "internvlx train six.yaml"]
