"""benchmarks/shape_probe.py: the probe scenes carry the labels they claim, and both probes
learn what is learnable (so a near-chance shape result is the features', not the probe's)."""


import numpy as np
import pytest
import torch
from transformers import AutoModel, InternVLVisionConfig

from internvlx.synth import COLOURS, EASY_BACKGROUND
from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def probe():
    return load_benchmark("shape_probe")


def test_scenes_hold_one_object_of_the_labelled_colour(probe):
    images, shapes, colours = probe.single_object_scenes(24, seed=3)
    names = list(COLOURS)
    assert len(images) == len(shapes) == len(colours) == 24
    assert len(set(shapes.tolist())) > 2 and len(set(colours.tolist())) > 2  # labels vary
    for image, c in zip(images, colours.tolist(), strict=True):
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        drawn = pixels[(pixels != EASY_BACKGROUND).any(1)]
        values, counts = np.unique(drawn, axis=0, return_counts=True)
        assert tuple(values[counts.argmax()]) == COLOURS[names[c]]


def test_same_seed_same_scenes(probe):
    a, sa, ca = probe.single_object_scenes(4, seed=1)
    b, sb, cb = probe.single_object_scenes(4, seed=1)
    assert torch.equal(sa, sb) and torch.equal(ca, cb)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))


def test_linear_probe_separates_separable_classes_and_not_noise(probe):
    torch.manual_seed(0)
    y = torch.randint(0, 3, (400,))
    x = torch.randn(400, 20)
    x[:, 0] += 4 * y  # class in one feature
    assert probe.linear_probe(x[:300], y[:300], x[300:], y[300:], 3) > 0.9
    noise = torch.randn(400, 20)
    assert probe.linear_probe(noise[:300], y[:300], noise[300:], y[300:], 3) < 0.6


def test_direct_supervision_learns_a_learnable_label(probe):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=[28, 28], patch_size=[14, 14])
    vision = AutoModel.from_config(config)
    labels = torch.randint(0, 2, (160,))
    pixels = torch.randn(160, 3, 28, 28) * 0.1 + (2 * labels.float() - 1).view(-1, 1, 1, 1)  # bright vs dark
    curve = probe.supervise(vision, pixels, labels, n_train=120, steps=40, batch=16, every=20)
    assert [s for s, _ in curve] == [0, 20, 40]
    assert curve[-1][1] > 0.9


def test_fresh_overrides_parse_integers_and_reject_the_rest(probe):
    assert probe.parse_overrides("hidden_size=256,image_size=224") == {"hidden_size": 256, "image_size": 224}
    for bad in ("hidden_size", "hidden_size=wide", "=3", "hidden_size=1.5"):
        with pytest.raises(SystemExit, match="KEY=INTEGER"):
            probe.parse_overrides(bad)


