"""Parity with the authors' code: `fixtures/official_tiny_internlm2` (see its README), converted
with the production converter."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from internvlx import InternVLXForConditionalGeneration, convert_official
from internvlx.projectors import group_regions, pixel_shuffle

FIX = Path(__file__).parent / "fixtures" / "official_tiny_internlm2"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def golden():
    return load_file(FIX / "inputs.safetensors"), load_file(FIX / "outputs.safetensors")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    dst = tmp_path_factory.mktemp("converted")
    convert_official(FIX, dst, image_token_id=153)
    return dst


def _load(path):
    return InternVLXForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


def _intermediates(model, pixel_values):
    """Every projector intermediate named in the fixture README, computed from our modules."""
    p = model.projector
    vit = model.vision_model(pixel_values=pixel_values).last_hidden_state
    n, c = vit.shape[0], p.cls_scale.shape[-1]
    patches = vit[:, 1:].reshape(n, 4, 4, -1)
    shuffled = pixel_shuffle(patches, 2)
    local_q = p.mlp1(shuffled)
    cls = p.mlp2(vit[:, 0])
    global_q = (cls[:, None, None] * p.cls_scale).reshape(-1, 1, c)
    kv3 = p.mlp3(patches)
    kv = group_regions(kv3, 2)
    return {
        "vision.embeddings": model.vision_model.embeddings(pixel_values),
        "vision.last_hidden_state": vit,
        "projector.pixel_shuffle": shuffled,
        "projector.local_query_mlp1": local_q,
        "projector.attn_local_q": local_q.reshape(-1, 1, c),
        "projector.cls_mlp2": cls,
        "projector.global_query_scaled": global_q,
        "projector.kv_mlp3": kv3,
        "projector.kv_grouped": kv,
        "projector.attn_local_out": p.attn_local[0](local_q.reshape(-1, 1, c), kv),
        "projector.attn_global_out": p.attn_global[0](global_q, kv),
        "projector.output": p(vit).reshape(n, 2, 2, c),
    }


def _check_model(model, golden, report=None):
    inputs, outputs = golden
    with torch.no_grad():
        got = _intermediates(model, inputs["pixel_values"])
        ids = inputs["input_ids"]
        embeds = model.embed_inputs(ids, inputs["pixel_values"], decoding=False)
        got["llm.inputs_embeds"] = embeds
        out = model(input_ids=ids, pixel_values=inputs["pixel_values"],
                    attention_mask=inputs["attention_mask"], output_hidden_states=True)
        got["llm.last_hidden_state"] = out.hidden_states[-1]  # transformers: after the final norm
        got["logits"] = out.logits
    for key, value in got.items():
        expected = outputs[key]
        torch.testing.assert_close(value.reshape(expected.shape), expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")
        if report is not None:
            report[key] = float((value.reshape(expected.shape) - expected).abs().max())
    with torch.no_grad():
        seq = model.generate(input_ids=ids, pixel_values=inputs["pixel_values"],
                             attention_mask=inputs["attention_mask"], max_new_tokens=8,
                             do_sample=False, eos_token_id=149, pad_token_id=2)
    assert seq[:, : ids.shape[1]].equal(ids)  # transformers' convention: prompt + new tokens
    assert seq[:, ids.shape[1]:].equal(outputs["generate.new_tokens"])


def test_every_fixture_tensor_matches(converted, golden, capsys):
    report = {}
    _check_model(_load(converted), golden, report)
    with capsys.disabled():
        print("\nmax abs diff vs official:", {k: f"{v:.1e}" for k, v in report.items()})


def test_parity_survives_save_and_reload(converted, golden, tmp_path):
    _load(converted).save_pretrained(tmp_path / "resaved")
    _check_model(_load(tmp_path / "resaved"), golden)


def test_first_generation_score_equals_last_logits(converted, golden):
    inputs, outputs = golden
    model = _load(converted)
    with torch.no_grad():
        gen = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                             max_new_tokens=8, do_sample=False, eos_token_id=149, pad_token_id=2,
                             output_scores=True, return_dict_in_generate=True)
    scores = torch.stack(gen.scores)
    torch.testing.assert_close(scores, outputs["generate.scores"], **TOL)


def test_eager_attention_also_matches(converted, golden):
    model = InternVLXForConditionalGeneration.from_pretrained(
        converted, dtype=torch.float32, attn_implementation="eager").eval()
    assert model.language_model.config._attn_implementation == "eager"
    _check_model(model, golden)
