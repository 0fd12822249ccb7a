"""Our InternVL2 baseline vs transformers' own InternVL on identical weights."""

import pytest
import torch

from internvlx import ConfigError
from internvlx.hf_interop import from_transformers_internvl, to_transformers_internvl
from tests.helpers import IM_END, PAD, left_pad, pixels, prompt_ids, tiny_model


@pytest.fixture(scope="module")
def pair():
    ours = tiny_model(seed=21, projector={"type": "mlp"})
    return ours, to_transformers_internvl(ours)


def test_same_logits_and_tokens_as_transformers_internvl(pair):
    ours, hf = pair
    a, b = prompt_ids([3], 4, seed=1, text=3), prompt_ids([1], 4, seed=2, text=8)
    ids, mask = left_pad([a, b])
    pv = torch.cat([pixels(3, seed=1), pixels(1, seed=2)])
    with torch.no_grad():
        torch.testing.assert_close(
            ours(input_ids=ids, attention_mask=mask, pixel_values=pv).logits,
            hf(input_ids=ids, attention_mask=mask, pixel_values=pv).logits, rtol=1e-5, atol=1e-5)
        gen = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, eos_token_id=IM_END, pad_token_id=PAD)
        assert ours.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, **gen).equal(
            hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, **gen))


def test_hf_checkpoint_loads_as_our_baseline(pair, tmp_path):
    ours, hf = pair
    hf.save_pretrained(tmp_path)
    back = from_transformers_internvl(tmp_path)
    for k, v in ours.state_dict().items():
        assert back.state_dict()[k].equal(v), k


def test_pvtc_and_lvtc_have_no_transformers_counterpart():
    with pytest.raises(ConfigError, match="PVTC"):
        to_transformers_internvl(tiny_model())
    with pytest.raises(ConfigError, match="LVTC"):
        to_transformers_internvl(tiny_model(projector={"type": "mlp"}, lvtc={"enabled": True}))
