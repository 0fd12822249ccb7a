"""Checkpoint conversion: official layouts ↔ ours, manifests of the full-size models, errors."""

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from internvlx import (
    CheckpointError,
    ConfigError,
    InternVLXConfig,
    InternVLXForConditionalGeneration,
    convert_official,
    convert_to_official,
)
from internvlx.cli import main as cli
from internvlx.convert import (
    check_state_dict,
    expected_shapes,
    official_to_ours,
    read_safetensors_dir,
)
from tests.helpers import pixels, prompt_ids, tiny_model

FIX = Path(__file__).parent / "fixtures"
OFFICIAL_TINY = FIX / "official_tiny_internlm2"


def _same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].equal(b[k]), k


def test_official_round_trip_is_lossless(tmp_path):
    ours, back = tmp_path / "ours", tmp_path / "official"
    convert_official(OFFICIAL_TINY, ours, image_token_id=153)
    convert_to_official(ours, back)
    _same_tensors(load_file(OFFICIAL_TINY / "model.safetensors"), read_safetensors_dir(back)[0])
    cfg = json.loads((back / "config.json").read_text())
    assert cfg["llm_config"]["model_type"] == "internlm2"
    assert cfg["llm_config"]["rope_scaling"] == {"type": "dynamic", "factor": 2.0}
    # and the written official directory converts back to the same model
    again = tmp_path / "again"
    convert_official(back, again, image_token_id=153)
    _same_tensors(read_safetensors_dir(ours)[0], read_safetensors_dir(again)[0])


@pytest.mark.parametrize("projector", ["mlp", "pvtc"])
@pytest.mark.parametrize("llm_type", ["internlm2", "llama"])
def test_our_models_survive_to_official_and_back(tmp_path, projector, llm_type):
    m = tiny_model(seed=11, projector={"type": projector})
    m.save_pretrained(tmp_path / "ours")
    convert_to_official(tmp_path / "ours", tmp_path / "official", llm_type=llm_type)
    keys = read_safetensors_dir(tmp_path / "official")[0]
    assert any(k.startswith("mlp1." if projector == "mlp" else "projector.") for k in keys)
    assert any(".wqkv." in k for k in keys) == (llm_type == "internlm2")
    convert_official(tmp_path / "official", tmp_path / "back", image_token_id=153)
    back = InternVLXForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    _same_tensors(m.state_dict(), back.state_dict())
    ids = torch.tensor([prompt_ids([2], 4, seed=0)])
    with torch.no_grad():
        assert m(input_ids=ids, pixel_values=pixels(2)).logits.equal(back(input_ids=ids, pixel_values=pixels(2)).logits)


def test_sharded_checkpoint_and_bfloat16(tmp_path):
    sd = load_file(OFFICIAL_TINY / "model.safetensors")
    src = tmp_path / "sharded"
    src.mkdir()
    (src / "config.json").write_text((OFFICIAL_TINY / "config.json").read_text())
    keys = sorted(sd)
    half = len(keys) // 2
    weight_map = {}
    for name, part in (("model-00001-of-00002.safetensors", keys[:half]), ("model-00002-of-00002.safetensors", keys[half:])):
        save_file({k: sd[k] for k in part}, src / name)
        weight_map.update({k: name for k in part})
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    convert_official(src, tmp_path / "out", image_token_id=153, dtype="bfloat16")
    m = InternVLXForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert m.dtype == torch.bfloat16
    ref = InternVLXForConditionalGeneration.from_pretrained(
        (convert_official(OFFICIAL_TINY, tmp_path / "ref", image_token_id=153), tmp_path / "ref")[1])
    assert m.projector.cls_scale.equal(ref.projector.cls_scale.to(torch.bfloat16))


def test_missing_official_key_is_named(tmp_path):
    sd = load_file(OFFICIAL_TINY / "model.safetensors")
    del sd["language_model.model.layers.1.feed_forward.w3.weight"]
    (tmp_path / "src").mkdir()
    save_file(sd, tmp_path / "src" / "model.safetensors")
    (tmp_path / "src" / "config.json").write_text((OFFICIAL_TINY / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): language_model\.model\.layers\.1\.mlp\.up_proj\.weight"):
        convert_official(tmp_path / "src", tmp_path / "dst", image_token_id=153)
    assert not (tmp_path / "dst").exists()  # nothing written


def test_unexpected_and_misshaped_keys_are_named(tmp_path):
    sd = load_file(OFFICIAL_TINY / "model.safetensors")
    sd["projector.cls_scale"] = torch.zeros(1, 3, 3, 64)
    sd["projector.extra_gate"] = torch.zeros(3)
    (tmp_path / "src").mkdir()
    save_file(sd, tmp_path / "src" / "model.safetensors")
    (tmp_path / "src" / "config.json").write_text((OFFICIAL_TINY / "config.json").read_text())
    with pytest.raises(CheckpointError, match="unexpected PVTC projector key 'extra_gate'"):
        convert_official(tmp_path / "src", tmp_path / "dst", image_token_id=153)
    del sd["projector.extra_gate"]
    save_file(sd, tmp_path / "src" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatches.*cls_scale: checkpoint \[1, 3, 3, 64\]"):
        convert_official(tmp_path / "src", tmp_path / "dst", image_token_id=153)


def test_image_token_id_required_without_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match="--image-token-id"):
        convert_official(OFFICIAL_TINY, tmp_path / "dst")


def test_no_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text((OFFICIAL_TINY / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not allowed")
    with pytest.raises(CheckpointError, match="only safetensors"):
        convert_official(tmp_path, tmp_path / "dst", image_token_id=153)


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text((OFFICIAL_TINY / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(CheckpointError, match="cannot read"):
        convert_official(tmp_path, tmp_path / "dst", image_token_id=153)


def test_cli_convert(tmp_path, capsys):
    assert cli(["convert", "official", str(OFFICIAL_TINY), str(tmp_path / "o"), "--image-token-id", "153"]) == 0
    assert cli(["convert", "to-official", str(tmp_path / "o"), str(tmp_path / "back")]) == 0
    _same_tensors(load_file(OFFICIAL_TINY / "model.safetensors"), read_safetensors_dir(tmp_path / "back")[0])
    assert cli(["convert", "official", str(OFFICIAL_TINY), str(tmp_path / "x")]) == 2
    assert "--image-token-id" in capsys.readouterr().err


@pytest.mark.parametrize("size,preset", [("2b", "internvlx-2b"), ("8b", "internvlx-8b")])
def test_full_size_manifest_maps_one_to_one(size, preset):
    with open(FIX / "manifests" / f"official_{size}_manifest.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    official = {r["key"]: torch.empty(json.loads(r["shape"]), device="meta") for r in rows}
    cfg = InternVLXConfig.from_preset(preset)
    ours = official_to_ours(official, cfg, "internlm2")
    check_state_dict(ours, expected_shapes(cfg), f"official {size} manifest")  # raises on any difference
    # qkv weight+bias split in three (ViT), wqkv weight split in three (LLM)
    assert len(ours) == len(official) + 4 * cfg.vision_config.num_hidden_layers + 2 * cfg.text_config.num_hidden_layers
    assert sum(t.numel() for t in ours.values()) == sum(t.numel() for t in official.values())
