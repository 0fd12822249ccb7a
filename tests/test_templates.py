"""Chat templates, <image> expansion and image-safe encoding, against the authors' golden prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from internvlx.errors import ConfigError, PromptError
from internvlx.templates import (
    IMG_CONTEXT_TOKEN,
    TEMPLATES,
    ChatTemplate,
    available_templates,
    build_chat_query,
    encode_prompt,
    expand_image_placeholders,
    get_template,
    render_prompt,
)
from internvlx.tokenizer import convert_internlm2_tokenizer, load_internlm2_tokenizer_dir
from tests.conftest import shared_path
from tests.helpers_spm import build_internlm2_tokenizer_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "templates"
PROMPTS = json.loads((FIXTURES / "conversation_prompts.json").read_text(encoding="utf-8"))
EXPANSION = json.loads((FIXTURES / "chat_image_token_expansion.json").read_text(encoding="utf-8"))

# Cases where the authors silently ignore a placeholder/image mismatch (or assert): we raise.
MISMATCH_CASES = {
    "fewer_placeholders_than_images",
    "more_placeholders_than_images",
    "history_no_placeholder_anywhere",
    "mismatched_patch_count_assert",
}


def _messages(case):
    return [{"role": role, "content": text} for role, text in case["messages"]]


def _case_id(case):
    return f"{case['conversation']}-{case['template']}-{case['system_message']!r}"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_internlm2_tokenizer_dir(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tokenizer(tok_dir):
    return load_internlm2_tokenizer_dir(tok_dir)


def test_fixture_copy_matches_shared():
    for name in ("conversation_prompts.json", "chat_image_token_expansion.json"):
        shared = shared_path("fixtures", "templates", name)
        assert (FIXTURES / name).read_bytes() == shared.read_bytes()


def test_registry():
    assert set(PROMPTS["registered_templates"]) < set(available_templates())
    assert "internvl2_5" in available_templates()
    assert get_template("internlm2-chat") is TEMPLATES["internlm2-chat"]
    assert get_template(TEMPLATES["phi3-chat"]) is TEMPLATES["phi3-chat"]
    with pytest.raises(ConfigError, match="internvl2_5"):
        get_template("nope")


@pytest.mark.parametrize("name", sorted(PROMPTS["registered_templates"]))
def test_metadata_matches_authors(name):
    ref = PROMPTS["templates"][name]
    t = get_template(name)
    assert t.system_template == ref["system_template"]
    assert t.system_message == ref["system_message"]
    assert list(t.roles) == ref["roles"]
    assert t.style == ref["sep_style"].lower()
    assert (t.sep, t.sep2, t.stop_str) == (ref["sep"], ref["sep2"], ref["stop_str"])
    assert (list(t.stop_token_ids) if t.stop_token_ids else None) == ref["stop_token_ids"]


def test_internvl2_5_definition():
    t = get_template("internvl2_5")
    assert t.system_message == (
        "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
    )
    assert t.sep == "<|im_end|>\n" and t.eos_token == "<|im_end|>"
    messages = [
        {"role": "user", "content": "<image>\nHi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": None},
    ]
    assert render_prompt(t, messages) == (
        "<|im_start|>system\n" + t.system_message + "<|im_end|>\n"
        "<|im_start|>user\n<image>\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("case", PROMPTS["prompts"], ids=_case_id)
def test_render_prompt_matches_authors(case):
    assert (
        render_prompt(case["template"], _messages(case), case["system_message"]) == case["prompt"]
    )
    if case["system_message"] is not None:  # the same as a leading system message
        messages = [{"role": "system", "content": case["system_message"]}, *_messages(case)]
        assert render_prompt(case["template"], messages) == case["prompt"]


def test_apply_chat_template_matches_authors(tokenizer):
    """The Jinja templates give the same strings through transformers' apply_chat_template."""
    for case in PROMPTS["prompts"]:
        messages = _messages(case)
        if case["system_message"] is not None:
            messages.insert(0, {"role": "system", "content": case["system_message"]})
        if not messages:  # transformers refuses an empty conversation; render_prompt covers it
            continue
        chat_template = get_template(case["template"]).chat_template
        got = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False)
        assert got == case["prompt"], _case_id(case)
        if messages and messages[-1] == {"role": "assistant", "content": None}:
            got = tokenizer.apply_chat_template(
                messages[:-1],
                chat_template=chat_template,
                add_generation_prompt=True,
                tokenize=False,
            )
            assert got == case["prompt"], _case_id(case)


def test_generation_prompt_flag_equals_trailing_none():
    for name in available_templates():
        user = [{"role": "user", "content": "Q"}]
        assert render_prompt(name, user, add_generation_prompt=True) == render_prompt(
            name, [*user, {"role": "assistant", "content": None}]
        )


