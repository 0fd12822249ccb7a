"""InternVL chat templates, ``<image>`` expansion and image-safe prompt encoding.

Each template is a Jinja2 ``chat_template`` string, usable with transformers'
``tokenizer.apply_chat_template(messages, chat_template=..., add_generation_prompt=..., tokenize=False)``,
plus the metadata the authors keep beside it (default system message, roles, separators, stop
strings). :func:`render_prompt` renders through that same Jinja string, with transformers' own
chat-template renderer, so there is one source of truth.

The templates reproduce ``get_prompt()`` of the authors' ``conversation.py`` byte for byte,
including its quirks:

* the MPT separator style writes **no newline** after ``<|im_end|>`` / ``<|end|>``
  (``...<|im_end|><|im_start|>user\\n...``), except ``internvl2_5``, whose separator is
  ``"<|im_end|>\\n"``;
* an empty-string message is treated like ``None``: the role is written with no text and no
  separator (so a trailing empty assistant message looks like a generation prompt);
* an empty system message still writes ``<|im_start|>system\\n<|im_end|>``, and braces in a
  system message are written as they are;
* ``internvl_zh`` ignores its system template, writes ``system_message + " "``, then
  ``<human>: ... <bot>: ...</s>``, the separator after each message alternating between
  ``" "`` and ``"</s>"`` by the message's position.

Sources of the template facts (strings only; no code was copied):

* ``internlm2-chat``, ``Hermes-2``, ``phi3-chat``, ``internvl_zh``: the InternVL-X repository
  (``ludc506/InternVL-X`` @ ``50896f93``, ``internvl_chat/internvl/conversation.py``), as recorded
  in ``fixtures/templates/conversation_prompts.json``.
* ``internvl2_5`` (not registered in InternVL-X): OpenGVLab/InternVL,
  ``internvl_chat/internvl/conversation.py`` at commit
  ``c981100b38497e66b666f5e24239a8ae382f89dc``: ``system_template='<|im_start|>system\\n{system_message}'``,
  ``system_message='你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。'``,
  ``roles=('<|im_start|>user\\n', '<|im_start|>assistant\\n')``, MPT style, ``sep='<|im_end|>\\n'``
  (with a newline, unlike ``internlm2-chat``), no ``stop_str`` / ``stop_token_ids``. InternVL's
  ``chat()`` uses ``template.sep.strip()`` (``<|im_end|>``) as the EOS token.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers.utils.chat_template_utils import render_jinja_template

from .errors import ConfigError, PromptError

__all__ = [
    "IMAGE_PLACEHOLDER",
    "IMG_CONTEXT_TOKEN",
    "IMG_END_TOKEN",
    "IMG_START_TOKEN",
    "ChatQuery",
    "ChatTemplate",
    "TEMPLATES",
    "assistant_spans",
    "available_templates",
    "build_chat_query",
    "encode_prompt",
    "expand_image_placeholders",
    "get_template",
    "render_prompt",
]

IMAGE_PLACEHOLDER = "<image>"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"

_INTERNVL2_SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
_INTERNVL2_5_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


@dataclass(frozen=True)
class ChatTemplate:
    """One conversation template: its Jinja ``chat_template`` and the authors' metadata.

    ``roles`` are the literal prefixes written before a user / assistant message.
    ``stop_token_ids`` are the ids the authors list for *their* tokenizer (kept for reference;
    use :attr:`eos_token` / :attr:`stop_strings` with your own tokenizer instead).
    """

    name: str
    style: str  # "mpt" or "internvl_zh"
    system_template: str
    system_message: str
    roles: tuple[str, str]
    sep: str
    sep2: str | None
    stop_str: str | None
    stop_token_ids: tuple[int, ...] | None
    chat_template: str
    source: str

    @property
    def eos_token(self) -> str:
        """The token generation stops at: the separator without surrounding whitespace.

        This is what the authors' ``chat()`` passes as ``eos_token_id`` (InternVL-X converts
        ``template.sep``, InternVL 2.5 ``template.sep.strip()``; equal for every template but
        ``internvl2_5``).
        """
        return self.sep.strip()

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Strings that end an answer: :attr:`eos_token`, plus ``stop_str`` where there is one."""
        extra = (self.stop_str,) if self.stop_str and self.stop_str != self.eos_token else ()
        return (self.eos_token, *extra)

    def strip_response(self, text: str) -> str:
        """Cut a decoded answer at the first :attr:`eos_token` and strip it, like ``chat()`` does."""
        return text.split(self.eos_token)[0].strip()


