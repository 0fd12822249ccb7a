"""Processor and chat end to end: real images → tokens → the tiny model, batching, errors."""

import io
import subprocess
import sys

import pytest
import torch
from PIL import Image

from internvlx import (
    ImageError,
    InternVLXForConditionalGeneration,
    InternVLXProcessor,
    PromptError,
    count_visual_tokens,
)
from internvlx.cli import main as cli
from tests.helpers import build_chat_model_dir


@pytest.fixture(scope="module")
def model_and_processor(model_dir):
    from transformers import AutoProcessor

    return InternVLXForConditionalGeneration.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)


def _img(w, h, colour=(200, 40, 40)):
    return Image.new("RGB", (w, h), colour)


def test_prompt_layout_and_counts(model_and_processor):
    model, proc = model_and_processor
    img = _img(150, 100)
    batch = proc([{"role": "user", "content": "What colour?"}], [img])
    expected = count_visual_tokens(150, 100, model.config)
    assert batch["image_tiles"].tolist() == [expected.tiles]
    assert batch["pixel_values"].shape == (expected.tiles, 3, 56, 56)
    ids = batch["input_ids"][0].tolist()
    assert ids.count(model.config.image_token_id) == expected.llm_input_tokens
    text = proc.tokenizer.decode(ids)
    assert text.startswith("<s><|im_start|>system\n")
    assert "<|im_start|>user\n<img>" in text and text.endswith("<|im_start|>assistant\n")
    assert "</img>\nWhat colour?<|im_end|>" in text


def test_literal_image_tokens_typed_by_a_user_are_text(model_and_processor):
    model, proc = model_and_processor
    batch = proc([{"role": "user", "content": "<image>\nsee <IMG_CONTEXT><img></img> here"}], [_img(60, 60)])
    ids = batch["input_ids"][0].tolist()
    assert ids.count(model.config.image_token_id) == 4  # the one tile only
    assert ids.count(proc.tokenizer.convert_tokens_to_ids("<img>")) == 1
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "image_tiles"})  # no slot mismatch


def test_batch_with_different_image_and_tile_counts_equals_samples_alone(model_and_processor):
    model, proc = model_and_processor
    convs = [
        [{"role": "user", "content": "Image-1: <image>\nImage-2: <image>\nCompare."}],
        [{"role": "user", "content": "Describe."}],
        [{"role": "user", "content": "Only text here."}],
    ]
    images = [[_img(200, 90), _img(56, 56, (0, 0, 255))], [_img(120, 300, (0, 200, 0))], []]
    batch = proc(convs, images)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "image_tiles"}).logits
        for i, (conv, imgs) in enumerate(zip(convs, images, strict=True)):
            one = proc(conv, imgs)
            alone = model(**{k: v for k, v in one.items() if k != "image_tiles"}).logits[0]
            n = alone.shape[0]
            torch.testing.assert_close(logits[i, -n:], alone, rtol=1e-4, atol=1e-4)
            assert batch["attention_mask"][i].sum() == n


def test_placeholder_image_count_mismatch_is_an_error(model_and_processor):
    _, proc = model_and_processor
    with pytest.raises(PromptError, match="2 '<image>' placeholder.*1 image"):
        proc([{"role": "user", "content": "<image> and <image>"}], [_img(60, 60)])
    with pytest.raises(PromptError, match="1 '<image>' placeholder.*2 image"):
        proc([{"role": "user", "content": "<image> only"}], [_img(60, 60), _img(60, 60)])


def test_token_budget_and_policy_overrides(model_and_processor):
    model, proc = model_and_processor
    big = _img(400, 300)
    full = proc([{"role": "user", "content": "q"}], [big])
    small = proc([{"role": "user", "content": "q"}], [big], max_visual_tokens=8)
    assert small["image_tiles"].item() * 4 <= 8 < full["image_tiles"].item() * 4
    stock = proc([{"role": "user", "content": "q"}], [_img(50, 40)], policy="stock")
    rvtc = proc([{"role": "user", "content": "q"}], [_img(50, 40)], policy="length")
    assert rvtc["image_tiles"].item() == 1 <= stock["image_tiles"].item()


def test_bad_images_are_typed_errors(model_and_processor, tmp_path):
    _, proc = model_and_processor
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    buf = io.BytesIO()
    _img(300, 300).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name in ("empty.png", "notes.png", "cut.jpg", "missing.png"):
        with pytest.raises(ImageError, match=name):
            proc([{"role": "user", "content": "q"}], [tmp_path / name])
    with pytest.raises(ImageError, match="pixel"):
        InternVLXProcessor(proc.tokenizer, proc.settings, max_pixels=1000)(
            [{"role": "user", "content": "q"}], [_img(100, 100)])


def test_processor_round_trip(model_and_processor, tmp_path):
    _, proc = model_and_processor
    proc.save_pretrained(tmp_path)
    again = InternVLXProcessor.from_pretrained(tmp_path)
    assert again.settings == proc.settings
    conv = [{"role": "user", "content": "hello <image>"}]
    assert again(conv, [_img(80, 80)])["input_ids"].equal(proc(conv, [_img(80, 80)])["input_ids"])


def test_chat_multi_turn_and_history(model_and_processor):
    model, proc = model_and_processor
    img = _img(100, 100)
    answer, history = model.chat(proc, img, "What colour?", return_history=True, max_new_tokens=4)
    assert isinstance(answer, str) and history == [("What colour?", answer)]
    again = model.chat(proc, img, "What colour?", max_new_tokens=4)
    assert again == answer  # greedy is deterministic
    second, history = model.chat(proc, img, "And the shape?", history=history, return_history=True, max_new_tokens=4)
    assert len(history) == 2 and history[1][1] == second


def test_lvtc_model_gets_compressed_slots(tmp_path):
    d = build_chat_model_dir(tmp_path, seed=4, lvtc=True)
    model = InternVLXForConditionalGeneration.from_pretrained(d).eval()
    proc = InternVLXProcessor.from_pretrained(d)
    assert proc.settings.input_tokens_per_tile == 1 and proc.settings.tokens_per_tile == 4
    batch = proc([{"role": "user", "content": "q"}], [_img(120, 60)])
    assert batch["input_ids"][0].tolist().count(model.config.image_token_id) == batch["image_tiles"].item()
    assert isinstance(model.chat(proc, _img(120, 60), "q", max_new_tokens=3), str)


def test_cli_chat_end_to_end(model_dir, tmp_path, capsys):
    _img(300, 200).save(tmp_path / "x.png")
    assert cli(["chat", str(model_dir), "--image", str(tmp_path / "x.png"), "What is this?",
                "--show-tokens", "--max-new-tokens", "4", "--policy", "area"]) == 0
    out = capsys.readouterr().out
    assert "x.png] 300x200" in out and "visual tokens at the LLM input" in out
    assert torch.is_grad_enabled()  # the command leaves the caller's autograd mode alone


def test_cli_interactive_chat(model_dir, tmp_path):
    _img(90, 90).save(tmp_path / "y.png")
    proc = subprocess.run(
        [sys.executable, "-m", "internvlx.cli", "chat", str(model_dir), "--image", str(tmp_path / "y.png"),
         "--max-new-tokens", "3"],
        input="first question\n/reset\nsecond\n/quit\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("> ") >= 3


def test_cli_chat_missing_image_is_a_clear_error(model_dir, capsys):
    assert cli(["chat", str(model_dir), "--image", "/nonexistent/pic.png", "q"]) == 2
    assert "pic.png" in capsys.readouterr().err
