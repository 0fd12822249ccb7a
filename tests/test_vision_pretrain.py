"""Vision pretraining on per-patch synthetic labels (`internvlx pretrain-vision`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from internvlx.cli import main as cli_main
from internvlx.errors import CheckpointError, ConfigError
from internvlx.modeling import InternVLXForConditionalGeneration
from internvlx.synth import COLOURS, SynthOptions, generate_sample, render_scene
from internvlx.train import build_model_and_processor
from internvlx.vision_pretrain import (
    COLOUR_CLASSES,
    IGNORE,
    MAX_INSTANCES,
    SHAPE_CLASSES,
    WORD_CLASSES,
    SceneStream,
    VisionPretrainConfig,
    _pool_instances,
    label_map,
    load_vision_into,
    patch_targets,
    pretrain_vision,
)
from tests.test_train import run_cfg

torch.set_num_threads(1)
EASY = SynthOptions(resolution="easy", seed=0)


def _scenes(n: int, options: SynthOptions = EASY):
    out, i = [], 0
    while len(out) < n:
        out += generate_sample(i, "train", options).scenes
        i += 1
    return out[:n]


def _text_scene():
    i = 0
    while True:
        for scene in generate_sample(i, "train", EASY).scenes:
            if scene.text is not None:
                return scene
        i += 1


def test_label_map_marks_exactly_the_drawn_pixels():
    """Every object label sits on pixels of that object's colour, and every pixel the renderer
    coloured (not background) outside the word is labelled."""
    for scene in _scenes(40):
        labels = np.asarray(label_map(scene))
        image = np.asarray(render_scene(scene)).astype(int)
        assert set(np.unique(labels)) <= {0, 255, *range(1, len(scene.objects) + 1)}
        for k, obj in enumerate(scene.objects):
            pixels = image[labels == k + 1]
            assert len(pixels) > 0.3 * obj.size**2
            assert (pixels == np.asarray(COLOURS[obj.colour])).all(), obj
        background = np.asarray(scene.background.colour)
        unlabelled = image[labels == 0]
        if scene.text is None:
            assert (unlabelled == background).all()


def test_word_ink_is_labelled_and_has_the_word_colour():
    scene = _text_scene()
    labels = np.asarray(label_map(scene))
    image = np.asarray(render_scene(scene)).astype(int)
    ink = image[labels == 255]
    assert len(ink) > 20
    # antialiased text: the thresholded ink is at least half-way to the word's colour
    target, bg = np.asarray(COLOURS[scene.text.colour]), np.asarray(scene.background.colour)
    assert (np.abs(ink - target).sum(1) <= np.abs(bg - target).sum() / 2 + 1).mean() > 0.9


def test_patch_targets_name_the_covering_object():
    tile, patch = 112, 14
    for scene in _scenes(30):
        t = patch_targets(scene, tile, patch)
        assert t.shape == (4, (tile // patch) ** 2) and t.dtype == torch.long
        shape, colour, word, inst = t
        assert ((shape == 0) == (inst == 0)).all() and ((shape == 0) == (colour == 0)).all()
        for k, obj in enumerate(scene.objects):
            mine = inst == k + 1
            if mine.any():
                assert (shape[mine] == SHAPE_CLASSES.index(obj.shape)).all()
                assert (colour[mine] == COLOUR_CLASSES.index(obj.colour)).all()
                assert (word[mine] == IGNORE).all()
            # the patch holding the object's centre (canvas -> tile) belongs to it
            cx, cy = obj.centre
            px, py = int(cx * tile / scene.width) // patch, int(cy * tile / scene.height) // patch
            assert inst[py * (tile // patch) + px] == k + 1
    scene = _text_scene()
    t = patch_targets(scene, tile, patch)
    on_text = t[0] == SHAPE_CLASSES.index("text")
    assert on_text.any()
    assert (t[2, on_text] == WORD_CLASSES.index(scene.text.word)).all()
    assert (t[3, on_text] == len(scene.objects) + 1).all()
    assert (t[2, ~on_text] == IGNORE).all()


def test_patch_targets_reject_a_tile_that_is_not_whole_patches():
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        patch_targets(_scenes(1)[0], 112, 15)


def test_pool_instances_averages_each_instance_and_reads_its_targets():
    targets = torch.zeros((1, 4, 4), dtype=torch.long)
    targets[0, 2] = IGNORE
    targets[0, :, 1] = torch.tensor([3, 2, IGNORE, 1])  # object 0 on patches 1 and 2
    targets[0, :, 2] = torch.tensor([3, 2, IGNORE, 1])
    targets[0, :, 3] = torch.tensor([1, 4, 7, 2])  # the word on patch 3
    tokens = torch.arange(4.0).view(1, 4, 1).repeat(1, 1, 2)
    pooled, shape, word = _pool_instances(tokens, targets)
    assert pooled.shape == (1, MAX_INSTANCES - 1, 2)
    assert pooled[0, 0].tolist() == [1.5, 1.5] and pooled[0, 1].tolist() == [3.0, 3.0]
    assert shape[0, :3].tolist() == [3, 1, IGNORE] and word[0, :3].tolist() == [IGNORE, 7, IGNORE]


def test_scene_stream_is_deterministic_and_matches_the_processor():
    a = SceneStream("train", EASY, 112, 14, 0.1).batch(5)
    b = SceneStream("train", EASY, 112, 14, 0.1).batch(5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (5, 3, 112, 112) and a[1].shape == (5, 4, 64)
    held = SceneStream("test", EASY, 112, 14, 0.1).batch(5)
    assert not torch.equal(held[0], a[0])


def test_config_validation():
    with pytest.raises(ConfigError, match="steps"):
        VisionPretrainConfig(out="x", steps=0).validate()
    with pytest.raises(ConfigError):
        VisionPretrainConfig(out="x", lr=0.0).validate()
    with pytest.raises(ConfigError):
        VisionPretrainConfig(out="x", resolution="tiny").validate()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit")
    metrics = pretrain_vision(VisionPretrainConfig(out=str(out), preset="tiny", steps=80, batch_size=16,
                                                   lr=3e-3, warmup_steps=5, eval_every=40, eval_images=64),
                              progress=False)
    return out, metrics


def test_pretraining_learns_colour_and_writes_its_files(pretrained):
    out, metrics = pretrained
    assert {p.name for p in out.iterdir()} >= {"vision.safetensors", "vision_config.json", "heads.safetensors", "metrics.json"}
    saved = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in saved["history"]] == [0, 40, 80]
    first, last = saved["history"][0], saved["history"][-1]
    assert last["colour_on_objects"] > first["colour_on_objects"] + 0.2  # colour is local: learnt at once
    assert last["foreground"] > 0.8
    assert metrics["final"] == last


def test_vision_init_loads_the_pretrained_vit_into_a_training_run(pretrained, tmp_path):
    from internvlx.synth import generate_synthetic

    out, _ = pretrained
    generate_synthetic(tmp_path / "d", 8, progress=False)
    cfg = run_cfg(tmp_path, tmp_path / "d" / "meta_train.json")
    cfg.model["vision_init"] = str(out)
    model, _ = build_model_and_processor(cfg, texts_for_tokenizer=["a b c"] * 4)
    from safetensors.torch import load_file

    saved = load_file(str(out / "vision.safetensors"))
    for k, v in model.vision_model.state_dict().items():
        assert torch.equal(v.float(), saved[k]), k
    cfg.model.pop("vision_init")
    fresh, _ = build_model_and_processor(cfg, texts_for_tokenizer=["a b c"] * 4)
    assert not torch.equal(fresh.vision_model.embeddings.patch_embeddings.projection.weight.float(),
                           saved["embeddings.patch_embeddings.projection.weight"])


def test_vision_init_errors_say_what_is_wrong(pretrained, tmp_path):
    out, _ = pretrained
    from internvlx import InternVLXConfig

    other = InternVLXForConditionalGeneration(InternVLXConfig.from_preset("tiny", vision_config={"hidden_size": 32}))
    with pytest.raises(ConfigError, match="different ViT"):
        load_vision_into(other.vision_model, out)
    with pytest.raises(CheckpointError, match="is missing"):
        load_vision_into(other.vision_model, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "vision_config.json").write_text((out / "vision_config.json").read_text())
    (broken / "vision.safetensors").write_bytes((out / "vision.safetensors").read_bytes()[:100])
    tiny = InternVLXForConditionalGeneration(InternVLXConfig.from_preset("tiny"))
    before = tiny.vision_model.state_dict()["embeddings.cls_token"].clone()
    with pytest.raises(CheckpointError, match="cannot read"):
        load_vision_into(tiny.vision_model, broken)
    assert torch.equal(tiny.vision_model.state_dict()["embeddings.cls_token"], before)  # nothing half-loaded


def test_cli_pretrain_vision(tmp_path, capsys):
    out = tmp_path / "vit"
    assert cli_main(["pretrain-vision", "--preset", "tiny", "--out", str(out), "--steps", "2", "--batch-size", "2",
                     "--warmup-steps", "1", "--eval-every", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "step      2: shape" in text and f"model.vision_init: {out}" in text
    assert (out / "vision.safetensors").is_file()


def test_pretrain_command_spells_the_run_back(pretrained, tmp_path):
    """The command written into the model card, run through the CLI, trains with the same config."""
    import shlex

    from internvlx.vision_pretrain import pretrain_command

    out, _ = pretrained
    command = pretrain_command(out)
    assert command.startswith(f"internvlx pretrain-vision --out {out} --preset tiny --steps 80 --batch-size 16 --lr 0.003")
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    argv[argv.index("--steps") + 1] = "1"  # the same flags, one step: the recorded config must match
    assert cli_main([*argv, "--no-progress"]) == 0
    first = json.loads((out / "metrics.json").read_text())["config"]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["config"]
    assert {**first, "out": "", "steps": 0} == {**again, "out": "", "steps": 0}
    with pytest.raises(CheckpointError, match="metrics.json is missing"):
        pretrain_command(tmp_path)


def test_init_continues_a_models_own_vit(tmp_path):
    from safetensors.torch import load_file

    from tests.helpers import build_chat_model_dir

    model_dir = build_chat_model_dir(tmp_path / "m", seed=2)
    own = InternVLXForConditionalGeneration.from_pretrained(model_dir).vision_model.state_dict()
    out = tmp_path / "vit"
    pretrain_vision(VisionPretrainConfig(out=str(out), init=str(model_dir), steps=1, batch_size=2, lr=1e-12,
                                         warmup_steps=0, eval_images=4), progress=False)
    saved = load_file(str(out / "vision.safetensors"))
    assert set(saved) == set(own)
    for k, v in own.items():  # one step at lr 1e-12: the model's own weights, not a fresh init
        assert torch.allclose(saved[k], v.float(), atol=1e-6), k
    with pytest.raises(ConfigError, match="neither a model directory"):
        pretrain_vision(VisionPretrainConfig(out=str(tmp_path / "x"), init=str(tmp_path), steps=1), progress=False)


def test_every_config_field_has_its_cli_flag():
    from dataclasses import fields

    from internvlx.vision_pretrain import FLAGS

    assert set(FLAGS) == {f.name for f in fields(VisionPretrainConfig)} - {"out"}


def test_init_continues_an_earlier_pretraining_with_its_heads(pretrained, tmp_path):
    from safetensors.torch import load_file

    out, metrics = pretrained
    again = tmp_path / "again"
    cont = pretrain_vision(VisionPretrainConfig(out=str(again), preset="tiny", init=str(out), steps=1, batch_size=2,
                                                lr=1e-12, warmup_steps=0, eval_images=64), progress=False)
    # the same held-out scenes as the first run's last evaluation, scored by its ViT *and* heads
    # (fresh heads would score the shape and colour classes at chance)
    assert cont["history"][0]["colour_on_objects"] == pytest.approx(metrics["final"]["colour_on_objects"], abs=1e-6)
    for name in ("vision.safetensors", "heads.safetensors"):
        before, after = load_file(str(out / name)), load_file(str(again / name))
        assert set(before) == set(after)
        for k, v in before.items():
            assert torch.allclose(after[k], v, atol=1e-6), (name, k)
    (tmp_path / "headless").mkdir()
    for name in ("vision.safetensors", "vision_config.json"):
        (tmp_path / "headless" / name).write_bytes((out / name).read_bytes())
    with pytest.raises(CheckpointError, match="heads.safetensors is missing"):
        pretrain_vision(VisionPretrainConfig(out=str(tmp_path / "y"), preset="tiny", init=str(tmp_path / "headless"),
                                             steps=1), progress=False)
    with pytest.raises(ConfigError, match="different ViT"):  # the demo preset's ViT is not the tiny one's
        pretrain_vision(VisionPretrainConfig(out=str(tmp_path / "z"), preset="demo", init=str(out), steps=1),
                        progress=False)


def test_qtype_weights_shape_the_training_scenes_not_the_held_out_ones(tmp_path):
    import shlex

    from internvlx.vision_pretrain import pretrain_command

    cfg = VisionPretrainConfig(out="x", qtype_weights=[0, 0, 0, 0, 1]).validate()
    assert cfg.synth_options().qtype_weights == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert cfg.synth_options(held_out=True).qtype_weights is None

    def with_text(options, n=60):
        stream = SceneStream("train", options, 112, 14, 0.1)
        return sum(stream.next_scene().text is not None for _ in range(n))

    assert with_text(cfg.synth_options()) > 2 * with_text(cfg.synth_options(held_out=True))
    with pytest.raises(ConfigError, match="qtype_weights"):
        VisionPretrainConfig(out="x", qtype_weights=[1, 1]).validate()
    out = tmp_path / "vit"
    assert cli_main(["pretrain-vision", "--preset", "tiny", "--out", str(out), "--steps", "1", "--batch-size", "2",
                     "--warmup-steps", "0", "--eval-images", "4", "--qtype-weights", "text=4", "--no-progress"]) == 0
    command = pretrain_command(out)
    assert "--qtype-weights colour=1,shape=1,count=1,position=1,text=4" in command
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert cli_main([*argv, "--no-progress"]) == 0
    first = json.loads((out / "metrics.json").read_text())["config"]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["config"]
    assert {**first, "out": ""} == {**again, "out": ""} and first["qtype_weights"] == [1, 1, 1, 1, 4]
