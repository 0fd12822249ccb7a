"""LVTC: identities, cache/batch invariants, accounting vs what the layers saw, training."""

import pytest
import torch

from internvlx import ConfigError, InternVLXConfig, InternVLXForConditionalGeneration
from internvlx.accounting import layer_token_counts
from internvlx.lvtc import LVTCCache
from tests.helpers import IM_END, PAD, left_pad, pixels, prompt_ids, recompute, tiny_model

GEN = dict(do_sample=False, eos_token_id=IM_END, pad_token_id=PAD)
STEPS = 16


def lvtc_model(seed=1, projector="pvtc", **lvtc):
    base = tiny_model(seed=seed, projector={"type": projector})
    model = tiny_model(seed=seed, projector={"type": projector}, lvtc={"enabled": True, **lvtc})
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("lvtc.") for k in missing)
    with torch.no_grad():
        model.lvtc.gate.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))  # a non-trivial gate
    return base, model


def test_disabled_is_bit_identical_to_plain():
    base = tiny_model(seed=3)
    assert base.lvtc is None and not any(k.startswith("lvtc") for k in base.state_dict())
    ids, pv = torch.tensor([prompt_ids([3], 4, seed=1)]), pixels(3, seed=1)
    with torch.no_grad():
        ref_logits = base(input_ids=ids, pixel_values=pv).logits
        ref_tokens = base.generate(input_ids=ids, pixel_values=pv, max_new_tokens=8, min_new_tokens=8, **GEN)
        base.configure_lvtc(True)
        assert base.lvtc is not None
        base.configure_lvtc(False)
        assert base(input_ids=ids, pixel_values=pv).logits.equal(ref_logits)
        assert base.generate(input_ids=ids, pixel_values=pv, max_new_tokens=8, min_new_tokens=8, **GEN).equal(ref_tokens)


def test_stride_one_nearest_no_residual_is_the_plain_model():
    base, model = lvtc_model(stride=1, upsample="nearest", residual="none")
    ids, pv = torch.tensor([prompt_ids([3, 1], 4, seed=2)]), pixels(4, seed=2)
    with torch.no_grad():
        assert model(input_ids=ids, pixel_values=pv).logits.equal(base(input_ids=ids, pixel_values=pv).logits)
        a = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=8, min_new_tokens=8, **GEN)
        b = base.generate(input_ids=ids, pixel_values=pv, max_new_tokens=8, min_new_tokens=8, **GEN)
    assert a.equal(b)


@pytest.mark.parametrize("projector,pool,upsample", [
    ("pvtc", "avg", "bilinear"), ("mlp", "pixel_shuffle_linear", "nearest")])
def test_cached_generation_equals_recompute(projector, pool, upsample):
    _, model = lvtc_model(projector=projector, pool=pool, upsample=upsample)
    ids, pv = torch.tensor([prompt_ids([2, 1], 1, seed=4)]), pixels(3, seed=4)
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=STEPS, min_new_tokens=STEPS,
                             output_logits=True, return_dict_in_generate=True, **GEN)
    assert isinstance(out.past_key_values if hasattr(out, "past_key_values") else out.cache, LVTCCache)
    seq, scores = recompute(model, ids, pv, STEPS)
    assert out.sequences.equal(seq)
    torch.testing.assert_close(torch.stack(out.logits), scores, rtol=1e-4, atol=1e-4)


def test_left_padded_batch_equals_samples_alone():
    _, model = lvtc_model(seed=5)
    # sample a: 2 tiles + thumbnail (3); sample b: one tile; different text lengths too
    a, b = prompt_ids([3], 1, seed=6, text=2), prompt_ids([1], 1, seed=7, text=11)
    pa, pb = pixels(3, seed=6), pixels(1, seed=7)
    ids, mask = left_pad([a, b])
    with torch.no_grad():
        batch = model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pa, pb]),
                               max_new_tokens=10, min_new_tokens=10, **GEN)
        alone_a = model.generate(input_ids=torch.tensor([a]), pixel_values=pa, max_new_tokens=10, min_new_tokens=10, **GEN)
        alone_b = model.generate(input_ids=torch.tensor([b]), pixel_values=pb, max_new_tokens=10, min_new_tokens=10, **GEN)
        w = ids.shape[1]
        assert batch[0, w:].equal(alone_a[0, len(a):])
        assert batch[1, w:].equal(alone_b[0, len(b):])
        lb = model(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pa, pb])).logits
        lbb = model(input_ids=torch.tensor([b]), pixel_values=pb).logits
    torch.testing.assert_close(lb[1, w - len(b):], lbb[0], rtol=1e-4, atol=1e-4)
    # the batch also matches recomputation without a cache
    seq, _ = recompute(model, ids, torch.cat([pa, pb]), 10, mask=mask)
    assert batch.equal(seq)


def test_reported_token_counts_equal_what_layers_saw():
    _, model = lvtc_model(seed=8)
    tiles = [3, 1]
    ids = torch.tensor([prompt_ids(tiles, 1, seed=8)])
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
             for layer in model.language_model.model.layers]
    with torch.no_grad():
        model(input_ids=ids, pixel_values=pixels(4, seed=8))
    for h in hooks:
        h.remove()
    text = ids.shape[1] - sum(tiles) * 1
    assert seen == layer_token_counts(model.config, tiles, text)
    # 4 tiles: 4 compressed tokens in layers 0..2, 16 full-resolution tokens in layer 3
    assert seen == [text + 4] * 3 + [text + 16]


