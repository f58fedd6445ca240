"""The synthetic shapes dataset: COCO layout, deterministic, captions that match the pictures."""

import filecmp
import json
import os

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from imcap.evaluation.scoring import best_reference_scores
from imcap.data import make_shapes
from imcap.data.vocabulary import tokenize


def test_coco_layout_loads_with_pycocotools(shapes_dir):
    for part, count in (("train", 20), ("val", 10)):
        captions = COCO(str(shapes_dir / "annotations" / f"captions_{part}2014.json"))
        instances = COCO(str(shapes_dir / "annotations" / f"instances_{part}2014.json"))
        assert len(captions.getImgIds()) == count
        assert sorted(captions.getImgIds()) == sorted(instances.getImgIds())
        assert [c["name"] for c in instances.loadCats(instances.getCatIds())] == list(
            make_shapes.SHAPES)
        for image_id in captions.getImgIds():
            image = captions.imgs[image_id]
            path = shapes_dir / "images" / f"{part}2014" / image["file_name"]
            assert image["file_name"] == f"COCO_{part}2014_{image_id:012d}.jpg"
            assert Image.open(path).size == (48, 48)
            anns = captions.imgToAnns[image_id]
            assert len(anns) == 5 and len({a["caption"] for a in anns}) == 5
            assert all(len(tokenize(a["caption"])) <= 18 for a in anns)
            assert 1 <= len(instances.getAnnIds(imgIds=image_id)) <= 3


def test_objects_are_where_their_boxes_say_with_their_colours(shapes_dir):
    instances = COCO(str(shapes_dir / "annotations" / "instances_train2014.json"))
    captions = COCO(str(shapes_dir / "annotations" / "captions_train2014.json"))
    for image_id in instances.getImgIds():
        path = shapes_dir / "images" / "train2014" / instances.imgs[image_id]["file_name"]
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=int)
        text = " ".join(a["caption"] for a in captions.imgToAnns[image_id])
        for ann in instances.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 48 and y + h <= 48
            # the centre of the lower half lies inside every shape (the triangle points up)
            cx, cy = int(x + w / 2), int(y + 0.7 * h)
            patch = pixels[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(axis=0)
            assert np.abs(patch - make_shapes.COLORS[ann["color"]]).max() < 45
            shape = instances.cats[ann["category_id"]]["name"]
            assert f"{ann['color']} {shape}" in text and ann["size"] in text


def test_karpathy_json_and_split_lists_agree(shapes_dir):
    with open(shapes_dir / "dataset_shapes.json") as f:
        images = json.load(f)["images"]
    counts = {}
    for image in images:
        counts[image["split"]] = counts.get(image["split"], 0) + 1
        listed = (shapes_dir / "splits" / f"coco_{image['split']}.txt").read_text().split()
        assert image["filename"] in listed
        assert len(image["sentences"]) == 5
    assert counts == {"train": 20, "restval": 2, "val": 4, "test": 4}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    for out, seed in ((a, 5), (b, 5), (c, 6)):
        make_shapes.generate(out, num_train=4, num_restval=0, num_val=2, num_test=1,
                             image_size=32, seed=seed)
    names = []
    for root, _, files in os.walk(a):
        names += [os.path.relpath(os.path.join(root, f), a) for f in files]
    assert len(names) == 7 + 4 + 1 + 4  # images, annotation files, Karpathy json, split lists
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == []
    assert not filecmp.cmp(os.path.join(a, "annotations", "captions_train2014.json"),
                           os.path.join(c, "annotations", "captions_train2014.json"),
                           shallow=False)


def test_every_caption_names_every_object_in_reading_order(shapes_dir):
    instances = COCO(str(shapes_dir / "annotations" / "instances_val2014.json"))
    captions = COCO(str(shapes_dir / "annotations" / "captions_val2014.json"))
    cell = 48 / make_shapes.GRID
    for image_id in instances.getImgIds():
        objects = []
        for ann in instances.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            shape = instances.cats[ann["category_id"]]["name"]
            objects.append(((int((y + h / 2) // cell), int((x + w / 2) // cell)),
                            f"{ann['color']} {shape}"))
        names = [name for _, name in sorted(objects)]
        for ann in captions.imgToAnns[image_id]:
            text, found = ann["caption"].lower(), []
            for name in names:
                position = text.find(name, found[-1] + 1 if found else 0)
                assert position >= 0, (ann["caption"], names)
                found.append(position)


def test_the_references_agree_like_cocos_best_reference_cider():
    # each of the default test split's images captioned by its best own reference: the most any
    # captioner saying one of them can score; references that each described another aspect
    # (the count alone, one object's place) capped this at 3.4
    ground_truth = {}
    for image_id in range(2101, 2201):
        rng = np.random.default_rng([0, image_id])
        ground_truth[image_id] = make_shapes.describe(*make_shapes.sample_scene(rng, 128))
    best, per_reference = best_reference_scores(ground_truth)
    assert 5.8 < best < 6.5
    assert best >= max(per_reference) and len(per_reference) == 5
