"""Tiling: parity with the authors' dynamic_preprocess (fixtures), RVTC caps, token budgets."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from internvlx.errors import ConfigError
from internvlx.tiling import TilePlan, candidate_grids, plan_tiles, split_image, tile_cap, tile_grid

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tiling"
GRID_FILES = ("grid_448.jsonl", "grid_56.jsonl", "grid_448_min_num.jsonl")
VARIANT_TO_POLICY = {"rvtc": "length", "stock": "stock"}


@cache
def grid_rows(name: str) -> list[dict]:
    with open(FIXTURES / name) as f:
        return [json.loads(line) for line in f]


def reference_grid(w: int, h: int, s: int, lo: int, hi: int, policy: str) -> tuple[int, int]:
    """Independent statement of the rule: caps with exact fractions, the tie set in float64.

    The scan in the authors' code ends on the last candidate of the float-minimal set (in
    product-then-cols order) that passes the area test, and on the first one when none
    after it does.
    """
    if policy == "length":
        cap = min(hi, math.ceil(Fraction(h, s)) * math.ceil(Fraction(w, s)))
    elif policy == "area":
        cap = min(hi, max(1, math.ceil(Fraction(w * h, s * s))))
    else:
        cap = hi
    cands = sorted(
        ((i, j) for i in range(1, cap + 1) for j in range(1, cap + 1) if lo <= i * j <= cap),
        key=lambda g: (g[0] * g[1], g[0]),
    )
    if not cands:
        return (1, 1)
    dist = {g: abs(w / h - g[0] / g[1]) for g in cands}
    best = min(dist.values())
    tied = [g for g in cands if dist[g] == best]
    winners = [g for g in tied[1:] if 2 * w * h > s * s * g[0] * g[1]]
    return winners[-1] if winners else tied[0]


# ---------------------------------------------------------------- fixtures (authors' code)


@pytest.mark.parametrize("name", GRID_FILES)
def test_every_fixture_case_matches(name):
    rows = grid_rows(name)
    assert rows, name
    bad = []
    for r in rows:
        policy = VARIANT_TO_POLICY[r["variant"]]
        kw = dict(
            tile_size=r["image_size"], min_tiles=r["min_num"], max_tiles=r["max_num"], policy=policy
        )
        plan = plan_tiles(r["width"], r["height"], thumbnail=r["use_thumbnail"], **kw)
        got = (plan.cols, plan.rows, plan.num_tiles, plan.thumbnail, list(plan.resized_size))
        want = (
            r["grid_cols"],
            r["grid_rows"],
            r["num_tiles"],
            r["thumbnail_added"],
            r["resized_to"],
        )
        cap = tile_cap(
            r["width"],
            r["height"],
            tile_size=r["image_size"],
            max_tiles=r["max_num"],
            policy=policy,
        )
        n_cands = len(candidate_grids(r["min_num"], cap))
        eff = max((i * j for i, j in candidate_grids(r["min_num"], cap)), default=None)
        if (
            got != want
            or tile_grid(r["width"], r["height"], **kw) != got[:2]
            or n_cands != r["num_candidates"]
            or eff != r["effective_max_num"]
        ):
            bad.append((r["case_id"], got, want))
    assert not bad, f"{len(bad)} mismatching cases in {name}: {bad[:5]}"


def test_fixture_coverage():
    rows = [r for name in GRID_FILES for r in grid_rows(name)]
    assert len(rows) == 1788 + 600 + 480
    assert {r["variant"] for r in rows} == {"rvtc", "stock"}
    assert any(r["num_candidates"] == 0 for r in rows)  # the empty-candidate case
    # rows where float and exact ties differ: exactly where float64 semantics matter
    assert any(r["float_tie_candidates"] != r["exact_tie_candidates"] for r in rows)


@pytest.mark.parametrize("name", GRID_FILES)
def test_reference_agrees_with_fixtures(name):
    """The test's own reference is trustworthy: it reproduces the authors' output too."""
    for r in grid_rows(name)[::3]:
        got = reference_grid(
            r["width"],
            r["height"],
            r["image_size"],
            r["min_num"],
            r["max_num"],
            VARIANT_TO_POLICY[r["variant"]],
        )
        assert got == (r["grid_cols"], r["grid_rows"]), r["case_id"]


@pytest.mark.parametrize("name", GRID_FILES)
def test_area_policy_on_fixture_sizes(name):
    for r in grid_rows(name):
        if r["variant"] != "stock":
            continue
        w, h, s = r["width"], r["height"], r["image_size"]
        got = tile_grid(
            w, h, tile_size=s, min_tiles=r["min_num"], max_tiles=r["max_num"], policy="area"
        )
        assert got == reference_grid(w, h, s, r["min_num"], r["max_num"], "area"), r


def test_documented_examples():
    # float "tie" that is not a float tie: 5/12 lies halfway between 1/2 and 1/3
    # (1,3) would win under exact arithmetic (area 600,000 > 0.5*448*448*3)
    assert tile_grid(500, 1200, max_tiles=6) == (1, 2)
    assert reference_grid(500, 1200, 448, 1, 6, "stock") == (1, 2)
    # exact equal ratios (1,1) vs (2,2): area rule
    assert tile_grid(600, 500, max_tiles=6) == (1, 1)
    assert tile_grid(1000, 1000, max_tiles=6) == (2, 2)
    assert tile_grid(1, 1, max_tiles=12) == (1, 1)
    # RVTC length: small images are not upscaled
    assert tile_grid(400, 300, max_tiles=6, policy="length") == (1, 1)
    assert tile_grid(400, 300, max_tiles=6, policy="stock") == (3, 2)
    # empty candidate list: (1, 1) despite min_tiles
    assert tile_grid(100, 100, min_tiles=2, max_tiles=6, policy="length") == (1, 1)
    assert plan_tiles(100, 100, min_tiles=2, max_tiles=6, policy="area").num_tiles == 1


def test_area_vs_length_caps():
    # 449x449: length allows 2*2 = 4 tiles, area ceil(201601/200704) = 2
    assert tile_cap(449, 449, policy="length") == 4
    assert tile_cap(449, 449, policy="area") == 2
    assert tile_cap(1, 1, policy="area") == 1
    assert tile_cap(5000, 5000, policy="area", max_tiles=12) == 12
    assert tile_cap(5000, 5000, policy="stock", max_tiles=7) == 7


def test_candidate_order_is_by_product_then_cols():
    grids = candidate_grids(1, 6)
    assert grids == sorted(grids, key=lambda g: (g[0] * g[1], g[0]))
    assert grids[:3] == [(1, 1), (1, 2), (2, 1)]
    assert set(grids) == {(i, j) for i in range(1, 7) for j in range(1, 7) if i * j <= 6}
    assert candidate_grids(5, 4) == []


# ---------------------------------------------------------------- properties

# small sizes hit exact ratio ties (equal i/j) often; large ones the caps
sizes = st.integers(min_value=1, max_value=64) | st.integers(min_value=1, max_value=6000)
tile_sizes = st.sampled_from([14, 56, 448]) | st.integers(min_value=1, max_value=1000)
policies = st.sampled_from(["stock", "length", "area"])


@st.composite
def tiling_args(draw):
    lo = draw(st.integers(min_value=1, max_value=8))
    hi = draw(st.integers(min_value=lo, max_value=40))
    return dict(tile_size=draw(tile_sizes), min_tiles=lo, max_tiles=hi, policy=draw(policies))


@settings(max_examples=300, deadline=None)
@given(w=sizes, h=sizes, kw=tiling_args())
def test_matches_reference(w, h, kw):
    assert tile_grid(w, h, **kw) == reference_grid(
        w, h, kw["tile_size"], kw["min_tiles"], kw["max_tiles"], kw["policy"]
    )


@settings(max_examples=300, deadline=None)
@given(w=sizes, h=sizes, kw=tiling_args(), thumb=st.booleans())
def test_caps_respected(w, h, kw, thumb):
    plan = plan_tiles(w, h, thumbnail=thumb, **kw)
    n, s = plan.cols * plan.rows, kw["tile_size"]
    cap = tile_cap(w, h, tile_size=s, max_tiles=kw["max_tiles"], policy=kw["policy"])
    assert 1 <= n <= kw["max_tiles"]
    assert plan.num_tiles <= kw["max_tiles"] + 1
    assert plan.thumbnail == (thumb and n != 1)
    if kw["policy"] == "length":
        assert n <= math.ceil(h / s) * math.ceil(w / s)
    if kw["policy"] == "area":
        assert n <= max(1, -(-w * h // (s * s)))
    if kw["min_tiles"] <= cap:
        assert n >= kw["min_tiles"]
    else:  # no candidate grid at all
        assert (plan.cols, plan.rows) == (1, 1)


@settings(max_examples=200, deadline=None)
@given(
    w=sizes,
    h=sizes,
    kw=tiling_args(),
    thumb=st.booleans(),
    tpt=st.sampled_from([1, 64, 256]),
    budget_tiles=st.integers(min_value=1, max_value=50),
)
def test_budget_fits_and_is_maximal(w, h, kw, thumb, tpt, budget_tiles):
    budget = budget_tiles * tpt + (tpt // 2 if budget_tiles % 2 else 0)
    plan = plan_tiles(w, h, thumbnail=thumb, tokens_per_tile=tpt, max_visual_tokens=budget, **kw)
    assert plan.num_tokens(tpt) <= budget

    def plan_k(k):
        return plan_tiles(
            w, h, thumbnail=thumb, **{**kw, "max_tiles": k, "min_tiles": min(kw["min_tiles"], k)}
        )

    fitting = [k for k in range(1, kw["max_tiles"] + 1) if plan_k(k).num_tokens(tpt) <= budget]
    assert plan == plan_k(max(fitting))
    free = plan_tiles(w, h, thumbnail=thumb, **kw)
    if free.num_tokens(tpt) <= budget:
        assert plan == free


def test_budget_examples():
    # 1000x1000 stock max 6 -> 2x2 + thumbnail = 5 tiles
    assert plan_tiles(1000, 1000, max_tiles=6).num_tiles == 5
    p = plan_tiles(1000, 1000, max_tiles=6, tokens_per_tile=256, max_visual_tokens=5 * 256)
    assert (p.cols, p.rows, p.thumbnail) == (2, 2, True)
    # 4 tiles' worth: k=4 and k=5 still give 2x2 + thumbnail = 5 tiles; for k <= 3 the
    # square image's closest grid is 1x1, so the honest answer is a single tile
    p = plan_tiles(1000, 1000, max_tiles=6, tokens_per_tile=256, max_visual_tokens=4 * 256)
    assert p == TilePlan(1, 1, False, 448)
    # a wide image: 2000x1000 at 3 tiles' worth -> 2x1 + thumbnail
    p = plan_tiles(2000, 1000, max_tiles=12, tokens_per_tile=256, max_visual_tokens=3 * 256)
    assert p == TilePlan(2, 1, True, 448)
    p = plan_tiles(1000, 1000, max_tiles=6, tokens_per_tile=256, max_visual_tokens=256)
    assert p == TilePlan(1, 1, False, 448)
    # the budget wins over min_tiles
    p = plan_tiles(
        1000, 1000, min_tiles=4, max_tiles=6, tokens_per_tile=256, max_visual_tokens=2 * 256
    )
    assert p.num_tiles == 1


def test_budget_errors():
    with pytest.raises(ConfigError, match="minimum cost.* 256 tokens"):
        plan_tiles(1000, 1000, tokens_per_tile=256, max_visual_tokens=255)
    with pytest.raises(ConfigError, match="tokens_per_tile"):
        plan_tiles(1000, 1000, max_visual_tokens=1000)
    with pytest.raises(ConfigError):
        plan_tiles(1000, 1000, tokens_per_tile=0, max_visual_tokens=1000)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=0, height=10),
        dict(width=10, height=-1),
        dict(width=10.5, height=10),
        dict(width=True, height=10),
        dict(width=10, height=10, tile_size=0),
        dict(width=10, height=10, min_tiles=0),
        dict(width=10, height=10, min_tiles=7, max_tiles=6),
        dict(width=10, height=10, policy="areas"),
    ],
)
def test_invalid_arguments(kwargs):
    w, h = kwargs.pop("width"), kwargs.pop("height")
    with pytest.raises(ConfigError):
        tile_grid(w, h, **kwargs)
    with pytest.raises(ConfigError):
        plan_tiles(w, h, **kwargs)


# ---------------------------------------------------------------- split_image


def _blocks(cols: int, rows: int, s: int) -> Image.Image:
    """An image of exactly cols*s x rows*s with one distinct flat colour per block."""
    img = Image.new("RGB", (cols * s, rows * s))
    for r in range(rows):
        for c in range(cols):
            img.paste(
                (40 * c + 10, 60 * r + 20, 7 * (r * cols + c)),
                (c * s, r * s, (c + 1) * s, (r + 1) * s),
            )
    return img


def test_split_row_major_and_thumbnail_last():
    img = _blocks(3, 2, 8)
    plan = plan_tiles(*img.size, tile_size=8, max_tiles=6)
    assert (plan.cols, plan.rows, plan.thumbnail) == (3, 2, True)
    tiles = split_image(img, plan)
    assert len(tiles) == 7 and all(t.size == (8, 8) for t in tiles)
    for k, tile in enumerate(tiles[:-1]):
        c, r = k % 3, k // 3
        assert tile.getpixel((4, 4)) == (40 * c + 10, 60 * r + 20, 7 * k)
        assert tile.getcolors() == [(64, tile.getpixel((0, 0)))]
    assert tiles[-1].tobytes() == img.resize((8, 8), Image.Resampling.BICUBIC).tobytes()


def test_split_resizes_bicubic_like_pillow_default():
    img = _blocks(3, 2, 10).resize((37, 23))
    tiles = split_image(img, tile_size=8, max_tiles=6, thumbnail=False)
    plan = plan_tiles(37, 23, tile_size=8, max_tiles=6, thumbnail=False)
    resized = img.resize(plan.resized_size)  # Pillow's default filter, as the authors call it
    assert len(tiles) == plan.num_tiles
    for k, tile in enumerate(tiles):
        c, r = k % plan.cols, k // plan.cols
        assert tile.tobytes() == resized.crop((c * 8, r * 8, c * 8 + 8, r * 8 + 8)).tobytes()


def test_split_single_tile_has_no_thumbnail():
    tiles = split_image(Image.new("RGB", (30, 20)), tile_size=448, max_tiles=1)
    assert len(tiles) == 1 and tiles[0].size == (448, 448)


def test_split_rejects_plan_and_keywords():
    img = Image.new("RGB", (10, 10))
    with pytest.raises(ConfigError):
        split_image(img, TilePlan(1, 1, False, 8), tile_size=8)
