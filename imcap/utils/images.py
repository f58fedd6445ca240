"""Reading images into the (3, S, S) uint8 RGB arrays of the NeuralTalk2 HDF5, in parallel.

Any mode Pillow opens becomes RGB: grayscale is repeated over three channels, 16-bit images are
scaled to 8 bits (65535 -> 255), CMYK is converted, palette images are expanded, and transparent
pixels (RGBA, LA, palette with transparency) are composited over white. JPEGs are decoded at a
reduced DCT scale (``Image.draft``) when the image is at least twice the target size, which is
several times cheaper than a full decode followed by a resize and gives the same picture.
The image is squashed to S x S without cropping, as the seed's ``imresize(I, (256, 256))`` did.
"""

import collections
import concurrent.futures
import multiprocessing
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


def read_image(path, size):
    """Reads one image file as a (3, size, size) uint8 RGB array.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (size, size))
            image.load()
            rgb = to_rgb(image)
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = "file is empty (0 bytes)" if _is_empty(path) else str(e)
        raise ImageReadError(f"cannot read image {path}: {reason}") from None
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)


def _is_empty(path):
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _read_chunk(paths, size):
    """Worker: reads a list of images; a failure is returned as its message, not raised."""
    out = []
    for path in paths:
        try:
            out.append(read_image(path, size))
        except ImageReadError as e:
            out.append(str(e))
    return out


def read_images(paths, size, workers=None, chunk=16, max_pending=None):
    """Yields ``(index, array or error message)`` for ``paths`` in order, decoding in parallel.

    At most ``max_pending`` chunks of ``chunk`` images are in flight or waiting, so memory stays
    bounded whatever the number of images. ``workers=1`` reads in this process.
    """
    workers = workers or os.cpu_count() or 1
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    if workers == 1:
        results = (_read_chunk(c, size) for c in chunks)
        yield from _number(results, chunk)
        return
    max_pending = max_pending or workers * 4
    # spawn, not fork: the caller may have started threads (TensorFlow, h5py) that fork would copy
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    pending = collections.deque()

    def results():
        submitted = 0
        while pending or submitted < len(chunks):
            while submitted < len(chunks) and len(pending) < max_pending:
                pending.append(pool.submit(_read_chunk, chunks[submitted], size))
                submitted += 1
            yield pending.popleft().result()

    try:
        yield from _number(results(), chunk)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _number(chunk_results, chunk):
    for c, arrays in enumerate(chunk_results):
        for j, item in enumerate(arrays):
            yield c * chunk + j, item