def test_content_is_never_interpreted():
    text = "{{ 7 * 7 }} {% if true %}x{% endif %} {system_message} \\n '\""
    prompt = render_prompt(
        "internlm2-chat", [{"role": "user", "content": text}], system_message="{{ s }}"
    )
    assert prompt == f"<|im_start|>system\n{{{{ s }}}}<|im_end|><|im_start|>user\n{text}<|im_end|>"


def test_bad_messages_raise():
    with pytest.raises(PromptError, match="role"):
        render_prompt("internlm2-chat", [{"role": "tool", "content": "x"}])
    with pytest.raises(PromptError, match="first"):
        render_prompt(
            "internlm2-chat", [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]
        )
    with pytest.raises(PromptError, match="not both"):
        render_prompt("internlm2-chat", [{"role": "system", "content": "s"}], system_message="t")
    with pytest.raises(PromptError, match="string"):
        render_prompt("internlm2-chat", [{"role": "user", "content": ["x"]}])


def test_template_stop_strings():
    assert get_template("Hermes-2").stop_strings == ("<|im_end|>", "<|endoftext|>")
    assert get_template("phi3-chat").stop_strings == ("<|end|>",)
    assert get_template("internvl_zh").eos_token == "</s>"
    assert isinstance(get_template("internvl_zh"), ChatTemplate)


# --- <image> expansion, against the authors' chat() / batch_chat() ---


def _tiles(inp):
    if inp["num_patches_list"] is not None:
        return inp["num_patches_list"]
    return [inp["pixel_values_len"]] if inp["pixel_values_len"] is not None else None


def _compact(query):
    return re.sub(
        f"(?:{re.escape(IMG_CONTEXT_TOKEN)})+",
        lambda m: f"{IMG_CONTEXT_TOKEN}*{len(m.group()) // len(IMG_CONTEXT_TOKEN)}",
        query,
    )


@pytest.mark.parametrize("case", EXPANSION["chat"], ids=lambda c: c["input"]["id"])
def test_chat_query_matches_authors(case):
    inp, out = case["input"], case["output"]
    call = dict(
        template=inp["template"],
        question=inp["question"],
        tiles_per_image=_tiles(inp),
        tokens_per_tile=inp["num_image_token"],
        history=[tuple(turn) for turn in inp["history"]] if "history" in inp else None,
        system_message=inp.get("system_message"),
        total_tiles=inp["pixel_values_len"],
    )
    if inp["id"] in MISMATCH_CASES:
        with pytest.raises(PromptError):
            build_chat_query(**call)
        return
    built = build_chat_query(**call)
    assert built.query == out["query"]
    assert _compact(built.query) == out["query_compact"]
    assert built.question == out["returned_history"][-1][0]
    assert len(built.image_spans) == out["num_img_start"] == out["num_img_end"]
    assert (
        sum(built.query[a:b].count(IMG_CONTEXT_TOKEN) for a, b in built.image_spans)
        == out["num_img_context"]
    )
    template = get_template(inp["template"])
    assert out["eos_token_id_set_in_generation_config"] == f"ID[{template.eos_token}]"
    stub = "  stub answer <|im_end|><|end|>tail"
    assert template.strip_response(stub) == out["returned_response_from_stub_decode"]


def test_mismatch_errors_name_both_counts():
    with pytest.raises(PromptError, match=r"1 '<image>' placeholder\(s\) but 2 image\(s\)"):
        build_chat_query("internlm2-chat", "<image>\nCompare.", [3, 2], 256)
    with pytest.raises(PromptError, match=r"2 '<image>' placeholder\(s\) but 1 image\(s\)"):
        build_chat_query("internlm2-chat", "Image-1: <image>\nImage-2: <image>\nX", [1], 256)
    with pytest.raises(PromptError, match=r"0 '<image>' placeholder\(s\) but 1 image\(s\)"):
        build_chat_query("internlm2-chat", "And now?", [1], 256, history=[("Hi", "Hello!")])
    with pytest.raises(PromptError, match="4 tiles"):
        build_chat_query("internlm2-chat", "<image>\nX", [3, 2], 256, total_tiles=4)


@pytest.mark.parametrize("case", EXPANSION["batch_chat"], ids=lambda c: c["input"]["id"])
def test_batch_chat_queries_match_authors(case):
    inp, out = case["input"], case["output"]
    for question, tiles, expected in zip(
        inp["questions"], inp["num_patches_list"], out["queries"], strict=True
    ):
        built = build_chat_query(inp["template"], question, [tiles], inp["num_image_token"])
        assert built.query == expected


