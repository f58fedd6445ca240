"""What the attention looks at, measured with the synthetic set's boxes.

- Pointing accuracy: for each generated colour or shape word that names an object of the image,
  does the attention maximum (a cell of the g x g grid) fall inside a box of such an object
  (the cell's centre inside the box)? Chance is the fraction of the image those boxes cover
  (a uniformly random point). Within one cell: the maximum's cell or one of its 8 neighbours
  holds such a centre.
- The sentinel weight beta, averaged over visual words (colours, shapes, sizes) and over
  non-visual words (a, the, of, and, is, ...): the model should look at the image for the first
  and trust its language model (the sentinel) for the second.
"""

import numpy as np

from imcap.utils.fileio import DataError, load_json
from imcap.data.make_shapes import COLORS, SHAPES, SIZES

VISUAL_WORDS = frozenset(COLORS) | frozenset(SHAPES) | frozenset(SIZES)
NON_VISUAL_WORDS = frozenset({"a", "the", "of", "and", "is", "on", "in", "there", "at", "to"})


def load_objects(instances_path):
    """``({image_id: [{"box": (x0, y0, x1, y1), "shape", "color", "size"}]}, {image_id:
    (width, height)})`` from a COCO instances file written by make_shapes."""
    data = load_json(instances_path, "instances file")
    try:
        categories = {c["id"]: c["name"] for c in data["categories"]}
        sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
        objects = {image_id: [] for image_id in sizes}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            objects[ann["image_id"]].append({
                "box": (x, y, x + w, y + h), "shape": categories[ann["category_id"]],
                "color": ann["color"], "size": ann["size"]})
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"instances file {instances_path}: expected make_shapes' COCO instances "
                        f"with 'color' and 'size' per annotation ({e!r})") from None
    return objects, sizes


def _cell_centres(grid, width, height):
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    return (cols + 0.5) * width / grid, (rows + 0.5) * height / grid  # (g, g) x and y


def _inside(boxes, x, y):
    """(g, g) bool: which cell centres lie inside any of ``boxes``."""
    hit = np.zeros(x.shape, bool)
    for x0, y0, x1, y1 in boxes:
        hit |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return hit


def _area_fraction(boxes, width, height, samples=64):
    """The fraction of the image that ``boxes`` cover (their union), on a fine grid."""
    x, y = _cell_centres(samples, width, height)
    return float(_inside(boxes, x, y).mean())


def grounding_metrics(attention, vocabulary, objects, image_sizes):
    """Pointing accuracy (with chance and within-one-cell) and mean beta by word kind.

    Args:
        attention: ``{"image_id", "words", "alpha", "beta"}`` arrays as test.py
            ``--save_attention`` writes them: (N,), (N, L), (N, L, K), (N, L).
        vocabulary: the ``Vocabulary`` of the word ids.
        objects, image_sizes: from ``load_objects``.
    """
    alpha = np.asarray(attention["alpha"])
    grid = int(round(np.sqrt(alpha.shape[-1])))
    if grid * grid != alpha.shape[-1]:
        raise ValueError(f"attention over {alpha.shape[-1]} regions is not a square grid")
    hits = near = chance = pointed = unmatched = 0
    betas = {"visual": [], "nonvisual": []}
    for n, image_id in enumerate(np.asarray(attention["image_id"]).tolist()):
        if image_id not in objects:
            raise DataError(f"image {image_id} of the attention file has no boxes")
        width, height = image_sizes[image_id]
        x, y = _cell_centres(grid, width, height)
        for t, word_id in enumerate(attention["words"][n]):
            if word_id == 0:
                break
            word = vocabulary.word(word_id)
            if word in VISUAL_WORDS:
                betas["visual"].append(float(attention["beta"][n][t]))
            elif word in NON_VISUAL_WORDS:
                betas["nonvisual"].append(float(attention["beta"][n][t]))
            if word not in COLORS and word not in SHAPES:
                continue
            boxes = [o["box"] for o in objects[image_id] if word in (o["color"], o["shape"])]
            if not boxes:
                unmatched += 1  # a word naming nothing in the image
                continue
            inside = _inside(boxes, x, y)
            row, col = divmod(int(np.argmax(alpha[n, t])), grid)
            pointed += 1
            hits += bool(inside[row, col])
            near += bool(inside[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].any())
            chance += _area_fraction(boxes, width, height)

    def mean(values):
        return float(np.mean(values)) if values else None

    return {"pointing": hits / pointed if pointed else None,
            "pointing_chance": chance / pointed if pointed else None,
            "pointing_within_one_cell": near / pointed if pointed else None,
            "pointing_words": pointed, "words_naming_no_object": unmatched,
            "beta_visual": mean(betas["visual"]), "beta_nonvisual": mean(betas["nonvisual"]),
            "visual_words": len(betas["visual"]), "nonvisual_words": len(betas["nonvisual"])}
