"""InternLM2 SentencePiece -> fast tokenizer: identical ids to the slow tokenizer, round trips."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from internvlx.errors import CheckpointError
from internvlx.tokenizer import (
    INTERNVL_SPECIAL_TOKENS,
    convert_internlm2_tokenizer,
    load_internlm2_tokenizer_dir,
)
from tests.helpers_spm import (
    INTERNLM2_CHAT_TOKENS,
    INTERNLM2_PLACEHOLDERS,
    INTERNVL_TOKENS,
    build_internlm2_tokenizer_dir,
    internlm2_added_tokens,
    make_corpus,
    slow_internlm2_encode,
    train_test_spm,
)

TRICKY = [
    "",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    " \n ",
    "\t",
    "\t\tindented\ttabs",
    "Hello world",
    " Hello",
    "  Hello  world  ",
    "Hello world ",
    "trailing newline\n",
    "\nleading newline",
    "def f(x):\n    return x + 1\n",
    "        deeply indented",
    "12345 678 9",
    "3.14159, 2.71828",
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型",
    "请描述这张图片。\n\n中有什么？",
    "混合 mixed 文本 text",
    "emoji 🚀 rocket 🐱‍👤 ninja",
    "🚀",
    "€ £ ¥ ©",
    "café naïve résumé",
    "Ωμέγα κόσμε",
    "русский текст",
    "ÿ\x00\x01\x7f",
    "a\u200bb zero width",
    "\r\n windows line",
    "<s>",
    "</s>",
    "<unk>",
    "<s>hi</s>",
    "a<s>b",
    "<|im_start|>",
    "<|im_start|>user\nHello<|im_end|><|im_start|>assistant\n",
    "<|im_start|>system\n你是书生<|im_end|><|im_start|>user\n<image>\nWhat?<|im_end|>",
    "a<|im_end|>b",
    " <|im_end|> ",
    "<|im_end|><|im_end|>",
    "<|action_start|><|plugin|>\n{}<|action_end|>",
    "<|interpreter|>",
    "<img><IMG_CONTEXT><IMG_CONTEXT></img>",
    "Image-1: <img><IMG_CONTEXT></img>\nImage-2: <img><IMG_CONTEXT></img>\nCompare.",
    "<ref>the cat</ref><box>[[1, 2, 3, 4]]</box>",
    "<quad>x</quad>",
    "<IMG_CONTEXT",
    "IMG_CONTEXT>",
    "<<img>>",
    "<img</img>",
    "<|im_end|",
    "|im_end|>",
    "<image>\nliteral placeholder",
    "{braces} and {{jinja}}",
    "[UNUSED_TOKEN_1]",
]


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory):
    return train_test_spm(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="session")
def spm_prefix_path(tmp_path_factory):
    """The same model with SentencePiece's dummy prefix on (InternLM2 has it off)."""
    return train_test_spm(tmp_path_factory.mktemp("spm_prefix"), add_dummy_prefix=True)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory, spm_path):
    return build_internlm2_tokenizer_dir(tmp_path_factory.mktemp("ckpt"), spm_path)


@pytest.fixture(scope="session")
def fast(ckpt_dir):
    return load_internlm2_tokenizer_dir(ckpt_dir)


