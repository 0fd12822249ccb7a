"""A tiny InternLM2-style SentencePiece tokenizer for tests (trained in well under a second).

* :func:`train_test_spm` trains a BPE SentencePiece model with InternLM2's settings: byte
  fallback, no dummy prefix, no whitespace clean-up, identity normalization, whitespace-only
  pieces allowed, ``<unk>``/``<s>``/``</s>`` = 0/1/2, and six placeholder pieces
  ``[UNUSED_TOKEN_141..146]`` that the checkpoint's ``tokenizer_config.json`` renames to the chat
  tokens (:data:`INTERNLM2_CHAT_TOKENS`), as InternLM2 does.
* :func:`build_internlm2_tokenizer_dir` writes a checkpoint-style tokenizer directory
  (``tokenizer.model``, ``tokenizer_config.json`` with ``added_tokens_decoder``,
  ``special_tokens_map.json``) holding those chat tokens and InternVL's 9 tokens after the
  SentencePiece vocabulary.
* :func:`slow_internlm2_encode` is the reference: what InternLM2's slow tokenizer does (split on
  added tokens, ``SentencePieceProcessor.encode`` every chunk in between, BOS first).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import sentencepiece as spm

from internvlx.tokenizer import INTERNVL_SPECIAL_TOKENS

INTERNLM2_PLACEHOLDERS = [f"[UNUSED_TOKEN_{i}]" for i in range(141, 147)]
# In InternLM2 these sit on ids 92538..92543, in this order (<|im_end|>=92542, <|im_start|>=92543).
INTERNLM2_CHAT_TOKENS = [
    "<|plugin|>",
    "<|interpreter|>",
    "<|action_end|>",
    "<|action_start|>",
    "<|im_end|>",
    "<|im_start|>",
]
INTERNVL_TOKENS = list(INTERNVL_SPECIAL_TOKENS)

_WORDS = (
    "the a of image cat dog describe what is in this picture please answer question user assistant"
    " system hello world model token vision language red green blue small large left right count"
    " number text shows there are two three on under near"
).split()
_CJK = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型英文名叫是一个有用无害助手请描述这张图片中有什么"


def make_corpus(seed: int = 0, n_lines: int = 3000) -> list[str]:
    """Deterministic mixed text: English, CJK, code with indentation, digits, tabs, newlines, accents."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.4:
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
            lines.append(words + rng.choice([".", "?", "!", "", "\n", ".\n\n"]))
        elif kind < 0.6:
            text = "".join(rng.choice(_CJK) for _ in range(rng.randint(4, 20)))
            lines.append(text + rng.choice(["。", "？", "", "\n"]))
        elif kind < 0.75:
            indent = " " * rng.choice([0, 2, 4, 8])
            lines.append(f"{indent}def f(x):\n{indent}    return x + {rng.randint(0, 99999)}\n")
        elif kind < 0.9:
            lines.append(
                f"{rng.randint(0, 10**6)} items, {rng.random():.3f} ratio\tcol\t{rng.choice(_WORDS)}"
            )
        else:
            lines.append("café naïve résumé " + rng.choice(_WORDS) + "  " + rng.choice("üéßñ"))
    return lines


def train_test_spm(
    tmp_dir: str | Path,
    *,
    vocab_size: int = 800,
    add_dummy_prefix: bool = False,
    name: str = "tokenizer",
    seed: int = 0,
) -> Path:
    """Train a small InternLM2-style BPE SentencePiece model; returns ``tmp_dir/<name>.model``."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    prefix = tmp_dir / name
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(make_corpus(seed)),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        add_dummy_prefix=add_dummy_prefix,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        split_digits=True,
        character_coverage=0.9995,
        user_defined_symbols=INTERNLM2_PLACEHOLDERS,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def _added(content: str) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def internlm2_added_tokens(
    spm_model_path: str | Path, internvl_tokens: bool = True
) -> dict[str, int]:
    """``{content: id}`` of every added token of the directory :func:`build_internlm2_tokenizer_dir` writes."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_model_path))
    tokens = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for placeholder, chat_token in zip(INTERNLM2_PLACEHOLDERS, INTERNLM2_CHAT_TOKENS, strict=True):
        tokens[chat_token] = sp.piece_to_id(placeholder)
    if internvl_tokens:
        n = sp.get_piece_size()
        tokens.update({t: n + i for i, t in enumerate(INTERNVL_TOKENS)})
    return tokens


def build_internlm2_tokenizer_dir(
    out_dir: str | Path,
    spm_model_path: str | Path | None = None,
    *,
    internvl_tokens: bool = True,
    chat_template: str | None = None,
) -> Path:
    """Write an official-style InternLM2 / InternVL tokenizer directory; returns ``out_dir``.

    Trains a model with :func:`train_test_spm` when ``spm_model_path`` is None. The files look
    like InternVL2's: ``tokenizer_class`` ``InternLM2Tokenizer`` with its ``auto_map``,
    ``added_tokens_decoder`` renaming the six placeholder pieces to the chat tokens, and (with
    ``internvl_tokens``) ``<img> </img> <IMG_CONTEXT> <quad> </quad> <ref> </ref> <box> </box>``
    on the ids right after the SentencePiece vocabulary.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spm_model_path is None:
        spm_model_path = train_test_spm(out_dir / "_spm")
    shutil.copyfile(spm_model_path, out_dir / "tokenizer.model")
    tokens = internlm2_added_tokens(out_dir / "tokenizer.model", internvl_tokens)
    extra = [t for t in tokens if t not in ("<unk>", "<s>", "</s>")]
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): _added(t) for t, i in sorted(tokens.items(), key=lambda kv: kv[1])
        },
        "additional_special_tokens": extra,
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 8192,
        "pad_token": "</s>",
        "tokenizer_class": "InternLM2Tokenizer",
        "unk_token": "<unk>",
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    special_map = {
        "additional_special_tokens": extra,
        "bos_token": _added("<s>"),
        "eos_token": _added("</s>"),
        "pad_token": _added("</s>"),
        "unk_token": _added("<unk>"),
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2), encoding="utf-8"
    )
    return out_dir


def slow_internlm2_encode(
    sp: spm.SentencePieceProcessor, text: str, added_tokens: dict[str, int], add_bos: bool = True
) -> list[int]:
    """Ids from InternLM2's slow tokenizer: split on added tokens (longest first), SentencePiece-encode
    each chunk between them, prepend ``<s>``."""
    pattern = re.compile(
        "|".join(re.escape(t) for t in sorted(added_tokens, key=len, reverse=True))
    )
    ids = [1] if add_bos else []
    pos = 0
    for match in pattern.finditer(text):
        if match.start() > pos:
            ids += sp.encode(text[pos : match.start()])
        ids.append(added_tokens[match.group()])
        pos = match.end()
    if pos < len(text):
        ids += sp.encode(text[pos:])
    return ids
