"""Image loading, RGB conversion and pixel values (parity with the authors' load_image)."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from internvlx.errors import ConfigError, ImageError
from internvlx.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    image_to_pixel_values,
    load_image,
    preprocess_image,
    tiles_to_pixel_values,
    to_rgb,
)
from internvlx.tiling import TilePlan
from tests.conftest import shared_path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tiling"


@cache
def pixel_stats() -> dict:
    return json.loads((FIXTURES / "pixel_stats.json").read_text())


@cache
def tensors(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / name))


# ---------------------------------------------------------------- parity with the fixtures


@pytest.mark.parametrize("max_num", [6, 1])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_pixel_values_match_authors(k, max_num):
    path = shared_path("fixtures", "tiling", "images", f"image{k}.jpg")
    ref = pixel_stats()["images"][f"image{k}"]
    expect = ref[f"max_num_{max_num}"]
    pv, plan = preprocess_image(
        path, tile_size=448, max_tiles=max_num, policy="stock", thumbnail=True
    )
    assert pv.dtype == torch.float32
    assert list(pv.shape) == expect["shape"]
    assert (plan.cols, plan.rows, plan.thumbnail) == (
        expect["grid_cols"],
        expect["grid_rows"],
        expect["thumbnail_added"],
    )

    sub8 = tensors("pixel_values_sub8.safetensors")[f"image{k}.max_num_{max_num}.sub8"]
    torch.testing.assert_close(pv[:, :, ::8, ::8], sub8.float(), atol=2e-3, rtol=0)

    full = tensors("pixel_values_full.safetensors").get(f"image{k}.max_num_{max_num}")
    if full is not None:
        torch.testing.assert_close(pv, full.float(), atol=2e-3, rtol=0)

    pv64 = pv.double()
    for t, stats in enumerate(expect["tiles"]):
        means = pv64[t].mean(dim=(1, 2))
        stds = pv64[t].std(dim=(1, 2), unbiased=False)
        np.testing.assert_allclose(means.numpy(), stats["mean"], atol=1e-2, rtol=0)
        np.testing.assert_allclose(stds.numpy(), stats["std"], atol=1e-2, rtol=0)
    assert abs(pv64.mean().item() - expect["global_mean"]) < 1e-2


def test_image_to_pixel_values_is_first_output():
    img = Image.new("RGB", (60, 30), (10, 200, 30))
    pv, plan = preprocess_image(img, tile_size=14, max_tiles=4)
    assert torch.equal(image_to_pixel_values(img, tile_size=14, max_tiles=4), pv)
    assert pv.shape == (plan.num_tiles, 3, 14, 14)


def test_normalisation_arithmetic_is_float32_exact():
    colour = (0, 128, 255)
    pv = image_to_pixel_values(Image.new("RGB", (5, 5), colour), tile_size=4)
    assert pv.shape == (1, 3, 4, 4)
    for c in range(3):
        want = (
            np.float32(colour[c]) / np.float32(255) - np.float32(IMAGENET_MEAN[c])
        ) / np.float32(IMAGENET_STD[c])
        assert torch.all(pv[0, c] == torch.tensor(want))


def test_tiles_to_pixel_values_resizes_and_converts():
    tiles = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("L", (3, 5), 255)]
    pv = tiles_to_pixel_values(tiles, tile_size=8)
    assert pv.shape == (2, 3, 8, 8)
    white = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    torch.testing.assert_close(pv[1, :, 4, 4], white)


def test_budget_mode_through_preprocess():
    img = Image.new("RGB", (2000, 1000), (1, 2, 3))
    pv, plan = preprocess_image(
        img, tile_size=448, max_tiles=12, tokens_per_tile=256, max_visual_tokens=3 * 256
    )
    assert plan == TilePlan(2, 1, True, 448)
    assert pv.shape[0] == 3


# ---------------------------------------------------------------- modes and alpha


def _gradient(mode: str, size=(30, 20)) -> Image.Image:
    w, h = size
    ramp = np.add.outer(np.arange(h), np.arange(w)).astype(np.float64)
    ramp /= ramp.max()
    if mode == "1":
        return Image.fromarray(ramp > 0.5)
    if mode in ("I;16", "I;16B"):
        img = Image.fromarray((ramp * 65535).astype(np.uint16))
        return img if mode == "I;16" else img.convert("I").convert("I;16B")
    if mode == "I":
        return Image.fromarray((ramp * 70000 - 1000).astype(np.int32))
    if mode == "F":
        return Image.fromarray((ramp * 3.0 - 1.0).astype(np.float32))
    rgba = np.stack([ramp * 255, 255 - ramp * 255, np.full_like(ramp, 90), ramp * 255], -1)
    img = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    if mode == "P":
        return img.convert("RGB").convert("P")
    if mode == "P+transparency":
        p = img.convert("RGB").convert("P")
        p.info["transparency"] = p.getpixel((0, 0))
        return p
    return img.convert(mode)


MODES = [
    "1",
    "L",
    "LA",
    "La",
    "P",
    "P+transparency",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "CMYK",
    "YCbCr",
    "HSV",
    "I;16",
    "I;16B",
    "I",
    "F",
]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_rgb_and_finite_pixels(mode):
    img = _gradient(mode)
    assert img.mode == mode.split("+")[0]
    for alpha in ("white", "drop"):
        rgb = to_rgb(img, alpha=alpha)
        assert rgb.mode == "RGB" and rgb.size == img.size
        assert to_rgb(img, alpha=alpha).tobytes() == rgb.tobytes()  # deterministic
    pv, plan = preprocess_image(img, tile_size=14, max_tiles=6)
    assert pv.shape == (plan.num_tiles, 3, 14, 14) and plan.num_tiles > 1
    assert pv.dtype == torch.float32 and torch.isfinite(pv).all()


def test_transparent_red_over_white_or_dropped():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    img.putpixel((1, 1), (255, 0, 0, 255))
    img.putpixel((2, 2), (255, 0, 0, 128))
    white = to_rgb(img, alpha="white")
    assert white.getpixel((0, 0)) == (255, 255, 255)
    assert white.getpixel((1, 1)) == (255, 0, 0)
    assert white.getpixel((2, 2)) == (255, 127, 127)  # round((0*128 + 255*127) / 255)
    assert to_rgb(img, alpha="drop").getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(img, alpha="drop").tobytes() == img.convert("RGB").tobytes()
    assert to_rgb(img.convert("LA"), alpha="white").getpixel((0, 0)) == (255, 255, 255)


def test_palette_and_trns_transparency():
    p = Image.new("P", (3, 1))
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((0, 0), 1)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # index 0 transparent
    assert to_rgb(p).getpixel((2, 0)) == (255, 255, 255)
    assert to_rgb(p).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(p, alpha="drop").getpixel((2, 0)) == (0, 0, 0)
    rgb = Image.new("RGB", (2, 1), (0, 0, 255))
    rgb.info["transparency"] = (0, 0, 255)  # PNG tRNS colour key
    assert to_rgb(rgb).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(rgb, alpha="drop").getpixel((0, 0)) == (0, 0, 255)


def test_high_bit_depth_scaling():
    v16 = np.array([[0, 128, 129, 257 * 100, 65535]], dtype=np.uint16)
    assert np.asarray(to_rgb(Image.fromarray(v16)))[0, :, 0].tolist() == [0, 0, 1, 100, 255]
    v32 = np.array([[-5, 257 * 7, 70000]], dtype=np.int32)
    assert np.asarray(to_rgb(Image.fromarray(v32)))[0, :, 0].tolist() == [0, 7, 255]
    f = np.array([[-1.0, 0.0, 1.0, np.nan, np.inf]], dtype=np.float32)
    assert np.asarray(to_rgb(Image.fromarray(f)))[0, :, 1].tolist() == [0, 128, 255, 0, 255]
    const = np.full((2, 2), 3.5, dtype=np.float32)
    assert not np.asarray(to_rgb(Image.fromarray(const))).any()


def test_invalid_alpha_option():
    with pytest.raises(ConfigError):
        to_rgb(Image.new("RGB", (2, 2)), alpha="grey")


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)

    loaded = load_image(path)
    assert loaded.size == (40, 20)
    upright = to_rgb(loaded)
    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 5))
    assert r > 200 and b < 60  # the left (red) half is now on top
    r, g, b = upright.getpixel((10, 35))
    assert b > 200 and r < 60
    assert to_rgb(loaded, exif_transpose=False).size == (40, 20)
    _, plan = preprocess_image(path, tile_size=10, max_tiles=8)
    assert (plan.cols, plan.rows) == (2, 4)
    _, plan = preprocess_image(path, tile_size=10, max_tiles=8, exif_transpose=False)
    assert (plan.cols, plan.rows) == (4, 2)


# ---------------------------------------------------------------- loading and bad input


def _jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    _gradient("RGB", size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_load_from_path_bytes_file_and_pil(tmp_path):
    data = _jpeg_bytes()
    path = tmp_path / "ok.jpg"
    path.write_bytes(data)
    images = [
        load_image(path),
        load_image(str(path)),
        load_image(data),
        load_image(io.BytesIO(data)),
        load_image(Image.open(io.BytesIO(data))),
    ]
    for img in images:
        assert img.size == (64, 48) and img.mode == "RGB"
        assert img.tobytes() == images[0].tobytes()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="nope.png.*does not exist"):
        load_image(path)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match=str(tmp_path.name)):
        load_image(tmp_path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg.*empty"):
        load_image(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="notes.jpg.*not an image"):
        load_image(path)
    with pytest.raises(ImageError, match="notes.jpg.*binary"), open(path) as f:
        load_image(f)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    buf = io.BytesIO()
    _gradient("RGB", (200, 150)).save(buf, format=fmt)
    data = buf.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=f"cut.{fmt.lower()}.*(corrupt|truncated)"):
        load_image(path)
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(data[: len(data) // 2])


def test_pixel_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    with pytest.raises(ImageError, match="big.png.*100x100 = 10000 pixels.*5000"):
        load_image(path, max_pixels=5000)
    with pytest.raises(ImageError, match="big.png"):
        preprocess_image(path, max_pixels=5000)
    with pytest.raises(ImageError, match="10000 pixels"):
        load_image(Image.new("L", (100, 100)), max_pixels=5000)
    assert load_image(path, max_pixels=10000).size == (100, 100)


def test_pillow_bomb_limits_become_image_errors(tmp_path, monkeypatch):
    small, large = tmp_path / "warn.png", tmp_path / "bomb.png"
    Image.new("L", (40, 40)).save(small)  # 1600 px: above the limit, below twice it
    Image.new("L", (100, 100)).save(large)  # 10000 px: above twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="warn.png.*MAX_IMAGE_PIXELS"):
        load_image(small, max_pixels=None)
    with pytest.raises(ImageError, match="bomb.png.*MAX_IMAGE_PIXELS"):
        load_image(large, max_pixels=10**9)
    # our explicit limit supersedes Pillow's warning threshold
    assert load_image(small, max_pixels=10**6).size == (40, 40)


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="int"):
        load_image(123)
