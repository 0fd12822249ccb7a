"""Checkpoint conversion between the authors' remote-code layout and ours.

Official InternVL-X / InternVL2 checkpoints hold `vision_model.*` (InternViT with fused `qkv`),
`projector.*` (PVTC) or `mlp1.*` (MLP), and `language_model.*` (InternLM2 with fused,
per-KV-head-grouped `wqkv`, or Qwen2/Llama keys). `convert_official` writes our Hugging Face
directory; `convert_to_official` goes back, losslessly. Both refuse incomplete checkpoints and
name the offending keys.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration import InternVLXConfig
from .errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

# Official config keys that carry no meaning for us (bookkeeping of transformers 4.x configs).
_CONFIG_JUNK = {
    "_name_or_path", "architectures", "auto_map", "transformers_version", "torch_dtype",
    "_commit_hash", "attn_implementation", "use_flash_attn", "id2label", "label2id",
}

# ------------------------------------------------------------------ reading files


def read_safetensors_dir(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Load every tensor of a checkpoint directory (single file or sharded with an index).

    Returns the state dict and the safetensors metadata of the first file.
    """
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from e
        files = sorted({path / f for f in weight_map.values()})
    elif (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    else:
        raise CheckpointError(
            f"no model.safetensors or model.safetensors.index.json in {path}; only safetensors "
            f"checkpoints are supported (convert .bin files with the safetensors tools first)"
        )
    tensors: StateDict = {}
    metadata: dict[str, str] = {}
    for file in files:
        if not file.exists():
            raise CheckpointError(f"shard {file} listed in the index is missing")
        try:
            with safe_open(str(file), framework="pt") as f:
                metadata = metadata or (f.metadata() or {})
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"cannot read {file}: {e}") from e
    return tensors, metadata


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


# ------------------------------------------------------------------ configs


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _CONFIG_JUNK}


