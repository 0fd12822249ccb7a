"""Invariants of the core model: cache, batching, text-only, training, save/load, bad input."""

import pytest
import torch

from internvlx import (
    CheckpointError,
    ConfigError,
    ImageError,
    InternVLXConfig,
    InternVLXForConditionalGeneration,
    PromptError,
)
from tests.helpers import IM_END, PAD, left_pad, pixels, prompt_ids, recompute, tiny_model

GEN = dict(do_sample=False, eos_token_id=IM_END, pad_token_id=PAD)


@pytest.fixture(scope="module", params=["pvtc", "mlp"])
def model(request):
    return tiny_model(seed=1, projector={"type": request.param})


def test_generate_with_cache_equals_recompute(model):
    tpt = model.config.tokens_per_tile
    ids = torch.tensor([prompt_ids([3], tpt, seed=3)])
    pv = pixels(3, seed=3)
    with torch.no_grad():
        cached = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=12, min_new_tokens=12, **GEN)
    assert cached.equal(recompute(model, ids, pv, 12)[0])


def test_left_padded_batch_equals_samples_alone(model):
    tpt = model.config.tokens_per_tile
    a, b = prompt_ids([1], tpt, seed=4, text=9), prompt_ids([3], tpt, seed=5, text=2)
    pa, pb = pixels(1, seed=4), pixels(3, seed=5)
    ids, mask = left_pad([a, b])
    with torch.no_grad():
        batch = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pa, pb]),
                               max_new_tokens=8, min_new_tokens=8, **GEN)
        alone_a = model.generate(input_ids=torch.tensor([a]), pixel_values=pa, max_new_tokens=8, min_new_tokens=8, **GEN)
        alone_b = model.generate(input_ids=torch.tensor([b]), pixel_values=pb, max_new_tokens=8, min_new_tokens=8, **GEN)
        width = ids.shape[1]
        assert batch[0, width:].equal(alone_a[0, len(a):])
        assert batch[1, width:].equal(alone_b[0, len(b):])
        # logits of the real positions agree too
        lb = model(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pa, pb])).logits
        la = model(input_ids=torch.tensor([a]), pixel_values=pa).logits
        torch.testing.assert_close(lb[0, width - len(a):], la[0], rtol=1e-4, atol=1e-4)


