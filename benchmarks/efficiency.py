"""Efficiency benchmark: transformers' InternVL2, our InternVL2 baseline and InternVL-X (PVTC
r = 0.5 / 0.25, PVTC + LVTC, each with stock / length / area tiling), in one process,
interleaved, on the same random weights and images. The work is done by
`internvlx.bench.run_benchmark` (its docstring defines every figure); this script is the same
as `internvlx bench`.

    python benchmarks/efficiency.py --quick --out bench_results/quick       # CPU, a few minutes
    python benchmarks/efficiency.py --out bench_results/cpu                  # CPU, README numbers
    python benchmarks/efficiency.py --device cuda --preset internvlx-2b --out bench_results/2b
    python benchmarks/efficiency.py --device cuda --preset internvlx-8b --quick
"""

from __future__ import annotations

import argparse

from internvlx.bench import add_arguments, run_from_args


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