def _internlm2_to_llama(llm: dict[str, Any]) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(llm.get("rope_theta", 10000))}
    scaling = llm.get("rope_scaling")
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind not in ("dynamic", "linear"):
            raise ConfigError(f"InternLM2 rope_scaling type {kind!r} is not supported (dynamic, linear)")
        rope.update(rope_type=kind, factor=float(scaling["factor"]))
    return {
        "model_type": "llama",
        "vocab_size": llm["vocab_size"],
        "hidden_size": llm["hidden_size"],
        "intermediate_size": llm["intermediate_size"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_attention_heads": llm["num_attention_heads"],
        "num_key_value_heads": llm.get("num_key_value_heads", llm["num_attention_heads"]),
        "max_position_embeddings": llm.get("max_position_embeddings", 2048),
        "rms_norm_eps": llm.get("rms_norm_eps", 1e-6),
        "hidden_act": llm.get("hidden_act", "silu"),
        "rope_parameters": rope,
        "attention_bias": bool(llm.get("bias", False)),
        "mlp_bias": False,
        "tie_word_embeddings": bool(llm.get("tie_word_embeddings", False)),
        "bos_token_id": llm.get("bos_token_id", 1),
        "eos_token_id": llm.get("eos_token_id", 2),
        "pad_token_id": llm.get("pad_token_id", 0),
    }


def official_config_to_ours(
    official: dict[str, Any], *, image_token_id: int, projector_type: str
) -> InternVLXConfig:
    """Translate an official `InternVLChatConfig` dict into an `InternVLXConfig`."""
    if official.get("ps_version", "v2") != "v2":
        raise ConfigError(
            f"ps_version {official.get('ps_version')!r} is not supported: only InternVL's 'v2' "
            f"pixel-shuffle ordering (used by InternVL2 and InternVL-X) is implemented"
        )
    if official.get("select_layer", -1) != -1:
        raise ConfigError(f"select_layer {official['select_layer']} is not supported (only -1)")
    vis = official["vision_config"]
    image_size = official.get("force_image_size") or vis["image_size"]
    vision = {
        "hidden_size": vis["hidden_size"],
        "num_hidden_layers": vis["num_hidden_layers"],
        "num_attention_heads": vis["num_attention_heads"],
        "intermediate_size": vis["intermediate_size"],
        "image_size": image_size,
        "patch_size": vis["patch_size"],
        "attention_bias": bool(vis.get("qkv_bias", True)),
        "use_qk_norm": bool(vis.get("qk_normalization", False)),
        "norm_type": vis.get("norm_type", "layer_norm"),
        "layer_norm_eps": vis.get("layer_norm_eps", 1e-6),
        "hidden_act": vis.get("hidden_act", "gelu"),
        "use_mean_pooling": True,
    }
    llm = official["llm_config"]
    kind = llm.get("model_type")
    if kind == "internlm2":
        text = _internlm2_to_llama(llm)
    elif kind in ("qwen2", "llama"):
        text = _clean(llm)
    else:
        raise ConfigError(f"LLM type {kind!r} is not supported (internlm2, qwen2, llama)")
    return InternVLXConfig(
        vision_config=vision,
        text_config=text,
        projector={"type": projector_type, "downsample_ratio": official.get("downsample_ratio", 0.5)},
        tiling={
            "min_tiles": official.get("min_dynamic_patch", 1),
            "max_tiles": official.get("max_dynamic_patch", 12),
            "policy": "length" if projector_type == "pvtc" else "stock",
            "thumbnail": bool(official.get("use_thumbnail", True)),
        },
        image_token_id=image_token_id,
        template=official.get("template", "internlm2-chat"),
    )


# ------------------------------------------------------------------ key mapping

# Renaming rules as (official, ours) templates; `{name}` fields match the patterns below and
# are carried across, so each table serves both directions.
_FIELDS = {
    "n": r"\d+", "i": r"\d", "wb": "weight|bias", "fc": r"fc\d", "qk": "q_norm|k_norm",
    "branch": "attn_local|attn_global", "rest": ".+", "mlp": r"mlp[123]\.\d\.weight",
}
_VISION_RENAMES = [
    ("embeddings.class_embedding", "embeddings.cls_token"),
    ("embeddings.position_embedding", "embeddings.position_embeddings"),
    ("embeddings.patch_embedding.{wb}", "embeddings.patch_embeddings.projection.{wb}"),
    ("encoder.layers.{n}.ls{i}", "encoder.layer.{n}.lambda_{i}"),
    ("encoder.layers.{n}.attn.proj.{wb}", "encoder.layer.{n}.attention.projection_layer.{wb}"),
    ("encoder.layers.{n}.attn.{qk}.{wb}", "encoder.layer.{n}.attention.{qk}.{wb}"),
    ("encoder.layers.{n}.norm1.{wb}", "encoder.layer.{n}.layernorm_before.{wb}"),
    ("encoder.layers.{n}.norm2.{wb}", "encoder.layer.{n}.layernorm_after.{wb}"),
    ("encoder.layers.{n}.mlp.{fc}.{wb}", "encoder.layer.{n}.mlp.{fc}.{wb}"),
]
_INTERNLM2_RENAMES = [
    ("model.tok_embeddings.weight", "model.embed_tokens.weight"),
    ("model.norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("model.layers.{n}.attention.wo.{wb}", "model.layers.{n}.self_attn.o_proj.{wb}"),
    ("model.layers.{n}.feed_forward.w1.weight", "model.layers.{n}.mlp.gate_proj.weight"),
    ("model.layers.{n}.feed_forward.w3.weight", "model.layers.{n}.mlp.up_proj.weight"),
    ("model.layers.{n}.feed_forward.w2.weight", "model.layers.{n}.mlp.down_proj.weight"),
    ("model.layers.{n}.attention_norm.weight", "model.layers.{n}.input_layernorm.weight"),
    ("model.layers.{n}.ffn_norm.weight", "model.layers.{n}.post_attention_layernorm.weight"),
]
_PVTC_RENAMES = [
    ("{branch}.{rest}", "{branch}.0.{rest}"),
    ("cls_scale", "cls_scale"),
    ("{mlp}", "{mlp}"),
]
_MLP_RENAMES = [("{i}.{wb}", "mlp.{i}.{wb}")]


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if k % 2 == 0 else f"(?P<{part}>{_FIELDS[part]})" for k, part in enumerate(parts)
    )
    return re.compile(regex)


def _rename(key: str, rules: list[tuple[str, str]], what: str, reverse: bool = False) -> str:
    for official, ours in rules:
        source, target = (ours, official) if reverse else (official, ours)
        m = _template_regex(source).fullmatch(key)
        if m:
            return target.format(**m.groupdict())
    raise CheckpointError(f"unexpected {what} key {key!r}: no conversion rule matches it")


def _split_wqkv(w: torch.Tensor, heads: int, kv_heads: int) -> tuple[torch.Tensor, ...]:
    """InternLM2's fused `wqkv` rows are grouped per KV head as [q_0..q_{g-1}, k, v]."""
    g = heads // kv_heads
    head_dim = w.shape[0] // (kv_heads * (g + 2))
    blocks = w.reshape(kv_heads, g + 2, head_dim, *w.shape[1:])
    q = blocks[:, :g].reshape(heads * head_dim, *w.shape[1:])
    k = blocks[:, g].reshape(kv_heads * head_dim, *w.shape[1:])
    v = blocks[:, g + 1].reshape(kv_heads * head_dim, *w.shape[1:])
    return q.contiguous(), k.contiguous(), v.contiguous()


def _fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    g = heads // kv_heads
    head_dim = k.shape[0] // kv_heads
    rest = q.shape[1:]
    blocks = torch.cat(
        [
            q.reshape(kv_heads, g, head_dim, *rest),
            k.reshape(kv_heads, 1, head_dim, *rest),
            v.reshape(kv_heads, 1, head_dim, *rest),
        ],
        dim=1,
    )
    return blocks.reshape(-1, *rest).contiguous()


def official_to_ours(sd: StateDict, config: InternVLXConfig, llm_type: str) -> StateDict:
    """Rename/split an official state dict into our parameter names."""
    text = config.text_config
    out: StateDict = {}
    for key, t in sd.items():
        if key.startswith("vision_model."):
            sub = key[len("vision_model."):]
            m = re.fullmatch(r"encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", sub)
            if m:
                for name, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0), strict=True):
                    out[f"vision_model.encoder.layer.{m[1]}.attention.{name}.{m[2]}"] = part.contiguous()
            else:
                out["vision_model." + _rename(sub, _VISION_RENAMES, "vision")] = t
        elif key.startswith("projector."):
            out["projector." + _rename(key[len("projector."):], _PVTC_RENAMES, "PVTC projector")] = t
        elif key.startswith("mlp1."):
            out["projector." + _rename(key[len("mlp1."):], _MLP_RENAMES, "MLP projector")] = t
        elif key.startswith("language_model."):
            sub = key[len("language_model."):]
            if llm_type != "internlm2":
                out[key] = t
                continue
            m = re.fullmatch(r"model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)", sub)
            if m:
                parts = _split_wqkv(t, text.num_attention_heads, text.num_key_value_heads)
                for name, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                    out[f"language_model.model.layers.{m[1]}.self_attn.{name}.{m[2]}"] = part
            else:
                out["language_model." + _rename(sub, _INTERNLM2_RENAMES, "InternLM2")] = t
        else:
            raise CheckpointError(f"unexpected key {key!r}: not under vision_model/projector/mlp1/language_model")
    return out


