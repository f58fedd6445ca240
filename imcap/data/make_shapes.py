"""A synthetic captioning dataset of coloured shapes, written in MS COCO's own layout.

``python -m imcap.data.make_shapes --out DIR`` writes::

    DIR/images/train2014/COCO_train2014_000000000001.jpg ...   train images
    DIR/images/val2014/COCO_val2014_000000001901.jpg ...       restval, val and test images
    DIR/annotations/captions_{train,val}2014.json              COCO caption annotations
    DIR/annotations/instances_{train,val}2014.json             boxes, categories (the shapes),
                                                               and each object's colour and size
    DIR/dataset_shapes.json                                    Karpathy-style, with its splits
    DIR/splits/coco_{train,restval,val,test}.txt               the same splits as file-name lists

so ``prepro_coco.py --coco_path DIR`` runs exactly the code path of real COCO. Each image holds
one to three objects, each with a colour, a shape, a size and a grid position, on a plain noisy
background; five captions describe it in different phrasings (a list of the objects, their
number and the background, a position, a relation between two objects), each naming every object
in reading order, as COCO's five annotators each describe the whole picture. The same ``--seed``
always gives the same files.
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from imcap.utils.cli import ArgumentParser
from imcap.utils.fileio import atomic_output, check_writable, write_json_atomic

COLORS = {"red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 75, 215),
          "yellow": (235, 210, 30), "purple": (135, 50, 175), "orange": (240, 135, 25)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.3, "large": 0.42}  # radius as a fraction of a grid cell
BACKGROUNDS = {"gray": 120, "white": 235, "black": 25}
GRID = 3
PLACES = [["in the top left", "at the top", "in the top right"],
          ["on the left", "in the center", "on the right"],
          ["in the bottom left", "at the bottom", "in the bottom right"]]
NUMBERS = {1: "one", 2: "two", 3: "three"}
YEAR = "2014"


def sample_scene(rng, image_size):
    """Draws the objects of one image: colour, shape, size, grid cell, centre and radius."""
    cell = image_size / GRID
    num_objects = int(rng.integers(1, 4))
    cells = rng.choice(GRID * GRID, size=num_objects, replace=False)
    objects = []
    for c in sorted(int(c) for c in cells):
        row, col = divmod(c, GRID)
        size = str(rng.choice(list(SIZES)))
        radius = SIZES[size] * cell
        slack = cell / 2 - radius
        cx = (col + 0.5) * cell + rng.uniform(-0.6, 0.6) * slack
        cy = (row + 0.5) * cell + rng.uniform(-0.6, 0.6) * slack
        objects.append({"color": str(rng.choice(list(COLORS))), "shape": str(rng.choice(SHAPES)),
                        "size": size, "row": row, "col": col, "cx": cx, "cy": cy, "r": radius})
    background = str(rng.choice(list(BACKGROUNDS)))
    return objects, background


def polygon(obj):
    """The outline of an object as a flat [x1, y1, x2, y2, ...] list (COCO segmentation)."""
    cx, cy, r = obj["cx"], obj["cy"], obj["r"]
    if obj["shape"] == "square":
        points = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif obj["shape"] == "triangle":
        points = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]
    return [round(float(v), 2) for point in points for v in point]


def render(objects, background, image_size, rng):
    """Renders the scene as an RGB Pillow image with mild pixel noise."""
    level = BACKGROUNDS[background]
    image = Image.new("RGB", (image_size, image_size), (level, level, level))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        color = COLORS[obj["color"]]
        cx, cy, r = obj["cx"], obj["cy"], obj["r"]
        if obj["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        else:
            flat = polygon(obj)
            draw.polygon(list(zip(flat[::2], flat[1::2])), fill=color)
    pixels = np.asarray(image, dtype=np.int16)
    noise = rng.normal(0, 6, size=pixels.shape).round().astype(np.int16)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _name(obj, with_size=True):
    words = ([obj["size"]] if with_size else []) + [obj["color"], obj["shape"]]
    return " ".join(words)


def _join(phrases):
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _relation(a, b):
    if a["col"] != b["col"]:
        return "to the left of" if a["col"] < b["col"] else "to the right of"
    return "above" if a["row"] < b["row"] else "below"


def describe(objects, background):
    """Five captions of one scene, each phrased differently (at most 16 words).

    Like the five annotators of an MS COCO image, every caption names every object, in reading
    order (top row first, left to right): a list with sizes, the count and the background, the
    first object's place, a relation between the first two, and "there is ...". Sizes are left out
    where three objects would make a caption too long. The captions are a function of the scene.
    """
    count = len(objects)
    full = [f"a {_name(o)}" for o in objects]
    short = [f"a {_name(o, with_size=False)}" for o in objects]
    first = objects[0]
    place = PLACES[first["row"]][first["col"]]
    listing = _join(full)
    if count == 1:
        placed = f"{short[0]} {place} of the image"
        related = f"a picture of {full[0]}"
        there = f"there is {full[0]} on a {background} background"
    else:
        named = full if count < 3 else short
        placed = f"{named[0]} {place} with {_join(named[1:])}"
        related = f"{named[0]} {_relation(first, objects[1])} {_join(named[1:])}"
        there = f"there is {listing}"
    shapes_word = "shape" if count == 1 else "shapes"
    return [
        listing[0].upper() + listing[1:] + ".",
        f"{NUMBERS[count]} {shapes_word} on a {background} background: {_join(short)}",
        placed,
        related,
        there,
    ]


def make_image(image_id, seed, image_size):
    """Scene, rendered image and captions of one image id; deterministic in (seed, image_id)."""
    rng = np.random.default_rng([seed, image_id])
    objects, background = sample_scene(rng, image_size)
    image = render(objects, background, image_size, rng)
    return objects, background, image, describe(objects, background)


def _coco_header(kind):
    return {"info": {"description": f"imcap synthetic shapes, COCO {kind} annotations",
                     "year": int(YEAR)},
            "licenses": [{"id": 1, "name": "CC0", "url": ""}]}


def generate(out, num_train=1900, num_restval=100, num_val=100, num_test=100, image_size=128,
             seed=0, quality=92):
    """Writes the dataset under ``out`` (see the module docstring); returns the image count."""
    plan = ([("train", "train")] * num_train + [("val", "restval")] * num_restval
            + [("val", "val")] * num_val + [("val", "test")] * num_test)
    captions = {part: dict(_coco_header("caption"), images=[], annotations=[])
                for part in ("train", "val")}
    instances = {part: dict(_coco_header("instance"), images=[], annotations=[],
                            categories=[{"id": i + 1, "name": s, "supercategory": "shape"}
                                        for i, s in enumerate(SHAPES)])
                 for part in ("train", "val")}
    karpathy, split_lists = [], {s: [] for s in ("train", "restval", "val", "test")}
    for part in ("train", "val"):
        os.makedirs(os.path.join(out, "images", part + YEAR), exist_ok=True)
        check_writable(os.path.join(out, "images", part + YEAR))
    for index, (part, split) in enumerate(tqdm(plan, desc="shapes", unit="img", file=sys.stderr)):
        image_id = index + 1
        objects, background, image, texts = make_image(image_id, seed, image_size)
        file_name = f"COCO_{part}{YEAR}_{image_id:012d}.jpg"
        with atomic_output(os.path.join(out, "images", part + YEAR, file_name),
                           check=False) as temporary:  # the folder is checked above
            image.save(temporary, format="JPEG", quality=quality)
        entry = {"id": image_id, "file_name": file_name, "width": image_size,
                 "height": image_size, "license": 1}
        captions[part]["images"].append(entry)
        instances[part]["images"].append(entry)
        for text in texts:
            annotations = captions[part]["annotations"]
            annotations.append({"image_id": image_id, "id": len(annotations) + 1, "caption": text})
        for obj in objects:
            annotations = instances[part]["annotations"]
            x0, y0 = obj["cx"] - obj["r"], obj["cy"] - obj["r"]
            side = 2 * obj["r"]
            area = {"circle": np.pi * obj["r"] ** 2, "square": side * side,
                    "triangle": side * side / 2}[obj["shape"]]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                "category_id": SHAPES.index(obj["shape"]) + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(side, 2), round(side, 2)],
                "area": round(float(area), 2), "segmentation": [polygon(obj)],
                "color": obj["color"], "size": obj["size"]})
        split_lists[split].append(file_name)
        karpathy.append({
            "filepath": part + YEAR, "filename": file_name, "imgid": index, "cocoid": image_id,
            "split": split, "sentids": list(range(5 * index, 5 * index + 5)),
            "sentences": [{"raw": t, "imgid": index, "sentid": 5 * index + k,
                           "tokens": t.lower().replace(",", "").replace(".", "").split()}
                          for k, t in enumerate(texts)]})
    os.makedirs(os.path.join(out, "splits"), exist_ok=True)
    for split, names in split_lists.items():
        with atomic_output(os.path.join(out, "splits", f"coco_{split}.txt")) as temporary, \
                open(temporary, "w") as f:
            f.write("".join(name + "\n" for name in names))
    write_json_atomic(os.path.join(out, "dataset_shapes.json"),
                      {"dataset": "shapes", "images": karpathy})
    for part in ("train", "val"):
        write_json_atomic(os.path.join(out, "annotations", f"instances_{part}{YEAR}.json"),
                          instances[part])
    # caption annotations last: once they exist, the dataset is complete
    for part in ("train", "val"):
        write_json_atomic(os.path.join(out, "annotations", f"captions_{part}{YEAR}.json"),
                          captions[part])
    return len(plan)


def main(argv=None):
    parser = ArgumentParser(prog="make_shapes.py", description="Write the synthetic shapes captioning dataset "
                                                 "in MS COCO's layout.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num_train", type=int, default=1900, help="train images (train2014)")
    parser.add_argument("--num_restval", type=int, default=100,
                        help="Karpathy-style restval images (val2014)")
    parser.add_argument("--num_val", type=int, default=100, help="val images (val2014)")
    parser.add_argument("--num_test", type=int, default=100, help="test images (val2014)")
    parser.add_argument("--image_size", type=int, default=128, help="side of the square images")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    for name in ("num_train", "num_restval", "num_val", "num_test"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be at least 0, got {getattr(args, name)}")
    if args.image_size < 24:
        parser.error(f"--image_size must be at least 24, got {args.image_size}")
    n = generate(args.out, args.num_train, args.num_restval, args.num_val, args.num_test,
                 args.image_size, args.seed)
    print(f"wrote {n} images and their annotations to {args.out}")


if __name__ == "__main__":
    main()