def test_text_only_generation(model):
    ids = torch.tensor([prompt_ids([], 0, seed=6)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=5, min_new_tokens=5, **GEN)
    assert out.shape == (1, ids.shape[1] + 5)
    assert out[:, ids.shape[1]:].equal(recompute(model, ids, None, 5)[0][:, ids.shape[1]:])


@pytest.mark.parametrize("kind", ["pvtc", "mlp"])
def test_projector_trains(kind):
    torch.manual_seed(0)
    m = tiny_model(seed=2, projector={"type": kind, "drop_path_rate": 0.0}).train()
    for p in m.parameters():
        p.requires_grad_(False)
    for p in m.projector.parameters():
        p.requires_grad_(True)
    tpt = m.config.tokens_per_tile
    ids = torch.tensor([prompt_ids([2], tpt, seed=7), prompt_ids([2], tpt, seed=8)])
    labels = ids.clone()
    labels[:, : ids.shape[1] - 4] = -100  # loss only on the last tokens, like an answer
    pv = pixels(4, seed=7)
    opt = torch.optim.Adam(m.projector.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = m(input_ids=ids, pixel_values=pv, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in m.projector.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.25, losses
    assert m.language_model.model.embed_tokens.weight.grad is None  # frozen LLM stays untouched


def test_loss_ignores_minus_100_and_matches_manual():
    m = tiny_model(seed=3)
    tpt = m.config.tokens_per_tile
    ids = torch.tensor([prompt_ids([1], tpt, seed=9)])
    labels = ids.clone()
    labels[:, :10] = -100
    with torch.no_grad():
        out = m(input_ids=ids, pixel_values=pixels(1), labels=labels)
    logits = out.logits[0, :-1]
    target = labels[0, 1:]
    manual = torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100])
    torch.testing.assert_close(out.loss, manual)


def test_save_load_round_trip_and_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    m = tiny_model(seed=4)
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "internvlx"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, InternVLXForConditionalGeneration)
    for (k, a), (k2, b) in zip(m.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and a.equal(b), k
    ids = torch.tensor([prompt_ids([2], m.config.tokens_per_tile, seed=1)])
    with torch.no_grad():
        assert m(input_ids=ids, pixel_values=pixels(2)).logits.equal(
            loaded(input_ids=ids, pixel_values=pixels(2)).logits)


def test_sdpa_is_the_default():
    m = tiny_model()
    assert m.language_model.config._attn_implementation == "sdpa"
    assert m.vision_model.config._attn_implementation == "sdpa"


def test_qwen2_language_model():
    cfg = InternVLXConfig.from_preset(
        "tiny", text_config={"model_type": "qwen2", "vocab_size": 160, "hidden_size": 64,
                             "intermediate_size": 128, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 2,
                             "tie_word_embeddings": True})
    torch.manual_seed(0)
    m = InternVLXForConditionalGeneration(cfg).eval()
    assert type(m.language_model).__name__ == "Qwen2ForCausalLM"
    ids = torch.tensor([prompt_ids([1], cfg.tokens_per_tile, seed=2)])
    with torch.no_grad():
        out = m.generate(input_ids=ids, pixel_values=pixels(1), max_new_tokens=6, min_new_tokens=6, **GEN)
    assert out.equal(recompute(m, ids, pixels(1), 6)[0])


def test_cls_scale_interpolated_for_another_grid(tmp_path, caplog):
    m = tiny_model(seed=5)
    m.save_pretrained(tmp_path)
    bigger = InternVLXConfig.from_preset("tiny", vision_config={"image_size": 112})
    with caplog.at_level("WARNING"):
        m2 = InternVLXForConditionalGeneration.from_pretrained(tmp_path, config=bigger)
    assert m2.projector.cls_scale.shape == (1, 4, 4, 64)
    assert "interpolating" in caplog.text
    # 2x bilinear upsampling (align_corners=False) keeps the corner values
    torch.testing.assert_close(m2.projector.cls_scale[0, 0, 0], m.projector.cls_scale[0, 0, 0])
    torch.testing.assert_close(m2.projector.cls_scale[0, 3, 3], m.projector.cls_scale[0, 1, 1])
    assert m2.projector.cls_scale.mean().item() == pytest.approx(m.projector.cls_scale.mean().item(), abs=1e-5)
    with torch.no_grad():
        out = m2(input_ids=torch.tensor([prompt_ids([1], 16, seed=0)]), pixel_values=pixels(1, size=112))
    assert torch.isfinite(out.logits).all()


# ---------------------------------------------------------------- bad input


def test_slot_feature_mismatch_names_both_counts():
    m = tiny_model()
    ids = torch.tensor([prompt_ids([2], 4, seed=0)])  # 8 slots
    with pytest.raises(ValueError, match=r"8 image slots.*12 features"):
        m(input_ids=ids, pixel_values=pixels(3))
    with pytest.raises(PromptError, match="no pixel_values"):
        m(input_ids=ids)


def test_wrong_pixel_size_is_a_clear_error():
    m = tiny_model()
    ids = torch.tensor([prompt_ids([1], 4, seed=0)])
    with pytest.raises(ImageError, match=r"\[tiles, 3, 56, 56\].*\[1, 3, 64, 64\]"):
        m(input_ids=ids, pixel_values=torch.randn(1, 3, 64, 64))


def test_missing_key_in_checkpoint_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    m = tiny_model()
    m.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["projector.mlp2.1.weight"]
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing.*projector\.mlp2\.1\.weight"):
        InternVLXForConditionalGeneration.from_pretrained(tmp_path)


def test_a_path_that_is_not_a_model_directory_is_named(tmp_path):
    for path in (tmp_path / "missing", tmp_path, "runs/some-run/checkpoint-800"):
        with pytest.raises(CheckpointError, match="is not a model directory"):
            InternVLXForConditionalGeneration.from_pretrained(path)


def test_bad_configuration_is_rejected():
    with pytest.raises(ConfigError, match="projector.type"):
        InternVLXConfig.from_preset("tiny", projector={"type": "qformer"})
    with pytest.raises(ConfigError, match="downsample_ratio"):
        InternVLXConfig.from_preset("tiny", projector={"downsample_ratio": 0.3})
    with pytest.raises(ConfigError, match="unknown projector setting"):
        InternVLXConfig.from_preset("tiny", projector={"heads": 8})
    with pytest.raises(ConfigError, match="unknown preset"):
        InternVLXConfig.from_preset("internvlx-70b")


@pytest.mark.parametrize("name", ["tiny", "internvl2-2b", "internvlx-2b", "internvlx-2b-hd", "internvlx-8b", "internvlx-8b-hd"])
def test_presets_build_on_meta(name):
    cfg = InternVLXConfig.from_preset(name)
    with torch.device("meta"):
        m = InternVLXForConditionalGeneration(cfg)
    assert m.config.tokens_per_tile == (4 if name == "tiny" else 256)
    assert type(m.projector).__name__ == ("MLPProjector" if name == "internvl2-2b" else "PVTCProjector")
