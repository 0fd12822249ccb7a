"""Dynamic tiling of images into square tiles (InternVL) and its RVTC caps (InternVL-X).

An image of ``width x height`` pixels is cut into a grid of ``cols x rows`` tiles of
``tile_size x tile_size`` pixels. The grid is the one whose aspect ratio ``cols / rows`` is
closest to the image's, among all grids with ``min_tiles <= cols * rows <= cap``:

* ``policy="stock"``  (InternVL):            ``cap = max_tiles``
* ``policy="length"`` (released RVTC):        ``cap = min(max_tiles, ceil(H/S) * ceil(W/S))``
* ``policy="area"``   (our area-based RVTC):  ``cap = min(max_tiles, max(1, ceil(H*W / S**2)))``

The choice reproduces the authors' code bit for bit, including its quirks:

* Distances are ``abs(W/H - cols/rows)`` in float64. A candidate replaces the current best
  when its distance is strictly smaller, or when it is *exactly* equal as a float and the image
  area exceeds half of the candidate grid's pixel area (``W*H > 0.5 * S*S * cols*rows``).
  Ratios that are only mathematically equidistant but differ in the last float bit are not ties.
* Candidates are scanned in increasing ``cols * rows``; within one product, in increasing
  ``cols``. (The authors iterate a Python ``set`` there; no recorded case depends on it.)
* When no grid satisfies ``min_tiles <= cols*rows <= cap`` (possible when a policy cap falls
  below ``min_tiles``) the result is ``(1, 1)``, as in the authors' code.
* A thumbnail (the whole image squashed to ``S x S``) is appended last, only when thumbnails
  are on and the grid is not ``1 x 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from internvlx.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

POLICIES = ("stock", "length", "area")


@dataclass(frozen=True)
class TilePlan:
    """How one image is tiled: a ``cols x rows`` grid, plus a thumbnail tile if ``thumbnail``."""

    cols: int
    rows: int
    thumbnail: bool
    tile_size: int = 448

    @property
    def num_grid_tiles(self) -> int:
        """Tiles cut from the resized image (without the thumbnail)."""
        return self.cols * self.rows

    @property
    def num_tiles(self) -> int:
        """All tiles the image becomes, thumbnail included."""
        return self.cols * self.rows + int(self.thumbnail)

    @property
    def resized_size(self) -> tuple[int, int]:
        """``(width, height)`` the image is resized to before cropping."""
        return self.cols * self.tile_size, self.rows * self.tile_size

    def num_tokens(self, tokens_per_tile: int) -> int:
        """Visual tokens this plan costs at ``tokens_per_tile`` tokens per tile."""
        return self.num_tiles * tokens_per_tile


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_args(width, height, tile_size, min_tiles, max_tiles, policy) -> None:
    _check_positive_int("width", width)
    _check_positive_int("height", height)
    _check_positive_int("tile_size", tile_size)
    _check_positive_int("min_tiles", min_tiles)
    _check_positive_int("max_tiles", max_tiles)
    if min_tiles > max_tiles:
        raise ConfigError(
            f"min_tiles ({min_tiles}) is larger than max_tiles ({max_tiles}); "
            "set min_tiles <= max_tiles"
        )
    if policy not in POLICIES:
        raise ConfigError(f"unknown tiling policy {policy!r}; expected one of {POLICIES}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tile_cap(
    width: int, height: int, *, tile_size: int = 448, max_tiles: int = 12, policy: str = "stock"
) -> int:
    """Largest ``cols * rows`` a grid may have under ``policy`` (before ``min_tiles``)."""
    _check_args(width, height, tile_size, 1, max_tiles, policy)
    if policy == "length":
        return min(max_tiles, _ceil_div(height, tile_size) * _ceil_div(width, tile_size))
    if policy == "area":
        return min(max_tiles, max(1, _ceil_div(height * width, tile_size * tile_size)))
    return max_tiles


def candidate_grids(min_tiles: int, cap: int) -> list[tuple[int, int]]:
    """All ``(cols, rows)`` with ``min_tiles <= cols*rows <= cap``, by product, then cols."""
    grids = [
        (cols, rows)
        for cols in range(1, cap + 1)
        for rows in range(1, cap // cols + 1)
        if cols * rows >= min_tiles
    ]
    grids.sort(key=lambda g: (g[0] * g[1], g[0]))
    return grids


def tile_grid(
    width: int,
    height: int,
    *,
    tile_size: int = 448,
    min_tiles: int = 1,
    max_tiles: int = 12,
    policy: str = "stock",
) -> tuple[int, int]:
    """The ``(cols, rows)`` grid an image of ``width x height`` pixels is cut into.

    See the module docstring for the rule; it matches the authors' ``dynamic_preprocess`` and
    ``find_closest_aspect_ratio`` (``policy="length"`` is their RVTC version).
    """
    _check_args(width, height, tile_size, min_tiles, max_tiles, policy)
    cap = tile_cap(width, height, tile_size=tile_size, max_tiles=max_tiles, policy=policy)
    aspect = width / height  # float64, as in the reference
    area = width * height
    best = (1, 1)
    best_diff = float("inf")
    for cols, rows in candidate_grids(min_tiles, cap):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def _plan(width, height, tile_size, min_tiles, max_tiles, policy, thumbnail) -> TilePlan:
    cols, rows = tile_grid(
        width, height, tile_size=tile_size, min_tiles=min_tiles, max_tiles=max_tiles, policy=policy
    )
    return TilePlan(cols, rows, bool(thumbnail) and cols * rows != 1, tile_size)


def plan_tiles(
    width: int,
    height: int,
    *,
    tile_size: int = 448,
    min_tiles: int = 1,
    max_tiles: int = 12,
    policy: str = "stock",
    thumbnail: bool = True,
    tokens_per_tile: int | None = None,
    max_visual_tokens: int | None = None,
) -> TilePlan:
    """Plan the tiling of a ``width x height`` image.

    Without ``max_visual_tokens`` this is :func:`tile_grid` plus the thumbnail rule.

    Token-budget mode (``max_visual_tokens`` given, which needs ``tokens_per_tile``): the
    result is the plan for the largest ``k <= max_tiles`` whose *actual* cost, thumbnail
    included, is at most ``max_visual_tokens`` (``plan.num_tiles * tokens_per_tile``). The
    budget wins over ``min_tiles``: for ``k < min_tiles`` the plan is made with
    ``min_tiles = k``. A 1-tile plan always exists, so :class:`ConfigError` is raised only
    when the budget is below ``tokens_per_tile``.
    """
    _check_args(width, height, tile_size, min_tiles, max_tiles, policy)
    if tokens_per_tile is not None:
        _check_positive_int("tokens_per_tile", tokens_per_tile)
    if max_visual_tokens is None:
        return _plan(width, height, tile_size, min_tiles, max_tiles, policy, thumbnail)
    _check_positive_int("max_visual_tokens", max_visual_tokens)
    if tokens_per_tile is None:
        raise ConfigError("max_visual_tokens needs tokens_per_tile to turn tiles into tokens")
    if max_visual_tokens < tokens_per_tile:
        raise ConfigError(
            f"max_visual_tokens={max_visual_tokens} cannot hold even one tile: the minimum "
            f"cost of an image is {tokens_per_tile} tokens (1 tile x {tokens_per_tile} "
            "tokens per tile); raise the budget"
        )
    for k in range(max_tiles, 0, -1):
        plan = _plan(width, height, tile_size, min(min_tiles, k), k, policy, thumbnail)
        if plan.num_tokens(tokens_per_tile) <= max_visual_tokens:
            return plan
    raise AssertionError("unreachable: k=1 always gives a single tile")  # pragma: no cover


def split_image(
    image: Image.Image, plan: TilePlan | None = None, **plan_kwargs
) -> list[Image.Image]:
    """Cut ``image`` into the tiles of ``plan`` (or of ``plan_tiles(*image.size, **plan_kwargs)``).

    The image is resized to ``(cols*S, rows*S)`` with bicubic resampling (Pillow's default
    for RGB, which the authors' pipeline relies on) and cropped row-major: tile ``k`` is at
    column ``k % cols``, row ``k // cols``. The thumbnail, if planned, is the *original* image
    resized to ``(S, S)`` (aspect ratio not kept) and comes last.
    """
    from PIL import Image

    if plan is None:
        plan = plan_tiles(image.width, image.height, **plan_kwargs)
    elif plan_kwargs:
        raise ConfigError(f"give either a plan or plan keywords, not both: {sorted(plan_kwargs)}")
    s = plan.tile_size
    resized = image.resize(plan.resized_size, Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * s, r * s, (c + 1) * s, (r + 1) * s))
        for r in range(plan.rows)
        for c in range(plan.cols)
    ]
    if plan.thumbnail:
        tiles.append(image.resize((s, s), Image.Resampling.BICUBIC))
    return tiles
