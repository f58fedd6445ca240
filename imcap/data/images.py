"""Reading images into the (3, S, S) uint8 RGB arrays of the NeuralTalk2 HDF5, in parallel threads.

Any mode Pillow opens becomes RGB: grayscale is repeated over three channels, 16-bit images are
scaled to 8 bits (65535 -> 255), CMYK is converted, palette images are expanded, and transparent
pixels (RGBA, LA, palette with transparency) are composited over white. JPEGs are decoded at a
reduced DCT scale (``Image.draft``: 1/2, 1/4 or 1/8) when the reduced image still has at least
``draft_ratio`` x S pixels on each side. With the default 0.8, COCO's usual 640x480 photos are
decoded at 320x240 for S = 256: decoding and resizing take half the time, for a picture that
differs from an exact decode by about one grey level on average (bench/prepro.py measures both).
``draft_ratio=1`` never decodes below S. The image is then squashed to S x S without cropping,
as imcap_keras' ``imresize(I, (256, 256))`` did.

``folder_images`` lists a folder's image files and ``load_images`` reads a batch of them as one
(N, S, S, 3) array: what caption.py and imcap-features read.
"""

import collections
import math
import concurrent.futures
import os

import numpy as np
from PIL import Image

from imcap.utils.fileio import DataError

_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageReadError(DataError):
    """An image file that cannot be decoded."""


def to_rgb(image):
    """Converts a Pillow image of any mode to RGB (see the module docstring)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


DRAFT_RATIO = 0.8


def read_image(path, size, draft_ratio=DRAFT_RATIO, out=None):
    """Reads one image file as a (3, size, size) uint8 RGB array (into ``out`` if given).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                smallest = max(1, math.ceil(size * draft_ratio))
                image.draft("RGB", (smallest, smallest))
            image.load()
            rgb = to_rgb(image)
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = "file is empty (0 bytes)" if _is_empty(path) else str(e)
        raise ImageReadError(f"cannot read image {path}: {reason}") from None
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)
    if out is None:
        return pixels
    out[...] = pixels
    return out


def _is_empty(path):
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _read_chunk(paths, size, draft_ratio):
    """Worker: reads a list of images into one (n, 3, size, size) array.

    Returns ``(array, errors)``; ``errors`` maps a position in the chunk to the message of an
    image that could not be read (its slot in the array is left zero).
    """
    images = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    errors = {}
    for j, path in enumerate(paths):
        try:
            read_image(path, size, draft_ratio, out=images[j])
        except ImageReadError as e:
            errors[j] = str(e)
    return images, errors


def read_images(paths, size, workers=None, chunk=4, max_pending=None, draft_ratio=DRAFT_RATIO):
    """Yields ``(start, images, errors)`` chunk by chunk, in order, decoding in parallel.

    ``images`` is a (n, 3, size, size) uint8 array holding ``paths[start:start + n]``, and
    ``errors`` maps positions within the chunk to the messages of unreadable images.
    Threads, not processes: Pillow releases the GIL while it decodes and resizes, so threads
    use every core with no start-up cost and no copying of pixels between processes (measured
    by bench/prepro.py). At most ``max_pending`` chunks of ``chunk`` images are in flight or
    waiting, so memory stays bounded whatever the number of images. ``workers=1`` reads in the
    calling thread.
    """
    workers = workers or os.cpu_count() or 1
    starts = range(0, len(paths), chunk)
    if workers == 1:
        for start in starts:
            yield (start,) + _read_chunk(paths[start:start + chunk], size, draft_ratio)
        return
    max_pending = max_pending or workers * 8
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="read_images")
    pending = collections.deque()
    try:
        submitted = 0
        while pending or submitted < len(starts):
            while submitted < len(starts) and len(pending) < max_pending:
                start = starts[submitted]
                pending.append((start, pool.submit(_read_chunk, paths[start:start + chunk], size,
                                                   draft_ratio)))
                submitted += 1
            start, future = pending.popleft()
            yield (start,) + future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def folder_images(folder):
    """The image files of ``folder`` (by extension, case-insensitive; not hidden), sorted."""
    names = sorted(name for name in os.listdir(folder)
                   if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
                   and os.path.isfile(os.path.join(folder, name)))
    if not names:
        raise DataError(f"folder {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, name) for name in names]


def load_images(paths, size):
    """(N, size, size, 3) uint8 RGB; errors name the file."""
    try:
        return np.stack([read_image(path, size).transpose(1, 2, 0) for path in paths])
    except ImageReadError as e:
        raise DataError(str(e)) from None