def test_expand_spans_and_errors():
    prompt = "A <image> B <image> C"
    expanded, spans = expand_image_placeholders(prompt, [2, 1], 3)
    assert (
        expanded
        == "A <img>" + "<IMG_CONTEXT>" * 6 + "</img> B <img>" + "<IMG_CONTEXT>" * 3 + "</img> C"
    )
    assert [expanded[a:b] for a, b in spans] == [
        "<img>" + "<IMG_CONTEXT>" * 6 + "</img>",
        "<img>" + "<IMG_CONTEXT>" * 3 + "</img>",
    ]
    assert expand_image_placeholders("no images", [], 256) == ("no images", [])
    with pytest.raises(PromptError, match="1 '<image>' placeholder"):
        expand_image_placeholders("x <image>", [], 256)
    with pytest.raises(PromptError, match="at least one tile"):
        expand_image_placeholders("<image>", [0], 256)
    with pytest.raises(PromptError, match="positive"):
        expand_image_placeholders("<image>", [1], 0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(alphabet="ab <>/imgIMG_CONTEXT\n", max_size=8), min_size=1, max_size=5),
    st.integers(1, 4),
    st.data(),
)
def test_expand_property(texts, tokens_per_tile, data):
    # texts joined by placeholders; text pieces may hold partial tags but never "<image>"
    texts = [t.replace("<image>", "") for t in texts]
    tiles = data.draw(st.lists(st.integers(1, 3), min_size=len(texts) - 1, max_size=len(texts) - 1))
    prompt = "<image>".join(texts)
    if prompt.count("<image>") != len(tiles):
        return  # a join formed an extra "<image>" across a boundary
    expanded, spans = expand_image_placeholders(prompt, tiles, tokens_per_tile)
    rebuilt, cursor = [], 0
    for (a, b), n in zip(spans, tiles, strict=True):
        assert expanded[a:b] == "<img>" + IMG_CONTEXT_TOKEN * (n * tokens_per_tile) + "</img>"
        rebuilt.append(expanded[cursor:a])
        cursor = b
    rebuilt.append(expanded[cursor:])
    assert "<image>".join(rebuilt) == prompt


# --- encode_prompt: typed image tokens never become image slots ---


def test_encode_prompt_plain_equals_tokenizer(tokenizer):
    built = build_chat_query(
        "internlm2-chat", "Image-1: <image>\nImage-2: <image>\nWhat?", [2, 1], 4
    )
    ids = encode_prompt(tokenizer, built.query, built.image_spans)
    assert ids == tokenizer(built.query, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)) == 12


def test_encode_prompt_literal_tokens_are_text(tokenizer):
    context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    guarded = set(tokenizer.convert_tokens_to_ids(["<img>", "</img>", IMG_CONTEXT_TOKEN]))
    question = (
        "<image>\nWhat does <IMG_CONTEXT> mean? Also <img>x</img> and <IMG_CONTEXT><IMG_CONTEXT>."
    )
    built = build_chat_query("internlm2-chat", question, [1], 4)
    naive = tokenizer(built.query, add_special_tokens=False)["input_ids"]
    assert naive.count(context_id) == 4 + 3  # the danger: typed tokens would become image slots
    ids = encode_prompt(tokenizer, built.query, built.image_spans)
    assert ids.count(context_id) == 4
    (a, b) = built.image_spans[0]
    block = tokenizer(built.query[a:b], add_special_tokens=False)["input_ids"]
    assert sum(1 for i in ids if i in guarded) == len(block)

    # locality: only the typed tokens change; the ids around them are the normal ones
    enc = tokenizer(built.query, add_special_tokens=False, return_offsets_mapping=True)
    expected = []
    for token_id, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        if token_id in guarded and not a <= s < b:
            expected.append(("typed", built.query[s:e]))
        else:
            expected.append(token_id)
    cursor = 0
    for item in expected:
        if isinstance(item, tuple):
            split = tokenizer(item[1], add_special_tokens=False, split_special_tokens=True)[
                "input_ids"
            ]
            assert ids[cursor : cursor + len(split)] == split
            assert not guarded & set(split)
            cursor += len(split)
        else:
            assert ids[cursor] == item
            cursor += 1
    assert cursor == len(ids)
    # split_special_tokens did not stick to the tokenizer
    assert tokenizer("<IMG_CONTEXT>", add_special_tokens=False)["input_ids"] == [context_id]


def test_encode_prompt_text_only_and_bad_spans(tokenizer, tok_dir):
    context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    built = build_chat_query("internlm2-chat", "Is <IMG_CONTEXT> an <image>?", None, 256)
    assert "<image>" in built.query and built.image_spans == []
    assert context_id not in encode_prompt(tokenizer, built.query, [])
    built = build_chat_query("internlm2-chat", "<image>\nHi", [1], 2)
    (a, b) = built.image_spans[0]
    with pytest.raises(PromptError, match="outside the prompt"):
        encode_prompt(tokenizer, built.query, [(a, len(built.query) + 1)])
    # a tokenizer without <IMG_CONTEXT> as an added token cannot hold image slots
    bare = convert_internlm2_tokenizer(tok_dir / "tokenizer.model", add_internvl_tokens=False)
    with pytest.raises(PromptError, match="hold 2 '<IMG_CONTEXT>' but the encoded prompt has 0"):
        encode_prompt(bare, built.query, built.image_spans)

    class Slow:
        is_fast = False

    with pytest.raises(PromptError, match="fast tokenizer"):
        encode_prompt(Slow(), built.query, built.image_spans)