def _random_strings(seed: int, count: int, added: list[str]) -> list[str]:
    rng = random.Random(seed)
    lines = make_corpus(seed=seed + 100, n_lines=200)
    chars = sorted(set("".join(lines))) + list("🚀€Ω\u00a0\t\n \r<>|/") + added
    out = [rng.choice(lines) + rng.choice(added) + rng.choice(lines) for _ in range(count // 2)]
    out += [
        "".join(rng.choice(chars) for _ in range(rng.randint(0, 40))) for _ in range(count // 2)
    ]
    return out


def _check_ids(sp, tok, added, texts):
    mismatches = []
    for text in texts:
        slow = slow_internlm2_encode(sp, text, added)
        got = tok(text)["input_ids"]
        if slow != got:
            mismatches.append((text, slow, got))
    assert not mismatches, mismatches[:5]


@pytest.mark.parametrize("variant", ["internlm2", "dummy_prefix"])
def test_ids_identical_to_slow_tokenizer(variant, spm_path, spm_prefix_path):
    path = spm_path if variant == "internlm2" else spm_prefix_path
    sp = spm.SentencePieceProcessor(model_file=str(path))
    added = internlm2_added_tokens(path)
    decoder = {i: t for t, i in added.items()}
    tok = convert_internlm2_tokenizer(path, decoder)
    texts = TRICKY + _random_strings(1, 400, list(added))
    _check_ids(sp, tok, added, texts)
    # without BOS too
    assert tok("Hello", add_special_tokens=False)["input_ids"] == sp.encode("Hello")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
            st.sampled_from(
                [
                    "<|im_start|>",
                    "<|im_end|>",
                    "<IMG_CONTEXT>",
                    "<img>",
                    "</img>",
                    "<s>",
                    "\n",
                    "  ",
                ]
            ),
        ),
        max_size=6,
    )
)
def test_ids_identical_property(spm_path, fast, parts):
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    text = "".join(parts)
    assert fast(text)["input_ids"] == slow_internlm2_encode(
        sp, text, internlm2_added_tokens(spm_path)
    )


def test_checkpoint_dir_ids(fast, spm_path):
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    n = sp.get_piece_size()
    assert isinstance(fast, PreTrainedTokenizerFast)
    assert len(fast) == n + 9
    assert fast.convert_tokens_to_ids(INTERNVL_TOKENS) == list(range(n, n + 9))
    for placeholder, chat_token in zip(INTERNLM2_PLACEHOLDERS, INTERNLM2_CHAT_TOKENS, strict=True):
        assert fast.convert_tokens_to_ids(chat_token) == sp.piece_to_id(placeholder)
    assert (fast.bos_token_id, fast.eos_token_id, fast.unk_token_id, fast.pad_token_id) == (
        1,
        2,
        0,
        2,
    )
    assert fast("x")["input_ids"][0] == 1 and fast("x")["input_ids"][-1] != 2
    assert set(INTERNVL_SPECIAL_TOKENS) | set(INTERNLM2_CHAT_TOKENS) <= set(fast.all_special_tokens)
    assert fast.model_max_length == 8192
    # a renamed placeholder piece is only reachable under its new name
    assert sp.piece_to_id("[UNUSED_TOKEN_146]") not in fast("[UNUSED_TOKEN_146]")["input_ids"]


def test_decode_round_trip(fast, spm_path):
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    added = internlm2_added_tokens(spm_path)
    # "▁" is SentencePiece's space marker: it decodes to " " in the slow tokenizer as well
    texts = [
        t for t in TRICKY + _random_strings(2, 200, list(added)) if "▁" not in t and "\r" not in t
    ]
    for text in texts:
        ids = fast(text, add_special_tokens=False)["input_ids"]
        assert fast.decode(ids) == text
        plain = [i for i in ids if i not in added.values()]
        assert fast.decode(ids, skip_special_tokens=True) == sp.decode(plain)