def ours_to_official(sd: StateDict, config: InternVLXConfig, llm_type: str = "internlm2") -> StateDict:
    """The inverse of `official_to_ours` (our names → the authors' layout)."""
    if config.projector.type == "pvtc" and config.projector.depth != 1:
        raise ConfigError("the official PVTC layout has exactly one block per branch (depth 1)")
    text = config.text_config
    out: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        m = re.fullmatch(r"vision_model\.encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)", key)
        if m:
            fused.setdefault(f"vision_model.encoder.layers.{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = t
            continue
        m = re.fullmatch(r"language_model\.model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key)
        if m and llm_type == "internlm2":
            fused.setdefault(f"language_model.model.layers.{m[1]}.attention.wqkv.{m[3]}", {})[m[2]] = t
            continue
        if key.startswith("lvtc."):
            raise ConfigError(
                f"{key}: the authors' layout has no LVTC (it was never released); export a model "
                f"without LVTC or keep the internvlx format"
            )
        if key.startswith("vision_model."):
            out["vision_model." + _rename(key[13:], _VISION_RENAMES, "vision", reverse=True)] = t
        elif key.startswith("projector.") and config.projector.type == "pvtc":
            out["projector." + _rename(key[10:], _PVTC_RENAMES, "PVTC projector", reverse=True)] = t
        elif key.startswith("projector."):
            out["mlp1." + _rename(key[10:], _MLP_RENAMES, "MLP projector", reverse=True)] = t
        elif key.startswith("language_model.") and llm_type == "internlm2":
            out["language_model." + _rename(key[15:], _INTERNLM2_RENAMES, "LLM", reverse=True)] = t
        elif key.startswith("language_model."):
            out[key] = t
        else:
            raise CheckpointError(f"unexpected key {key!r} in an internvlx state dict")
    for key, parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{key}: missing {sorted({'q', 'k', 'v'} - set(parts))} projection(s)")
        if key.startswith("vision_model."):
            out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        else:
            out[key] = _fuse_wqkv(parts["q"], parts["k"], parts["v"], text.num_attention_heads, text.num_key_value_heads)
    return out


# ------------------------------------------------------------------ checking and writing


def expected_shapes(config: InternVLXConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of our model for `config`, built on the meta device."""
    from .modeling import InternVLXForConditionalGeneration

    with torch.device("meta"):
        model = InternVLXForConditionalGeneration(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.text_config.tie_word_embeddings:
        shapes.pop("language_model.lm_head.weight", None)
    return shapes


def check_state_dict(sd: StateDict, expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise `CheckpointError` naming every missing, unexpected or mis-shaped key."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {list(sd[k].shape)} vs model {list(expected[k])}"
        for k in set(sd) & set(expected)
        if tuple(sd[k].shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_head(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_head(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {_head(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model configuration: " + "; ".join(problems))


def _head(items: list[str], n: int = 12) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def save_state_dict(sd: StateDict, dst: Path, max_shard_bytes: int = 5 * 2**30) -> None:
    """Write safetensors shards (+ index when more than one) in the Hugging Face layout."""
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(sd, max_shard_size=max_shard_bytes)
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: sd[k].contiguous() for k in keys}, str(dst / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
                 "weight_map": split.tensor_to_filename}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _cast(sd: StateDict, dtype: torch.dtype | None) -> StateDict:
    if dtype is None:
        return sd
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _load_tokenizer(src: Path):
    """The checkpoint's tokenizer as a fast tokenizer, or None when it ships none."""
    if (src / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    if (src / "tokenizer.model").exists():
        from .tokenizer import load_internlm2_tokenizer_dir

        return load_internlm2_tokenizer_dir(src)
    return None


def convert_official(
    src: str | Path,
    dst: str | Path,
    *,
    image_token_id: int | None = None,
    dtype: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> InternVLXConfig:
    """Convert an official InternVL-X (PVTC) or InternVL2 (MLP) checkpoint into our format.

    The `<IMG_CONTEXT>` id comes from the checkpoint's tokenizer when it has one, otherwise
    from `image_token_id`. Nothing is written unless every key maps and every shape matches.
    """
    src, dst = Path(src), Path(dst)
    say = progress or (lambda msg: logger.info(msg))
    official = read_json(src / "config.json")
    say(f"reading {src}")
    sd, _ = read_safetensors_dir(src)
    has_pvtc = any(k.startswith("projector.") for k in sd)
    has_mlp = any(k.startswith("mlp1.") for k in sd)
    if has_pvtc == has_mlp:
        raise CheckpointError(
            f"{src}: expected exactly one projector (projector.* for InternVL-X, mlp1.* for "
            f"InternVL2), found {'both' if has_pvtc else 'neither'}"
        )
    tokenizer = _load_tokenizer(src)
    if tokenizer is not None:
        tid = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        if tid is None or tid == tokenizer.unk_token_id:
            raise CheckpointError(f"the tokenizer in {src} has no <IMG_CONTEXT> token")
        if image_token_id is not None and image_token_id != tid:
            raise ConfigError(f"--image-token-id {image_token_id} disagrees with the tokenizer's <IMG_CONTEXT> id {tid}")
        image_token_id = tid
    if image_token_id is None:
        raise ConfigError(f"{src} ships no tokenizer: pass image_token_id (--image-token-id) for <IMG_CONTEXT>")
    config = official_config_to_ours(
        official, image_token_id=image_token_id, projector_type="pvtc" if has_pvtc else "mlp"
    )
    llm_type = official["llm_config"].get("model_type")
    ours = official_to_ours(sd, config, llm_type)
    check_state_dict(ours, expected_shapes(config), str(src))
    ours = _cast(ours, DTYPES[dtype] if dtype else None)
    dst.mkdir(parents=True, exist_ok=True)
    config.dtype = next(iter(ours.values())).dtype
    config.save_pretrained(dst)
    save_state_dict(ours, dst)
    if tokenizer is not None:
        from .processing import InternVLXProcessor
        from .templates import get_template

        tokenizer.chat_template = get_template(config.template).chat_template
        InternVLXProcessor.from_config(config, tokenizer).save_pretrained(dst)  # tokenizer files too
    _write_generation_config(config, dst)
    say(f"wrote {dst} ({sum(t.numel() for t in ours.values()):,} parameters)")
    return config


def _write_generation_config(config: InternVLXConfig, dst: Path) -> None:
    from transformers import GenerationConfig

    text = config.text_config
    GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id
    ).save_pretrained(dst)


def convert_to_official(src: str | Path, dst: str | Path, *, llm_type: str = "internlm2") -> None:
    """Write one of our model directories in the authors' layout (config + safetensors)."""
    src, dst = Path(src), Path(dst)
    config = InternVLXConfig.from_pretrained(src)
    sd, _ = read_safetensors_dir(src)
    check_state_dict(sd, expected_shapes(config), str(src))
    text_type = config.text_config.model_type
    if llm_type == "internlm2" and text_type != "llama":
        raise ConfigError(f"only a Llama-type LLM can be written as InternLM2, this one is {text_type!r}")
    official = ours_to_official(sd, config, llm_type)
    dst.mkdir(parents=True, exist_ok=True)
    save_state_dict(official, dst)
    (dst / "config.json").write_text(json.dumps(official_config(config, llm_type), indent=2))


def official_config(config: InternVLXConfig, llm_type: str) -> dict[str, Any]:
    """The authors' `InternVLChatConfig` dict for one of our configs."""
    v, t = config.vision_config, config.text_config
    if llm_type == "internlm2":
        rope = t.rope_parameters or {}
        llm: dict[str, Any] = {
            "model_type": "internlm2", "architectures": ["InternLM2ForCausalLM"],
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
            "max_position_embeddings": t.max_position_embeddings, "rms_norm_eps": t.rms_norm_eps,
            "hidden_act": t.hidden_act, "bias": bool(t.attention_bias),
            "rope_theta": rope.get("rope_theta", 10000.0),
            "rope_scaling": (
                {"type": rope["rope_type"], "factor": rope["factor"]}
                if rope.get("rope_type") in ("dynamic", "linear") else None
            ),
            "tie_word_embeddings": bool(t.tie_word_embeddings),
            "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id, "pad_token_id": t.pad_token_id,
        }
    else:
        llm = t.to_dict()
    return {
        "model_type": "internvl_chat",
        "architectures": ["InternVLChatModel"],
        "downsample_ratio": config.projector.downsample_ratio,
        "ps_version": "v2",
        "select_layer": -1,
        "force_image_size": config.tile_size,
        "template": config.template,
        "dynamic_image_size": True,
        "use_thumbnail": config.tiling.thumbnail,
        "min_dynamic_patch": config.tiling.min_tiles,
        "max_dynamic_patch": config.tiling.max_tiles,
        "vision_config": {
            "model_type": "intern_vit_6b", "architectures": ["InternVisionModel"],
            "hidden_size": v.hidden_size, "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads, "intermediate_size": v.intermediate_size,
            "image_size": config.tile_size, "patch_size": int(v.patch_size[0]),
            "qkv_bias": bool(v.attention_bias), "qk_normalization": bool(v.use_qk_norm),
            "norm_type": v.norm_type, "layer_norm_eps": v.layer_norm_eps, "hidden_act": v.hidden_act,
            "num_channels": 3, "drop_path_rate": 0.0, "use_flash_attn": False,
        },
        "llm_config": llm,
    }
