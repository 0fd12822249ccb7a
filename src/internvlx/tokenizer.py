"""InternLM2 SentencePiece tokenizer -> transformers fast tokenizer, with identical ids.

InternLM2 ships a BPE SentencePiece model (``tokenizer.model``, byte fallback, ``<unk>``=0,
``<s>``=1, ``</s>``=2) and a slow remote-code tokenizer that splits the text on its added
tokens and encodes every chunk in between with ``SentencePieceProcessor.encode``; BOS is added,
EOS is not. Its ``tokenizer_config.json`` renames some SentencePiece pieces by id (the chat
tokens ``<|im_start|>``, ``<|im_end|>``, ``<|action_start|>``… sit on placeholder pieces of the
model), and InternVL appends 9 tokens after the SentencePiece vocabulary (:data:`INTERNVL_SPECIAL_TOKENS`).

:func:`convert_internlm2_tokenizer` builds the equivalent ``tokenizers`` backend with
transformers' own SentencePiece machinery (``SpmConverter.build_tokenizer_from_spm_proto``,
which follows the model's normalizer spec, dummy prefix and piece scores) and wraps it in
transformers' fast tokenizer class (``TokenizersBackend``, alias ``PreTrainedTokenizerFast``).
Added tokens are matched on the raw text (``normalized=False``), so each chunk between them is
encoded on its own, as the slow tokenizer does. :func:`load_internlm2_tokenizer_dir` reads an
official checkpoint directory.

Known difference from the slow tokenizer: a SentencePiece piece renamed by
``added_tokens_decoder`` (e.g. ``[UNUSED_TOKEN_146]`` -> ``<|im_start|>``) is only reachable under
its new name; the slow tokenizer would also map the old placeholder text to that id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

from .errors import CheckpointError

__all__ = [
    "INTERNVL_SPECIAL_TOKENS",
    "convert_internlm2_tokenizer",
    "load_internlm2_tokenizer_dir",
    "train_bpe_tokenizer",
]

INTERNVL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)

_BPE = 2  # sentencepiece TrainerSpec.ModelType.BPE

AddedTokensSpec = Mapping[str, int] | Mapping[int | str, Any] | Sequence[Any]


def _as_added_token(value: Any, where: str) -> AddedToken:
    """An ``AddedToken`` (matched on raw text) from a str, an AddedToken or a config dict."""
    if isinstance(value, AddedToken):
        state = value.__getstate__()
    elif isinstance(value, str):
        state = {"content": value, "special": True}
    elif isinstance(value, Mapping) and isinstance(value.get("content"), str):
        state = dict(value)
    else:
        raise CheckpointError(
            f"{where}: expected a token string or a dict with 'content', got {value!r}"
        )
    return AddedToken(
        state["content"],
        single_word=bool(state.get("single_word", False)),
        lstrip=bool(state.get("lstrip", False)),
        rstrip=bool(state.get("rstrip", False)),
        normalized=False,
        special=bool(state.get("special", True)),
    )


def _normalize_added_tokens(
    added_tokens: AddedTokensSpec | None,
) -> list[tuple[int | None, AddedToken]]:
    """``(id or None, token)`` pairs from the accepted ``added_tokens`` forms.

    * ``{content: id}`` (``added_tokens.json``);
    * ``{id: dict | AddedToken | str}`` with int or digit-string keys (``added_tokens_decoder``);
    * a list of str / AddedToken / dict (dicts may carry an ``"id"``); no id = keep the token's
      id if it already exists, else append it.
    """
    if added_tokens is None:
        return []
    pairs: list[tuple[int | None, AddedToken]] = []
    if isinstance(added_tokens, Mapping):
        for key, value in added_tokens.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                pairs.append((int(key), _as_added_token(value, f"added token {key}")))
            elif isinstance(key, str) and isinstance(value, int):
                pairs.append((value, _as_added_token(key, f"added token {key!r}")))
            else:
                raise CheckpointError(
                    f"added_tokens must map content->id or id->token, got {key!r}: {value!r}"
                )
    elif isinstance(added_tokens, Sequence) and not isinstance(added_tokens, str):
        for i, value in enumerate(added_tokens):
            token_id = value.get("id") if isinstance(value, Mapping) else None
            pairs.append(
                (
                    None if token_id is None else int(token_id),
                    _as_added_token(value, f"added token #{i}"),
                )
            )
    else:
        raise CheckpointError(
            f"added_tokens must be a dict or a list, got {type(added_tokens).__name__}"
        )
    return pairs


def _load_proto(spm_model_path: str | os.PathLike) -> Any:
    path = Path(spm_model_path)
    if not path.is_file():
        raise CheckpointError(f"SentencePiece model {path} does not exist")
    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise CheckpointError(f"{path} is not a SentencePiece model: {exc}") from exc
    if not proto.pieces:
        raise CheckpointError(f"{path} holds no SentencePiece pieces")
    if proto.trainer_spec.model_type != _BPE:
        raise CheckpointError(
            f"{path} is not a BPE SentencePiece model (model_type={proto.trainer_spec.model_type});"
            " InternLM2 tokenizers are BPE"
        )
    return proto


def _assign_ids(
    pieces: list[str], pairs: list[tuple[int | None, AddedToken]], add_internvl_tokens: bool
) -> tuple[dict[int, str], list[tuple[int, AddedToken]]]:
    """Renames of SentencePiece ids, and every added token with its final id (sorted by id)."""
    n_pieces = len(pieces)
    piece_ids = {piece: i for i, piece in enumerate(pieces)}
    renames: dict[int, str] = {}
    by_id: dict[int, AddedToken] = {}
    by_content: dict[str, int] = {}

    def place(token_id: int, token: AddedToken) -> None:
        content = token.content
        if by_content.get(content, token_id) != token_id:
            raise CheckpointError(
                f"Added token {content!r} is given two ids: {by_content[content]} and {token_id}"
            )
        if token_id in by_id and by_id[token_id].content != content:
            raise CheckpointError(
                f"Id {token_id} is given to two added tokens: {by_id[token_id].content!r} and {content!r}"
            )
        if token_id < n_pieces and pieces[token_id] != content:
            other = piece_ids.get(content)
            if other is not None and other != token_id:
                raise CheckpointError(
                    f"Renaming piece {token_id} ({pieces[token_id]!r}) to {content!r} clashes with piece {other}"
                )
            renames[token_id] = content
        by_id[token_id] = token
        by_content[content] = token_id

    deferred: list[AddedToken] = []
    for token_id, token in pairs:
        if token_id is None:
            deferred.append(token)
        elif token_id < 0:
            raise CheckpointError(f"Added token {token.content!r} has a negative id {token_id}")
        else:
            place(token_id, token)
    if add_internvl_tokens:
        deferred += [AddedToken(t, normalized=False, special=True) for t in INTERNVL_SPECIAL_TOKENS]

    appended = sorted(i for i in by_id if i >= n_pieces)
    if appended != list(range(n_pieces, n_pieces + len(appended))):
        raise CheckpointError(
            f"Added tokens beyond the {n_pieces} SentencePiece pieces must have consecutive ids from"
            f" {n_pieces}, got {appended}"
        )
    next_id = n_pieces + len(appended)
    for token in deferred:
        if token.content in by_content:  # already placed with an id
            continue
        piece_id = piece_ids.get(token.content)
        if piece_id is not None and piece_id not in renames:  # a SentencePiece piece: keep its id
            place(piece_id, token)
            continue
        place(next_id, token)
        next_id += 1
    return renames, sorted(by_id.items())


def convert_internlm2_tokenizer(
    spm_model_path: str | os.PathLike,
    added_tokens: AddedTokensSpec | None = None,
    *,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    unk_token: str = "<unk>",
    pad_token: str | None = "</s>",
    add_bos_token: bool = True,
    add_eos_token: bool = False,
    add_internvl_tokens: bool = True,
    extra_special_tokens: Sequence[str] | None = None,
    chat_template: str | None = None,
    model_max_length: int | None = None,
    padding_side: str | None = None,
) -> PreTrainedTokenizerFast:
    """Convert an InternLM2 SentencePiece model plus added tokens into a fast tokenizer.

    Args:
        spm_model_path: the BPE SentencePiece ``tokenizer.model``.
        added_tokens: ``{content: id}`` (``added_tokens.json``), ``{id: {...}}``
            (``added_tokens_decoder`` of ``tokenizer_config.json``) or a list of tokens. An id
            inside the SentencePiece vocabulary renames that piece; ids after it must be
            consecutive. ``lstrip`` / ``rstrip`` / ``single_word`` / ``special`` are kept,
            ``normalized`` is always False (added tokens are matched on the raw text).
        add_internvl_tokens: append any of :data:`INTERNVL_SPECIAL_TOKENS` that is missing.
        extra_special_tokens: more token strings to register as special (every added token
            flagged special already is).
        chat_template: stored on the tokenizer (e.g. ``templates.get_template(name).chat_template``).

    The ids equal those of the slow InternLM2 tokenizer (``<s>`` + SentencePiece ids of each
    chunk between added tokens). Raises :class:`CheckpointError` on inconsistent inputs.
    """
    proto = _load_proto(spm_model_path)
    pieces = [p.piece for p in proto.pieces]
    renames, tokens = _assign_ids(
        pieces, _normalize_added_tokens(added_tokens), add_internvl_tokens
    )

    vocab = {renames.get(i, piece): i for i, piece in enumerate(pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    if backend is None:
        raise CheckpointError(f"transformers could not build a tokenizer from {spm_model_path}")
    for token_id, token in tokens:
        if token.special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
        if backend.token_to_id(token.content) != token_id:
            raise CheckpointError(
                f"Added token {token.content!r} got id {backend.token_to_id(token.content)}, expected {token_id}"
            )

    named = {
        "bos_token": bos_token,
        "eos_token": eos_token,
        "unk_token": unk_token,
        "pad_token": pad_token,
    }
    for role, content in named.items():
        if content is not None and backend.token_to_id(content) is None:
            raise CheckpointError(f"{role} {content!r} is not in the tokenizer's vocabulary")
    extras = [t.content for _, t in tokens if t.special and t.content not in named.values()]
    for content in extra_special_tokens or ():
        if backend.token_to_id(content) is None:
            raise CheckpointError(
                f"Extra special token {content!r} is not in the tokenizer's vocabulary"
            )
        if content not in extras and content not in named.values():
            extras.append(content)

    kwargs: dict[str, Any] = {
        "tokenizer_object": backend,
        **{role: content for role, content in named.items() if content is not None},
        "add_bos_token": add_bos_token,
        "add_eos_token": add_eos_token,
        "extra_special_tokens": extras,
        "clean_up_tokenization_spaces": False,
    }
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    if padding_side is not None:
        kwargs["padding_side"] = padding_side
    fast = PreTrainedTokenizerFast(**kwargs)
    for token_id, token in tokens:
        if fast.convert_tokens_to_ids(token.content) != token_id:
            raise CheckpointError(
                f"Added token {token.content!r} lost its id {token_id} in the fast tokenizer"
            )
    return fast


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise CheckpointError(f"Cannot read a special token from {value!r}")


def load_internlm2_tokenizer_dir(
    directory: str | os.PathLike,
    *,
    chat_template: str | None = None,
    add_internvl_tokens: bool = True,
) -> PreTrainedTokenizerFast:
    """The fast tokenizer of an official InternLM2 / InternVL checkpoint directory.

    Reads ``tokenizer.model`` (required), ``tokenizer_config.json`` (``added_tokens_decoder``,
    special tokens, ``add_bos_token`` / ``add_eos_token``, ``model_max_length``,
    ``chat_template``, ``padding_side``), ``special_tokens_map.json`` (overrides the config's
    special tokens, as transformers does) and ``added_tokens.json`` when present.
    ``chat_template`` replaces the directory's one (an official directory's template may differ
    from the conversation template its model was trained with).
    """
    directory = Path(directory)
    spm_path = directory / "tokenizer.model"
    if not spm_path.is_file():
        raise CheckpointError(
            f"{directory} has no tokenizer.model (an InternLM2 SentencePiece model)"
        )
    config = _read_json(directory / "tokenizer_config.json")
    special_map = _read_json(directory / "special_tokens_map.json")
    added_json = _read_json(directory / "added_tokens.json")

    pairs: dict[int, Any] = {}
    for key, value in (config.get("added_tokens_decoder") or {}).items():
        if not str(key).isdigit():
            raise CheckpointError(
                f"added_tokens_decoder key {key!r} in tokenizer_config.json is not an id"
            )
        pairs[int(key)] = value
    for content, token_id in added_json.items():
        if not isinstance(token_id, int):
            raise CheckpointError(f"added_tokens.json maps {content!r} to {token_id!r}, not an id")
        known = _token_text(pairs.get(token_id))
        if known is not None and known != content:
            raise CheckpointError(
                f"Id {token_id} is {known!r} in tokenizer_config.json but {content!r} in added_tokens.json"
            )
        pairs.setdefault(token_id, {"content": content, "special": True})

    names: dict[str, str | None] = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
    }
    for source in (config, special_map):
        for role in names:
            if role in source:
                names[role] = _token_text(source[role])
    extras: list[str] = []
    for source in (config, special_map):
        for key in ("additional_special_tokens", "extra_special_tokens"):
            for value in source.get(key) or ():
                text = _token_text(value)
                if text is not None and text not in extras:
                    extras.append(text)

    template = chat_template if chat_template is not None else config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    max_length = config.get("model_max_length")
    if not isinstance(max_length, int) or max_length > 10**12:
        max_length = None

    # Extra special tokens that are not yet in the vocabulary (e.g. InternVL tokens listed only in
    # special_tokens_map.json) are appended like added tokens without an id.
    listed = {_token_text(v) for v in pairs.values()}
    added: list[Any] = [
        {"id": i, **(v if isinstance(v, Mapping) else {"content": _token_text(v)})}
        for i, v in sorted(pairs.items())
    ]
    added += [{"content": t, "special": True} for t in extras if t not in listed]

    return convert_internlm2_tokenizer(
        spm_path,
        added,
        add_bos_token=bool(config.get("add_bos_token", True)),
        add_eos_token=bool(config.get("add_eos_token", False)),
        add_internvl_tokens=add_internvl_tokens,
        extra_special_tokens=extras,
        chat_template=template,
        model_max_length=max_length,
        padding_side=config.get("padding_side"),
        **names,
    )


CHAT_TOKENS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>", "<|end|>")


def train_bpe_tokenizer(
    texts: Sequence[str],
    vocab_size: int = 1024,
    *,
    chat_template: str | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer for models trained from scratch (the demo model,
    the miniature experiments): `<unk>`=0, `<s>`=1, `</s>`=2, the chat tokens and InternVL's 9
    special tokens, BOS added in front of every text (as InternLM2 does), `</s>` as padding.
    Byte-level, so any text (also the Chinese default system prompt) encodes losslessly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>", *CHAT_TOKENS, *INTERNVL_SPECIAL_TOKENS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>",
        additional_special_tokens=list(specials[3:]), chat_template=chat_template,
    )
    if fast.convert_tokens_to_ids("<s>") != 1 or fast.convert_tokens_to_ids("</s>") != 2:
        raise CheckpointError("unexpected special-token ids in the trained tokenizer")
    return fast