def test_decode_with_dummy_prefix_matches_sentencepiece(spm_prefix_path):
    sp = spm.SentencePieceProcessor(model_file=str(spm_prefix_path))
    tok = convert_internlm2_tokenizer(spm_prefix_path)
    for text in ["Hello world", "  two spaces", "你好 world\n", "🚀 x"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(text)
        assert tok.decode(ids) == sp.decode(ids)


def test_save_and_auto_reload_keep_ids(fast, tmp_path, spm_path):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    fast.chat_template = template
    try:
        fast.save_pretrained(tmp_path)
    finally:
        fast.chat_template = None
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.is_fast
    added = internlm2_added_tokens(spm_path)
    for text in TRICKY + _random_strings(3, 100, list(added)):
        assert reloaded(text)["input_ids"] == fast(text)["input_ids"]
        assert (
            reloaded(text, add_special_tokens=False)["input_ids"]
            == fast(text, add_special_tokens=False)["input_ids"]
        )
    assert reloaded.get_added_vocab() == fast.get_added_vocab()
    assert set(reloaded.all_special_tokens) == set(fast.all_special_tokens)
    assert reloaded.pad_token_id == fast.pad_token_id == 2
    assert reloaded.chat_template == template


def test_added_tokens_forms(spm_path):
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    n = sp.get_piece_size()
    renames = {
        sp.piece_to_id(p): c
        for p, c in zip(INTERNLM2_PLACEHOLDERS, INTERNLM2_CHAT_TOKENS, strict=True)
    }
    by_content = {c: i for i, c in renames.items()}
    expected = {**by_content, **{t: n + i for i, t in enumerate(INTERNVL_TOKENS)}}
    forms = [
        by_content,  # added_tokens.json style; InternVL tokens appended
        {
            str(i): {"content": c, "special": True} for i, c in renames.items()
        },  # added_tokens_decoder
        [{"id": i, "content": c} for i, c in renames.items()] + INTERNVL_TOKENS,  # list
    ]
    for form in forms:
        tok = convert_internlm2_tokenizer(spm_path, form)
        assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    # None: the SentencePiece pieces as they are, plus the 9 InternVL tokens
    plain = convert_internlm2_tokenizer(spm_path)
    assert len(plain) == n + 9
    assert plain.convert_tokens_to_ids("[UNUSED_TOKEN_146]") == sp.piece_to_id("[UNUSED_TOKEN_146]")
    assert plain("<IMG_CONTEXT>", add_special_tokens=False)["input_ids"] == [n + 2]
    bare = convert_internlm2_tokenizer(spm_path, add_internvl_tokens=False)
    assert len(bare) == n
    # a non-special added token is kept, but not as a special token
    tok = convert_internlm2_tokenizer(
        spm_path, [{"content": "<note>", "special": False}], add_internvl_tokens=False
    )
    assert tok.convert_tokens_to_ids("<note>") == n
    assert "<note>" not in tok.all_special_tokens
    assert (
        tok.decode(tok("a<note>b", add_special_tokens=False)["input_ids"], skip_special_tokens=True)
        == "a<note>b"
    )


def test_bad_inputs_raise(spm_path, tmp_path):
    n = spm.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    with pytest.raises(CheckpointError, match="consecutive"):
        convert_internlm2_tokenizer(spm_path, {"<img>": n + 1})
    with pytest.raises(CheckpointError, match="two ids"):
        convert_internlm2_tokenizer(spm_path, {str(n): "<img>", str(n + 1): "<img>"})
    with pytest.raises(CheckpointError, match="clashes"):
        convert_internlm2_tokenizer(spm_path, {"5": "<s>"})
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_internlm2_tokenizer(tmp_path / "missing.model")
    with pytest.raises(CheckpointError, match="no tokenizer.model"):
        load_internlm2_tokenizer_dir(tmp_path)
    (tmp_path / "garbage.model").write_bytes(b"\xff\x00not a model")
    with pytest.raises(CheckpointError):
        convert_internlm2_tokenizer(tmp_path / "garbage.model")
    unigram = tmp_path / "uni"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_corpus(n_lines=300)),
        model_prefix=str(unigram),
        model_type="unigram",
        vocab_size=200,
        minloglevel=2,
        num_threads=1,
    )
    with pytest.raises(CheckpointError, match="not a BPE"):
        convert_internlm2_tokenizer(unigram.with_suffix(".model"))
    with pytest.raises(CheckpointError, match="not in the tokenizer"):
        convert_internlm2_tokenizer(spm_path, pad_token="<pad>")


def test_dir_with_added_tokens_json_and_chat_template(ckpt_dir, tmp_path, spm_path):
    shutil.copytree(ckpt_dir, tmp_path / "d")
    d = tmp_path / "d"
    config = json.loads((d / "tokenizer_config.json").read_text())
    decoder = config.pop("added_tokens_decoder")
    config["chat_template"] = "{{ 'from config' }}"
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    (d / "added_tokens.json").write_text(
        json.dumps({v["content"]: int(k) for k, v in decoder.items()})
    )
    tok = load_internlm2_tokenizer_dir(d)
    assert tok.get_added_vocab() == internlm2_added_tokens(spm_path)
    assert tok.chat_template == "{{ 'from config' }}"
    assert (
        load_internlm2_tokenizer_dir(d, chat_template="{{ 'mine' }}").chat_template
        == "{{ 'mine' }}"
    )
    (d / "added_tokens.json").write_text(json.dumps({"<other>": 1}))
    config["added_tokens_decoder"] = decoder
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="added_tokens.json"):
        load_internlm2_tokenizer_dir(d)