def _lit(text: str) -> str:
    """A Jinja string literal holding ``text`` exactly (Jinja unescapes like Python)."""
    return json.dumps(text, ensure_ascii=False)


def _message_loop(default_system: str) -> str:
    """Jinja preamble: pick the system message and the messages to render."""
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system_message = messages[0]['content'] if messages[0]['content'] is defined"
        " and messages[0]['content'] is not none else '' -%}"
        "{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}"
        f"{{%- set system_message = {_lit(default_system)} -%}}"
        "{%- set loop_messages = messages -%}"
        "{%- endif -%}"
    )


def _role_select(user_role: str, assistant_role: str) -> str:
    """Jinja: set ``role`` and ``content`` ('' when missing or None) for ``message``."""
    return (
        "{%- if message['role'] == 'user' -%}"
        f"{{%- set role = {_lit(user_role)} -%}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{%- set role = {_lit(assistant_role)} -%}}"
        "{%- else -%}"
        "{{- raise_exception('Only user and assistant messages may follow the optional leading system"
        " message, got role ' + message['role']|string) -}}"
        "{%- endif -%}"
        "{%- set content = message['content'] if message['content'] is defined"
        " and message['content'] is not none else '' -%}"
    )


def _mpt_chat_template(
    system_template: str, default_system: str, roles: tuple[str, str], sep: str
) -> str:
    """MPT style: ``system_prompt + sep``, then ``role + text + sep`` or a bare ``role``."""
    prefix, suffix = system_template.split("{system_message}")
    return (
        _message_loop(default_system)
        + f"{{{{- {_lit(prefix)} + system_message + {_lit(suffix + sep)} -}}}}"
        + "{%- for message in loop_messages -%}"
        + _role_select(*roles)
        + "{%- if content -%}"
        + f"{{{{- role + content + {_lit(sep)} -}}}}"
        + "{%- else -%}{{- role -}}{%- endif -%}"
        + "{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{{{{- {_lit(roles[1])} -}}}}{{%- endif -%}}"
    )


def _internvl_zh_chat_template(
    default_system: str, roles: tuple[str, str], seps: tuple[str, str]
) -> str:
    """INTERNVL_ZH style: ``system + seps[0]``, then ``role: text + seps[i % 2]`` or ``role:``."""
    return (
        _message_loop(default_system)
        + f"{{{{- system_message + {_lit(seps[0])} -}}}}"
        + "{%- for message in loop_messages -%}"
        + _role_select(*roles)
        + "{%- if content -%}"
        + f"{{{{- role + ': ' + content + ({_lit(seps[0])} if loop.index0 % 2 == 0 else {_lit(seps[1])}) -}}}}"
        + "{%- else -%}{{- role + ':' -}}{%- endif -%}"
        + "{%- endfor -%}"
        + f"{{%- if add_generation_prompt -%}}{{{{- {_lit(roles[1] + ':')} -}}}}{{%- endif -%}}"
    )


def _mpt(
    name: str,
    system_template: str,
    system_message: str,
    roles: tuple[str, str],
    sep: str,
    source: str,
    stop_str: str | None = None,
    stop_token_ids: tuple[int, ...] | None = None,
) -> ChatTemplate:
    return ChatTemplate(
        name=name,
        style="mpt",
        system_template=system_template,
        system_message=system_message,
        roles=roles,
        sep=sep,
        sep2=None,
        stop_str=stop_str,
        stop_token_ids=stop_token_ids,
        chat_template=_mpt_chat_template(system_template, system_message, roles, sep),
        source=source,
    )


_X_SOURCE = "ludc506/InternVL-X@50896f93 internvl_chat/internvl/conversation.py"
_CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")

TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        _mpt(
            "internlm2-chat",
            "<|im_start|>system\n{system_message}",
            _INTERNVL2_SYSTEM,
            _CHATML_ROLES,
            "<|im_end|>",
            _X_SOURCE,
            stop_token_ids=(2, 92543, 92542),
        ),
        _mpt(
            "Hermes-2",
            "<|im_start|>system\n{system_message}",
            _INTERNVL2_SYSTEM,
            _CHATML_ROLES,
            "<|im_end|>",
            _X_SOURCE,
            stop_str="<|endoftext|>",
            stop_token_ids=(2, 6, 7, 8),
        ),
        _mpt(
            "phi3-chat",
            "<|system|>\n{system_message}",
            _INTERNVL2_SYSTEM,
            ("<|user|>\n", "<|assistant|>\n"),
            "<|end|>",
            _X_SOURCE,
            stop_token_ids=(2, 32000, 32007),
        ),
        ChatTemplate(
            name="internvl_zh",
            style="internvl_zh",
            system_template="",
            system_message="",
            roles=("<human>", "<bot>"),
            sep="</s>",
            sep2=" ",
            stop_str=None,
            stop_token_ids=None,
            chat_template=_internvl_zh_chat_template("", ("<human>", "<bot>"), (" ", "</s>")),
            source=_X_SOURCE,
        ),
        _mpt(
            "internvl2_5",
            "<|im_start|>system\n{system_message}",
            _INTERNVL2_5_SYSTEM,
            _CHATML_ROLES,
            "<|im_end|>\n",
            "OpenGVLab/InternVL@c981100b38497e66b666f5e24239a8ae382f89dc "
            "internvl_chat/internvl/conversation.py",
        ),
    )
}


def available_templates() -> list[str]:
    """Names accepted by :func:`get_template`."""
    return sorted(TEMPLATES)


def get_template(name: str | ChatTemplate) -> ChatTemplate:
    """The template called ``name`` (a :class:`ChatTemplate` is returned as it is)."""
    if isinstance(name, ChatTemplate):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown chat template {name!r}; choose one of {available_templates()}"
        ) from None


def _validate_messages(
    messages: Sequence[Mapping[str, Any]], system_message: str | None
) -> list[dict]:
    checked: list[dict] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise PromptError(f"Message {i} must be a mapping with a 'role' key, got {message!r}")
        role, content = message["role"], message.get("content")
        if role == "system":
            if i != 0:
                raise PromptError(
                    f"A system message may only come first, found one at position {i}"
                )
            if system_message is not None:
                raise PromptError(
                    "Give the system message either as a leading system message or as"
                    " system_message=..., not both"
                )
            if not isinstance(content, str):
                raise PromptError(f"The system message must be a string, got {content!r}")
        elif role not in ("user", "assistant"):
            raise PromptError(f"Message {i} has role {role!r}; use 'system', 'user' or 'assistant'")
        elif content is not None and not isinstance(content, str):
            raise PromptError(
                f"Message {i} content must be a string or None, got {type(content).__name__}"
            )
        checked.append({"role": role, "content": content})
    if system_message is not None:
        if not isinstance(system_message, str):
            raise PromptError(f"system_message must be a string, got {system_message!r}")
        checked.insert(0, {"role": "system", "content": system_message})
    return checked


