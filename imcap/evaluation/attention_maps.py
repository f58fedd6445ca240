"""Figures of where the captioner looks: the attention map per word over the image, and the
sentinel weight per word (the paper's 1 - beta, "visual grounding probability").

An attention map is the (grid x grid) alpha of a word, upsampled to the image, smoothed with a
Gaussian of ``sig`` grid cells and cut at ``th`` times its maximum (the two knobs of
imcap_keras' notebook, ``sig`` and ``th``), drawn over the image with matplotlib: off-screen
when saved to a file, with the active backend (inline in a notebook) otherwise.
"""

import math

import numpy as np
from PIL import Image

from imcap.utils.fileio import atomic_output


def _gaussian_blur(values, sigma):
    """Separable Gaussian smoothing of a 2-D array (reflecting at the borders)."""
    if sigma <= 0:
        return values
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def attention_map(alpha, size, sig=0.5, th=0.0):
    """A (size, size) map in [0, 1] from one word's attention ``alpha`` over K = g x g
    regions (row-major, as the CNN grid is flattened)."""
    alpha = np.asarray(alpha, dtype=np.float32)
    grid = int(round(math.sqrt(alpha.size)))
    if grid * grid != alpha.size:
        raise ValueError(f"attention over {alpha.size} regions is not a square grid")
    upsampled = np.asarray(Image.fromarray(alpha.reshape(grid, grid), mode="F").resize(
        (size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    smoothed = _gaussian_blur(upsampled, sig * size / grid)
    smoothed -= smoothed.min()
    peak = smoothed.max()
    if peak > 0:
        smoothed /= peak
    smoothed[smoothed < th] = 0.0
    return smoothed.astype(np.float32)


def attention_figure(image, words, alpha, beta=None, sig=0.5, th=0.0, path=None,
                     columns=5, title=None):
    """Draws the image, one panel per word with its attention map (and beta), and a bar chart
    of 1 - beta per word; saves it to ``path`` (PNG) if given and returns the figure.

    Args:
        image: (H, W, 3) uint8 RGB.
        words: the caption's words (``<eos>`` included if it should be shown).
        alpha: (len(words), K) attention over the regions.
        beta: (len(words),) sentinel weights, or None (no sentinel).
    """
    if path:  # drawn off-screen, whatever backend is active
        from matplotlib.figure import Figure
        figure = Figure()
    else:  # shown by the active backend (inline in a notebook)
        import matplotlib.pyplot as plt
        figure = plt.figure()
    size = min(image.shape[:2])
    image = np.asarray(Image.fromarray(image).resize((size, size)))
    panels = len(words) + 1
    rows = math.ceil(panels / columns)
    extra = 1 if beta is not None else 0
    figure.set_size_inches(2.4 * columns, 2.5 * rows + 2.2 * extra)
    grid = figure.add_gridspec(rows + extra, columns,
                               height_ratios=[1] * rows + [0.8] * extra)
    axis = figure.add_subplot(grid[0, 0])
    axis.imshow(image)
    axis.set_title(title or "image", fontsize=9)
    axis.axis("off")
    for i, word in enumerate(words):
        axis = figure.add_subplot(grid[(i + 1) // columns, (i + 1) % columns])
        axis.imshow(image)
        axis.imshow(attention_map(alpha[i], size, sig, th), cmap="jet", alpha=0.5,
                    vmin=0, vmax=1)
        label = word if beta is None else f"{word} (β={beta[i]:.2f})"
        axis.set_title(label, fontsize=9)
        axis.axis("off")
    if beta is not None:
        axis = figure.add_subplot(grid[rows, :])
        axis.bar(range(len(words)), 1.0 - np.asarray(beta), color="tab:blue")
        axis.set_xticks(range(len(words)))
        axis.set_xticklabels(words, rotation=30, fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_ylabel("1 - β (visual)")
    figure.suptitle(" ".join(w for w in words if w != "<eos>"), fontsize=11)
    figure.tight_layout()
    if path:
        with atomic_output(path) as temporary:
            figure.savefig(temporary, dpi=80, format="png")
    return figure
