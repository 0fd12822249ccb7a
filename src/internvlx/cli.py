"""`internvlx` command line: a thin layer over the library's public functions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import InternVLXError

Handler = Callable[[argparse.Namespace], int]


def _convert_official(args: argparse.Namespace) -> int:
    from .convert import convert_official

    convert_official(
        args.src, args.dst, image_token_id=args.image_token_id, dtype=args.dtype, progress=print
    )
    return 0


def _convert_to_official(args: argparse.Namespace) -> int:
    from .convert import convert_to_official

    convert_to_official(args.src, args.dst, llm_type=args.llm_type)
    print(f"wrote {args.dst}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert checkpoints between the authors' layout and ours")
    conv = p.add_subparsers(dest="direction", required=True)
    o = conv.add_parser("official", help="official InternVL-X / InternVL2 checkpoint -> internvlx directory")
    o.add_argument("src", help="official checkpoint directory (config.json + safetensors)")
    o.add_argument("dst", help="output directory")
    o.add_argument("--image-token-id", type=int, default=None,
                   help="<IMG_CONTEXT> id, needed only when the checkpoint ships no tokenizer")
    o.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="cast floating tensors (default: keep the checkpoint's dtype)")
    o.set_defaults(func=_convert_official)
    t = conv.add_parser("to-official", help="internvlx directory -> the authors' layout")
    t.add_argument("src")
    t.add_argument("dst")
    t.add_argument("--llm-type", choices=["internlm2", "llama"], default="internlm2",
                   help="write the LLM as InternLM2 (fused wqkv) or keep Llama/Qwen2 keys")
    t.set_defaults(func=_convert_to_official)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_convert]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="internvlx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InternVLXError as e:
        print(f"internvlx: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