def render_prompt(
    template: str | ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    system_message: str | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """Render ``messages`` with a template, exactly as the authors' ``get_prompt()`` does.

    ``messages`` are ``{"role": "user" | "assistant", "content": str | None}``, optionally
    preceded by one ``{"role": "system", "content": str}``. A trailing assistant message with
    ``None`` content is the generation prompt (the bare assistant role); ``None`` or ``""``
    anywhere else writes the bare role too, as the authors' code does.
    ``system_message=None`` keeps the template's default. ``add_generation_prompt`` appends the
    assistant role, like transformers' flag of that name.

    Rendering goes through :attr:`ChatTemplate.chat_template` with transformers' chat-template
    renderer, so the result equals ``tokenizer.apply_chat_template(..., tokenize=False)``.
    """
    chat_template = get_template(template).chat_template
    checked = _validate_messages(messages, system_message)
    rendered, _ = render_jinja_template(
        conversations=[checked],
        chat_template=chat_template,
        add_generation_prompt=add_generation_prompt,
    )
    return rendered[0]


def expand_image_placeholders(
    prompt: str,
    tiles_per_image: Sequence[int],
    tokens_per_tile: int,
    *,
    placeholder: str = IMAGE_PLACEHOLDER,
    image_token: str = IMG_CONTEXT_TOKEN,
    start_token: str = IMG_START_TOKEN,
    end_token: str = IMG_END_TOKEN,
) -> tuple[str, list[tuple[int, int]]]:
    """Replace the i-th ``<image>`` with ``<img>`` + ``<IMG_CONTEXT>`` x (tokens_per_tile x tiles_i) + ``</img>``.

    Images take the placeholders in order (the first remaining ``<image>`` of the whole prompt,
    history included, like the authors' ``query.replace('<image>', ..., 1)``). Returns the
    expanded prompt and the ``(start, end)`` character span of each inserted block.

    Unlike the authors' code, which silently leaves extra placeholders as text and ignores extra
    images, a different number of placeholders and images raises :class:`PromptError`.
    """
    tiles = [int(t) for t in tiles_per_image]
    if tokens_per_tile <= 0:
        raise PromptError(f"tokens_per_tile must be positive, got {tokens_per_tile}")
    if any(t <= 0 for t in tiles):
        raise PromptError(f"Every image needs at least one tile, got tiles_per_image={tiles}")
    found = prompt.count(placeholder)
    if found != len(tiles):
        raise PromptError(
            f"The prompt has {found} {placeholder!r} placeholder(s) but {len(tiles)} image(s) were"
            f" given (tiles_per_image={tiles}); put exactly one {placeholder!r} where each image goes"
        )
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    cursor = 0
    for n_tiles in tiles:
        at = prompt.index(placeholder, cursor)
        pieces.append(prompt[cursor:at])
        length += at - cursor
        block = start_token + image_token * (tokens_per_tile * n_tiles) + end_token
        spans.append((length, length + len(block)))
        pieces.append(block)
        length += len(block)
        cursor = at + len(placeholder)
    pieces.append(prompt[cursor:])
    return "".join(pieces), spans


@dataclass(frozen=True)
class ChatQuery:
    """What :func:`build_chat_query` builds.

    ``query``: the expanded prompt; ``image_spans``: character spans of the inserted image
    blocks; ``question``: the question as it goes into the history (after any ``<image>\\n``
    prepend), as the authors' ``chat()`` returns it.
    """

    query: str
    image_spans: list[tuple[int, int]]
    question: str


def build_chat_query(
    template: str | ChatTemplate,
    question: str,
    tiles_per_image: Sequence[int] | None,
    tokens_per_tile: int,
    history: Sequence[tuple[str, str]] | None = None,
    system_message: str | None = None,
    *,
    total_tiles: int | None = None,
) -> ChatQuery:
    """Build the query string the way the authors' ``chat()`` / ``batch_chat()`` do.

    * ``tiles_per_image`` (their ``num_patches_list``): tiles of each image; ``None`` or empty
      means no image, and then a literal ``<image>`` in the text stays plain text (as theirs).
    * ``<image>\\n`` is prepended to the question when ``history is None``, there are images and
      the question has no ``<image>``.
    * The history turns and the question are rendered with the template, a generation prompt is
      added, and every ``<image>`` of the whole prompt is expanded (:func:`expand_image_placeholders`).
    * ``total_tiles`` (their ``pixel_values.shape[0]``), when given, must equal
      ``sum(tiles_per_image)``.

    Differences from the authors, on purpose: where they silently drop image tokens (more images
    than placeholders, e.g. a history with no ``<image>``) or leave a literal ``<image>`` (more
    placeholders than images), this raises :class:`PromptError`; their ``AssertionError`` on a
    tile-count mismatch is a :class:`PromptError` too.
    """
    tiles = list(tiles_per_image or [])
    if total_tiles is not None and total_tiles != sum(tiles):
        raise PromptError(
            f"{total_tiles} tiles were given but tiles_per_image={tiles} adds up to {sum(tiles)}"
        )
    if tiles and history is None and IMAGE_PLACEHOLDER not in question:
        question = IMAGE_PLACEHOLDER + "\n" + question
    messages: list[dict[str, str | None]] = []
    for old_question, old_answer in history or ():
        messages.append({"role": "user", "content": old_question})
        messages.append({"role": "assistant", "content": old_answer})
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": None})
    prompt = render_prompt(template, messages, system_message=system_message)
    if not tiles:
        return ChatQuery(query=prompt, image_spans=[], question=question)
    query, spans = expand_image_placeholders(prompt, tiles, tokens_per_tile)
    return ChatQuery(query=query, image_spans=spans, question=question)


def encode_prompt(
    tokenizer: Any,
    expanded_prompt: str,
    image_spans: Sequence[tuple[int, int]],
    image_token: str = IMG_CONTEXT_TOKEN,
    *,
    start_token: str = IMG_START_TOKEN,
    end_token: str = IMG_END_TOKEN,
    return_offsets: bool = False,
) -> list[int] | tuple[list[int], list[tuple[int, int]]]:
    """Token ids of an expanded prompt where only the inserted image blocks hold image tokens.

    The whole string is tokenized normally (fast tokenizer, with offsets, no BOS/EOS). Any
    ``<IMG_CONTEXT>`` / ``<img>`` / ``</img>`` token whose characters lie outside
    ``image_spans`` was typed by someone, not inserted for an image: that one token is replaced
    by the ids of its own text tokenized with ``split_special_tokens=True`` (ordinary
    sub-words). Added tokens already split the text around them, so the ids before and after it
    are unchanged. Raises :class:`PromptError` when the number of ``image_token`` ids differs
    from the number of ``image_token`` strings inside the spans (e.g. a tokenizer without that
    token).

    ``return_offsets=True`` returns ``(ids, offsets)``: the ``(start, end)`` character span of
    each id in ``expanded_prompt`` (every id that replaced a typed image token gets the span of
    that typed token).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise PromptError("encode_prompt needs a fast tokenizer (it uses offset mappings)")
    spans = [(int(a), int(b)) for a, b in image_spans]
    for a, b in spans:
        if not 0 <= a <= b <= len(expanded_prompt):
            raise PromptError(
                f"Image span {(a, b)} lies outside the prompt of length {len(expanded_prompt)}"
            )
    added = tokenizer.get_added_vocab()
    guarded = {added[t] for t in (image_token, start_token, end_token) if t in added}
    encoding = tokenizer(expanded_prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for token_id, (start, end) in zip(
        encoding["input_ids"], encoding["offset_mapping"], strict=True
    ):
        if token_id in guarded and not any(a <= start and end <= b for a, b in spans):
            literal = expanded_prompt[start:end]
            pieces = tokenizer(literal, add_special_tokens=False, split_special_tokens=True)[
                "input_ids"
            ]
            ids.extend(pieces)
            offsets.extend([(start, end)] * len(pieces))
        else:
            ids.append(token_id)
            offsets.append((start, end))
    expected = sum(expanded_prompt[a:b].count(image_token) for a, b in spans)
    image_id = added.get(image_token)
    got = 0 if image_id is None else sum(1 for i in ids if i == image_id)
    if got != expected:
        raise PromptError(
            f"The image spans hold {expected} {image_token!r} but the encoded prompt has {got};"
            f" the tokenizer must have {image_token!r} as an added token"
        )
    return (ids, offsets) if return_offsets else ids


def assistant_spans(
    template: str | ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    system_message: str | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """Render a complete conversation and locate, in the result, what the model must say.

    Returns ``(prompt, spans)``: ``prompt`` is :func:`render_prompt` of ``messages``; span *k*
    is the ``(start, end)`` character range of the *k*-th assistant message, i.e. its text
    **and** the separator the template writes after it (``<|im_end|>`` for ChatML templates,
    ``<|im_end|>\n`` for ``internvl2_5``, ``</s>`` for ``internvl_zh``): exactly the text a
    model has to generate after the prompt of the earlier turns plus the generation prompt.

    The spans are found by rendering prefixes (the messages before the turn with a bare
    assistant role, then the messages up to and including it) and checking that each
    rendering is a prefix of the next, so the result holds for any template whose rendering
    grows message by message (every one in :data:`TEMPLATES` does). Raises
    :class:`PromptError` for an assistant message without text (it would render as a bare
    role) or a template that is not prefix-stable for these messages.
    """
    full = render_prompt(template, messages, system_message)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") != "assistant":
            continue
        if not message.get("content"):
            raise PromptError(
                f"Assistant message {i} has no text; every assistant turn to train on needs some"
            )
        head = render_prompt(
            template, [*messages[:i], {"role": "assistant", "content": None}], system_message
        )
        upto = render_prompt(template, messages[: i + 1], system_message)
        if not (upto.startswith(head) and full.startswith(upto)):
            name = get_template(template).name
            raise PromptError(
                f"Template {name!r} does not render message {i} as a continuation of the earlier"
                " ones, so the assistant's text cannot be located"
            )
        spans.append((len(head), len(upto)))
    return full, spans