def test_training_reduces_loss_and_gate_learns():
    torch.manual_seed(0)
    _, model = lvtc_model(seed=9)
    model.train()
    ids = torch.tensor([prompt_ids([2], 1, seed=9), prompt_ids([2], 1, seed=10)])
    labels = ids.clone()
    labels[:, :-4] = -100
    pv = pixels(4, seed=9)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(6):
        loss = model(input_ids=ids, pixel_values=pv, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert model.lvtc.gate.grad is not None and model.lvtc.gate.grad.abs().sum() > 0
            assert model.projector.cls_scale.grad.abs().sum() > 0  # through compression + expansion
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


def test_gradient_checkpointing_gives_the_same_gradients():
    _, model = lvtc_model(seed=11, pool="pixel_shuffle_linear")
    model.train()
    model.config.projector.drop_path_rate = 0.0
    for block in list(model.projector.attn_local) + list(model.projector.attn_global):
        block.drop_path_rate = 0.0
    ids = torch.tensor([prompt_ids([2], 1, seed=11)])
    pv = pixels(2, seed=11)

    def grads():
        model.zero_grad()
        model(input_ids=ids, pixel_values=pv, labels=ids).loss.backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    calls = []
    mlp = model.language_model.model.layers[0].mlp
    mlp_forward = mlp.forward
    mlp.forward = lambda *a, **k: calls.append(1) or mlp_forward(*a, **k)  # counts recomputes too
    plain = grads()
    assert len(calls) == 1
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ckpt = grads()
    assert len(calls) == 3  # the checkpointed layer ran again during backward
    assert plain.keys() == ckpt.keys() and "lvtc.pool_proj.weight" in plain
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6)


def test_pixel_shuffle_linear_starts_as_average_pooling():
    _, avg = lvtc_model(seed=12, pool="avg")
    _, learned = lvtc_model(seed=12, pool="pixel_shuffle_linear")
    feats = torch.randn(3, 4, 64)
    torch.testing.assert_close(learned.lvtc.compress(feats), avg.lvtc.compress(feats))


def test_training_free_switch_on_from_a_plain_checkpoint(tmp_path):
    base = tiny_model(seed=13)
    base.save_pretrained(tmp_path)
    model = InternVLXForConditionalGeneration.from_pretrained(tmp_path, lvtc={"enabled": True}).eval()
    assert model.config.lvtc.enabled and model.lvtc is not None
    assert model.lvtc.gate.abs().sum() == 0  # documented init: gate 0
    ids = torch.tensor([prompt_ids([1], 1, seed=13)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=pixels(1), max_new_tokens=4, min_new_tokens=4, **GEN)
    assert out.shape[1] == ids.shape[1] + 4
    # saving keeps LVTC and its parameters
    model.save_pretrained(tmp_path / "with_lvtc")
    again = InternVLXForConditionalGeneration.from_pretrained(tmp_path / "with_lvtc")
    assert again.config.lvtc.enabled and "lvtc.gate" in dict(again.named_parameters())


def test_sampling_and_eos():
    _, model = lvtc_model(seed=14)
    ids, pv = torch.tensor([prompt_ids([1], 1, seed=14)]), pixels(1)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=pv, do_sample=True, top_p=0.9, temperature=0.8,
                             max_new_tokens=6, pad_token_id=PAD)
        greedy = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=6, do_sample=False, pad_token_id=PAD)
        first = int(greedy[0, ids.shape[1]])
        stopped = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=6, do_sample=False,
                                 eos_token_id=first, pad_token_id=PAD)
    assert out.shape[1] <= ids.shape[1] + 6
    assert stopped.shape[1] == ids.shape[1] + 1  # stopped at the eos


def test_qwen2_decoder_with_lvtc():
    cfg = InternVLXConfig.from_preset(
        "tiny", lvtc={"enabled": True, "expand_layer": 1},
        text_config={"model_type": "qwen2", "vocab_size": 160, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2})
    torch.manual_seed(0)
    model = InternVLXForConditionalGeneration(cfg).eval()
    ids, pv = torch.tensor([prompt_ids([2], 1, seed=15)]), pixels(2, seed=15)
    with torch.no_grad():
        out = model.generate(input_ids=ids, pixel_values=pv, max_new_tokens=8, min_new_tokens=8, **GEN)
    assert out.equal(recompute(model, ids, pv, 8)[0])


@pytest.mark.parametrize("lvtc,match", [
    ({"expand_layer": 0}, r"expand_layer must lie in 1\.\.3"),
    ({"expand_layer": 4}, r"expand_layer must lie in 1\.\.3"),
    ({"stride": 3}, "does not divide"),
    ({"pool": "max"}, "lvtc.pool"),
    ({"upsample": "cubic"}, "lvtc.upsample"),
])
def test_bad_configuration_fails_at_construction(lvtc, match):
    with pytest.raises(ConfigError, match=match):
        InternVLXConfig.from_preset("tiny", lvtc={"enabled": True, **lvtc})


def test_slot_count_not_matching_compression_is_an_error():
    _, model = lvtc_model()
    ids = torch.tensor([prompt_ids([1], 4, seed=0)])  # full-resolution slots: 4 per tile
    with pytest.raises(ValueError, match="4 image slots.*1 features"):
        model(input_ids=ids, pixel_values=pixels(1))
