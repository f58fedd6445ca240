"""Image reading: every mode becomes RGB, JPEG draft decoding, parallel reading in order."""

import io
import time

import numpy as np
import pytest
from PIL import Image

from imcap.data.images import ImageReadError, read_image, read_images


def save(tmp_path, image, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return str(path)


def test_rgb_png_is_resized_and_transposed(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 10:] = (0, 0, 255)
    out = read_image(save(tmp_path, Image.fromarray(pixels), "a.png"), 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 3, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[:, 3, 7], [0, 0, 255])


def test_grayscale_repeats_over_channels(tmp_path):
    out = read_image(save(tmp_path, Image.new("L", (6, 6), 77), "g.png"), 4)
    np.testing.assert_array_equal(out, np.full((3, 4, 4), 77))


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    values = np.full((6, 6), 65535 // 2, dtype=np.uint16)
    image = Image.fromarray(values)
    path = save(tmp_path, image, "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = read_image(path, 4)
    np.testing.assert_array_equal(out, np.full((3, 4, 4), 127))


def test_rgba_composites_over_white(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 255  # red, fully transparent in the top half
    pixels[2:, :, 3] = 255
    out = read_image(save(tmp_path, Image.fromarray(pixels, "RGBA"), "t.png"), 4)
    np.testing.assert_array_equal(out[:, 0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[:, 3, 0], [255, 0, 0])


def test_palette_and_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    out = read_image(save(tmp_path, image, "p.gif"), 4)
    np.testing.assert_array_equal(out[:, 1, 1], [10, 200, 30])
    out = read_image(save(tmp_path, image, "pt.png", transparency=1), 4)
    np.testing.assert_array_equal(out[:, 1, 1], [255, 255, 255])


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = read_image(save(tmp_path, cmyk, "c.jpg", quality=95), 8)
    red, green, blue = out[:, 4, 4].astype(int)
    assert red > 200 and green < 50 and blue < 50


def test_jpeg_draft_matches_a_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
    big = Image.fromarray(smooth).resize((640, 480), Image.Resampling.BICUBIC)
    path = save(tmp_path, big, "big.jpg", quality=95)
    drafted = read_image(path, 64).astype(int)
    full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(drafted - full.transpose(2, 0, 1).astype(int)).mean() < 3.0
    with Image.open(path) as image:  # the draft really is a reduced decode
        image.draft("RGB", (64, 64))
        assert image.size == (160, 120)


@pytest.mark.parametrize("content,message", [
    (b"", "file is empty"), (b"\x89PNG\r\n\x1a\n garbage", "cannot read image")])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        read_image(str(path), 8)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(str(path), 8)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="image file not found"):
        read_image(str(tmp_path / "nope.jpg"), 8)


def test_parallel_reading_keeps_order_and_reports_failures(tmp_path):
    paths = []
    for i in range(37):
        paths.append(save(tmp_path, Image.new("RGB", (5, 5), (i, 2 * i, 3 * i)), f"{i}.png"))
    (tmp_path / "13.png").write_bytes(b"")
    serial = list(read_images(paths, 4, workers=1, chunk=5))
    parallel = list(read_images(paths, 4, workers=2, chunk=5, max_pending=2))
    assert [start for start, _, _ in parallel] == list(range(0, 37, 5))
    assert [len(images) for _, images, _ in parallel] == [5] * 7 + [2]
    for (_, a, errors_a), (_, b, errors_b) in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
        assert errors_a == errors_b
    assert list(parallel[2][2]) == [3] and "13.png" in parallel[2][2][3]
    images = np.concatenate([images for _, images, _ in parallel])
    for i in (0, 20, 36):
        np.testing.assert_array_equal(images[i][:, 0, 0], [i, 2 * i, 3 * i])


def test_reading_runs_at_most_max_pending_chunks_ahead(tmp_path, monkeypatch):
    """Memory stays bounded: a slow consumer does not make the readers decode everything."""
    from imcap.data import images as images_module
    calls = []
    real = images_module._read_chunk

    def counting(paths, size, draft_ratio):
        calls.append(len(paths))
        return real(paths, size, draft_ratio)

    monkeypatch.setattr(images_module, "_read_chunk", counting)
    paths = [save(tmp_path, Image.new("RGB", (4, 4)), f"{i}.png") for i in range(40)]
    reader = read_images(paths, 4, workers=2, chunk=2, max_pending=3)
    next(reader)
    time.sleep(0.2)  # give the threads every chance to run ahead
    assert len(calls) <= 4  # the chunk handed out plus three pending
    rest = list(reader)
    assert len(calls) == 20 and len(rest) == 19