def test_features_flatten_patch_tokens_and_projector_tokens(probe):
    torch.manual_seed(0)
    config = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=[28, 28], patch_size=[14, 14])
    vision = AutoModel.from_config(config).eval()
    pixels = torch.randn(5, 3, 28, 28)
    vit, proj = probe.features(vision, pixels, batch=2)  # batches of 2, 2, 1
    assert proj is None and vit.shape == (5, 4 * 32)  # 2x2 patches, CLS dropped
    with torch.no_grad():
        whole = vision(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(vit, whole[:, 1:].flatten(1), rtol=1e-5, atol=1e-5)
    vit2, proj = probe.features(vision, pixels, projector=torch.nn.Linear(32, 8), batch=3)
    assert proj.shape == (5, 5 * 8)
    torch.testing.assert_close(vit, vit2, rtol=1e-5, atol=1e-5)


def test_answer_states_are_the_last_prompt_position_of_every_layer(probe, tmp_path):
    from internvlx import InternVLXForConditionalGeneration, InternVLXProcessor
    from tests.helpers import build_chat_model_dir

    torch.set_num_threads(1)
    model_dir = build_chat_model_dir(tmp_path / "m", seed=1)
    model = InternVLXForConditionalGeneration.from_pretrained(model_dir).float().eval()
    processor = InternVLXProcessor.from_pretrained(model_dir)
    images, _, colours = probe.single_object_scenes(3, seed=2)
    questions = probe.shape_questions(colours)
    assert questions[0] == f"What shape is the {list(COLOURS)[int(colours[0])]} object?"
    states, logits = probe.answer_states(model, processor, images, questions, batch=2)
    layers, hidden = model.config.text_config.num_hidden_layers, model.config.text_config.hidden_size
    assert states.shape == (3, layers + 1, hidden)
    assert logits.shape == (3, model.config.text_config.vocab_size)
    # one conversation alone gives the same states as inside a left-padded batch
    alone, alone_logits = probe.answer_states(model, processor, images[2:], questions[2:])
    assert torch.allclose(alone[0], states[2], atol=1e-4)
    assert torch.allclose(alone_logits[0], logits[2], atol=1e-4)
    assert not torch.allclose(states[0, -1], states[0, 0])


def test_position_scenes_label_the_asked_relation(probe):
    """Each scene's label is its answer to its question, and the halves are those of the pair's
    centres: checked against the synth builder replayed with the same seed."""
    images, questions, labels, axes, halves = probe.position_scenes(40, seed=4)
    assert len(images) == len(questions) == len(labels) == len(axes) == len(halves) == 40
    assert halves.shape == (40, 2)
    assert set(axes) == {"x", "y"} and set(labels.tolist()) == {0, 1}
    same = halves[:, 0] == halves[:, 1]
    assert same.any() and (~same).any()  # both cases occur
    rng = np.random.default_rng(4)
    from internvlx.synth import _build_position
    for k in range(40):
        scene, qa = _build_position(rng, "easy")
        assert qa.question == questions[k] and probe.AXIS_ANSWERS[axes[k]][labels[k]] == qa.answer
        a, b = scene.objects[qa.params["a"]], scene.objects[qa.params["b"]]
        key, extent = ("x", scene.width) if axes[k] == "x" else ("y", scene.height)
        for obj, half in zip((a, b), halves[k].tolist(), strict=True):
            centre = getattr(obj, key) + obj.size / 2
            assert half == (centre >= extent / 2)
        # a clear relation between different halves can only go one way
        if halves[k, 0] != halves[k, 1]:
            assert labels[k] == halves[k, 0]


def test_forced_choice_picks_the_higher_scored_first_token(probe):
    class Tok:
        ids = {"left": [3, 9], "right": [5], "above": [7], "below": [8, 1]}

        def encode(self, word, add_special_tokens=False):
            return self.ids[word]

    logits = torch.zeros(4, 10)
    logits[0, 3] = 1.0  # left > right
    logits[1, 5] = 1.0  # right > left
    logits[2, 7] = 1.0  # above > below
    logits[3, 8] = 1.0  # below > above
    assert probe.forced_choice(logits, Tok(), ["x", "x", "y", "y"]).tolist() == [0, 1, 0, 1]
    Tok.ids["right"] = [3]
    with pytest.raises(SystemExit, match="same token"):
        probe.forced_choice(logits, Tok(), ["x"])


def test_trained_projector_probe_learns_what_the_vit_states_carry(probe):
    """The projector probe fits a projector + head to a label hidden in the ViT states, and
    stays near chance on a label the states do not carry."""
    from internvlx.configuration import InternVLXConfig
    from internvlx.projectors import build_projector

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = InternVLXConfig.from_preset("tiny")
    side = config.token_grid * config.projector.region
    cv = config.vision_config.hidden_size
    labels = torch.randint(0, 3, (600,))
    hidden = torch.randn(600, 1 + side * side, cv)
    hidden[:, 1:, 0] += 5 * labels.float().view(-1, 1)  # the label in one channel of every patch
    for kind in ("pvtc", "mlp"):
        config.projector.type = kind
        acc = probe.train_projector_probe(build_projector(config), hidden, labels, n_train=480, steps=100, batch=32)
        assert acc > 0.9, kind
    noise = torch.randn(600, 1 + side * side, cv)
    assert probe.train_projector_probe(build_projector(config), noise, labels, n_train=480, steps=60, batch=32) < 0.6


def test_main_prints_every_requested_table(probe, tmp_path, capsys):
    """End to end on a tiny model: the frozen-feature probes, the per-layer LLM probe and the
    trained projector probes each print their table, from one pass of the ViT."""
    from tests.helpers import build_chat_model_dir

    torch.set_num_threads(1)
    model_dir = build_chat_model_dir(tmp_path / "m", seed=0)
    probe.main(["--model", str(model_dir), "--train", "24", "--test", "8", "--steps", "0", "--llm",
                "--projector-steps", "2", "--position", "--threads", "1"])
    out = capsys.readouterr().out
    assert "| left / right: the answer | " in out and "| above / below: first object's half | " in out
    assert "pair in the same half" in out
    assert "| projector tokens (what the LLM reads) |" in out
    assert "| shape | " in out and "| layer | 0 |" in out
    for name in ("the model's projector", "fresh pvtc projector", "fresh mlp projector"):
        assert f"| {name}" in out, name
    with pytest.raises(SystemExit, match="not a model directory"):
        probe.main(["--model", str(tmp_path)])
