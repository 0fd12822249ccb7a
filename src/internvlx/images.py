"""Loading images safely and turning them into normalised tile tensors.

``preprocess_image`` is the whole pipeline: :func:`load_image` (validated, fully decoded),
:func:`to_rgb` (EXIF orientation, deterministic mode conversion), :func:`plan_tiles` and
:func:`split_image` from :mod:`internvlx.tiling`, then :func:`tiles_to_pixel_values`
(``(uint8 / 255 - mean) / std`` in float32 with the ImageNet statistics). For RGB inputs
without EXIF rotation this equals the authors' ``load_image`` (``Image.open(path).convert('RGB')``,
``dynamic_preprocess``, ``ToTensor``, ``Normalize``) exactly.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from internvlx.errors import ConfigError, ImageError
from internvlx.tiling import TilePlan, plan_tiles, split_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Default limit on ``width * height`` for decoded images (50 megapixels).
DEFAULT_MAX_PIXELS = 50_000_000

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image

ALPHA_MODES = ("white", "drop")
_HIGH_BIT_16 = ("I;16", "I;16L", "I;16B", "I;16N")


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"<PIL image {source.mode} {source.size}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes in memory>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file-like object>"


def _check_pixels(image: Image.Image, name: str, max_pixels: int | None) -> None:
    if max_pixels is None:
        return
    w, h = image.size
    if w * h > max_pixels:
        raise ImageError(
            f"image {name} is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} "
            "pixels (a possible decompression bomb); pass a larger max_pixels if you trust it"
        )


def _decode(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    if len(data) == 0:
        raise ImageError(f"image file {name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # With our own limit in force, Pillow's warning is redundant; without one,
            # Pillow's warning threshold is the limit.
            action = "ignore" if max_pixels is not None else "error"
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image, name, max_pixels)  # from the header, before decoding
            image.load()  # full decode: truncated or corrupt data fails here
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(
            f"image {name} exceeds Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {e}"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageError(f"file {name} is not an image format Pillow can read") from e
    except Exception as e:
        raise ImageError(f"image {name} is corrupt or truncated and cannot be decoded: {e}") from e
    return image


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image, in its original mode.

    ``source`` is a path, the encoded bytes, a binary file-like object, or a PIL image (which
    is loaded and checked, and returned as is). Every failure raises :class:`ImageError`
    naming the source: missing or empty file, a file that is not an image, truncated or
    corrupt data (the whole image is decoded here, so truncation cannot go unnoticed unless
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was turned on elsewhere), and images with more
    than ``max_pixels`` pixels, checked from the header before decoding. ``max_pixels=None``
    leaves only Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``), treating its warning as
    an error. Pillow's hard error above twice its limit always applies.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        _check_pixels(source, name, max_pixels)
        try:
            source.load()
        except Exception as e:
            raise ImageError(f"image {name} is corrupt or truncated: {e}") from e
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image file {name} does not exist")
        if not path.is_file():
            raise ImageError(f"image path {name} is not a regular file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"image file {name} cannot be read: {e}") from e
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        try:
            data = source.read()
        except OSError as e:
            raise ImageError(f"image {name} cannot be read: {e}") from e
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"image {name} must be opened in binary mode")
        data = bytes(data)
    else:
        raise ImageError(
            f"cannot load an image from a {type(source).__name__}; "
            "pass a path, bytes, a binary file object or a PIL image"
        )
    return _decode(data, name, max_pixels)


def _gray8(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L")


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 as round(v / 257) (never an exact half, so no tie rule needed)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return (v + 128) // 257


def _scale_float(values: np.ndarray) -> np.ndarray:
    """Min-max over the finite values to 0..255, rounded half to even; constant -> 0."""
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, dtype=np.uint8)
    lo, hi = float(v[finite].min()), float(v[finite].max())
    v = np.clip(np.nan_to_num(v, nan=lo, posinf=hi, neginf=lo), lo, hi)
    if hi == lo:
        return np.zeros(v.shape, dtype=np.uint8)
    return np.rint((v - lo) * (255.0 / (hi - lo)))


def _over_white(rgba: Image.Image) -> Image.Image:
    arr = np.asarray(rgba, dtype=np.uint32)
    rgb, a = arr[..., :3], arr[..., 3:4]
    out = (rgb * a + 255 * (255 - a) + 127) // 255  # rounded integer "over" compositing
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def to_rgb(image: Image.Image, *, alpha: str = "white", exif_transpose: bool = True) -> Image.Image:
    """Convert any Pillow image to 8-bit RGB, deterministically.

    * ``exif_transpose``: first apply the EXIF orientation tag (``ImageOps.exif_transpose``).
    * Transparency (an alpha band in LA/La/PA/RGBA/RGBa, or a ``transparency`` entry for
      P/L/RGB/1 images): ``alpha="white"`` (default) composites over a white background,
      ``out = round((c*a + 255*(255-a)) / 255)``; ``alpha="drop"`` ignores it like
      ``Image.convert('RGB')`` in the authors' pipeline (fully transparent pixels keep
      whatever colour they store). RGB images are the same either way.
    * ``I;16`` (any byte order): ``round(v / 257)``, the full 16-bit range onto 0..255.
    * ``I`` (32-bit int, in practice 16-bit PNG/TIFF data): clipped to 0..65535, then as I;16.
    * ``F`` (float): min-max over the finite values onto 0..255, rounded half to even (NaN -> min,
      +/-inf -> max/min); a constant image becomes black.
    * ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` ...: Pillow's ``convert('RGB')``.
    Grey results are replicated into R, G and B.
    """
    if alpha not in ALPHA_MODES:
        raise ConfigError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _HIGH_BIT_16 or mode == "I":
        return _gray8(_scale_16bit(np.asarray(image))).convert("RGB")
    if mode == "F":
        return _gray8(_scale_float(np.asarray(image))).convert("RGB")
    if mode == "La":  # premultiplied; Pillow converts it only to LA
        image, mode = image.convert("LA"), "LA"
    transparent = (
        "A" in image.getbands()
        or "a" in image.getbands()
        or ("transparency" in image.info and mode in ("1", "L", "P", "RGB"))
    )
    try:
        if transparent and alpha == "white":
            return _over_white(image.convert("RGBA"))
        return image if mode == "RGB" else image.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(f"cannot convert an image of mode {mode!r} to RGB: {e}") from e


def tiles_to_pixel_values(tiles: list[Image.Image], *, tile_size: int = 448) -> torch.Tensor:
    """Stack tiles into ``[N, 3, S, S]`` float32: ``(uint8 / 255 - mean) / std`` (ImageNet).

    Tiles not already ``S x S`` are resized bicubically; non-RGB tiles go through
    :func:`to_rgb` (without EXIF transposition).
    """
    arrays = []
    for tile in tiles:
        if tile.mode != "RGB":
            tile = to_rgb(tile, exif_transpose=False)
        if tile.size != (tile_size, tile_size):
            tile = tile.resize((tile_size, tile_size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(tile, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32) / 255
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def preprocess_image(
    image: ImageSource,
    *,
    tile_size: int = 448,
    min_tiles: int = 1,
    max_tiles: int = 12,
    policy: str = "stock",
    thumbnail: bool = True,
    tokens_per_tile: int | None = None,
    max_visual_tokens: int | None = None,
    alpha: str = "white",
    exif_transpose: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[torch.Tensor, TilePlan]:
    """Load, convert, tile and normalise one image.

    Returns ``(pixel_values, plan)``: float32 ``[plan.num_tiles, 3, S, S]`` with the grid
    tiles row-major and the thumbnail (if any) last, and the :class:`TilePlan` used. The
    tiling keywords are those of :func:`internvlx.tiling.plan_tiles`; ``alpha`` and
    ``exif_transpose`` those of :func:`to_rgb`; ``max_pixels`` that of :func:`load_image`.
    """
    rgb = to_rgb(
        load_image(image, max_pixels=max_pixels), alpha=alpha, exif_transpose=exif_transpose
    )
    plan = plan_tiles(
        rgb.width,
        rgb.height,
        tile_size=tile_size,
        min_tiles=min_tiles,
        max_tiles=max_tiles,
        policy=policy,
        thumbnail=thumbnail,
        tokens_per_tile=tokens_per_tile,
        max_visual_tokens=max_visual_tokens,
    )
    return tiles_to_pixel_values(split_image(rgb, plan), tile_size=tile_size), plan


def image_to_pixel_values(
    image: ImageSource,
    *,
    tile_size: int = 448,
    min_tiles: int = 1,
    max_tiles: int = 12,
    policy: str = "stock",
    thumbnail: bool = True,
    max_visual_tokens: int | None = None,
    tokens_per_tile: int | None = None,
    alpha: str = "white",
    exif_transpose: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """The ``[tiles, 3, S, S]`` float32 tensor of :func:`preprocess_image` (same keywords)."""
    pixel_values, _ = preprocess_image(
        image,
        tile_size=tile_size,
        min_tiles=min_tiles,
        max_tiles=max_tiles,
        policy=policy,
        thumbnail=thumbnail,
        tokens_per_tile=tokens_per_tile,
        max_visual_tokens=max_visual_tokens,
        alpha=alpha,
        exif_transpose=exif_transpose,
        max_pixels=max_pixels,
    )
    return pixel_values
