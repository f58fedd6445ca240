"""The datasets ``prepro_coco.py`` reads, as one list of image records.

A record is a dict ``{"file_path": str, "captions": [str, ...], "id": int or None,
"split": str or None}``; ``file_path`` is relative to the images root. Three inputs:

1. NeuralTalk2's raw JSON, ``[{"file_path", "captions": [...], "id"}]`` (imcap_keras' input);
2. the MS COCO layout (``annotations/captions_{val,train}YEAR.json``, ``images/{val,train}YEAR``),
   read with pycocotools in the order of NeuralTalk2's ``coco_preprocess.ipynb`` (val images,
   then train images), so it gives the same output as the raw JSON that notebook writes;
3. Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json``, with its splits.

Splits are imcap_keras' random ones (``assign_random_splits``), Karpathy's from the dataset JSON,
or file-name lists ``coco_{train,restval,val,test}.txt`` in a folder (``apply_split_lists``).
"""

import os

from pycocotools.coco import COCO

from imcap.utils.fileio import DataError, load_json

SPLITS = ("train", "restval", "val", "test")


def _check_file_path(source, where, file_path):
    if not isinstance(file_path, str) or not file_path:
        raise DataError(f"{source}: {where}: field 'file_path' must be a non-empty string, "
                        f"got {file_path!r}")
    parts = file_path.replace("\\", "/").split("/")
    if os.path.isabs(file_path) or ".." in parts:
        raise DataError(f"{source}: {where}: file path {file_path!r} leaves the images root "
                        f"(absolute paths and '..' are refused)")


def _check_captions(source, where, captions):
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DataError(f"{source}: {where}: field 'captions' must be a list of strings, "
                        f"got {type(captions).__name__}")
    if not captions:
        raise DataError(f"{source}: {where}: image has no captions")


def _check_unique_ids(source, records):
    seen = {}
    for i, record in enumerate(records):
        image_id = record["id"]
        if image_id is None:
            continue
        if image_id in seen:
            raise DataError(f"{source}: image id {image_id} appears twice (images {seen[image_id]} "
                            f"and {i}, {records[seen[image_id]]['file_path']!r} and "
                            f"{record['file_path']!r})")
        seen[image_id] = i


def load_raw_json(path):
    """Reads NeuralTalk2's raw list ``[{"file_path", "captions", "id"?}]``."""
    data = load_json(path, "input_json")
    if not isinstance(data, list):
        raise DataError(f"input_json {path}: expected a list of images "
                        f"[{{'file_path', 'captions', 'id'}}], got a {type(data).__name__}")
    records = []
    for i, item in enumerate(data):
        where = f"item {i}"
        if not isinstance(item, dict):
            raise DataError(f"input_json {path}: {where}: expected an object, "
                            f"got {type(item).__name__}")
        for field in ("file_path", "captions"):
            if field not in item:
                raise DataError(f"input_json {path}: {where}: field '{field}' is missing")
        _check_file_path(f"input_json {path}", where, item["file_path"])
        where = f"item {i} ({item['file_path']})"
        _check_captions(f"input_json {path}", where, item["captions"])
        image_id = item.get("id")
        if image_id is not None and (not isinstance(image_id, int) or isinstance(image_id, bool)):
            raise DataError(f"input_json {path}: {where}: field 'id' must be an integer, "
                            f"got {image_id!r}")
        records.append({"file_path": item["file_path"], "captions": list(item["captions"]),
                        "id": image_id, "split": None})
    _check_unique_ids(f"input_json {path}", records)
    return records


def _load_coco_captions(path):
    data = load_json(path, "COCO caption annotations")
    if not isinstance(data, dict):
        raise DataError(f"COCO caption annotations {path}: expected an object with 'images' and "
                        f"'annotations', got a {type(data).__name__}")
    for field in ("images", "annotations"):
        if not isinstance(data.get(field), list):
            raise DataError(f"COCO caption annotations {path}: field '{field}' is missing or not "
                            f"a list")
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"COCO caption annotations {path}: images[{i}] needs 'id' and "
                            f"'file_name'")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(
                ann.get("caption"), str):
            raise DataError(f"COCO caption annotations {path}: annotations[{i}] needs 'image_id' "
                            f"and a string 'caption'")
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    return coco


def load_coco(coco_path, year="2014"):
    """Reads the MS COCO layout under ``coco_path``: val images first, then train."""
    records = []
    for part in ("val", "train"):
        path = os.path.join(coco_path, "annotations", f"captions_{part}{year}.json")
        coco = _load_coco_captions(path)
        known = set(coco.imgs)
        for ann in coco.dataset["annotations"]:
            if ann["image_id"] not in known:
                raise DataError(f"COCO caption annotations {path}: caption {ann.get('id')} names "
                                f"image_id {ann['image_id']}, which is not in 'images'")
        for image_id, image in coco.imgs.items():
            file_path = f"{part}{year}/{image['file_name']}"
            _check_file_path(path, f"image {image_id}", image["file_name"])
            captions = [ann["caption"] for ann in coco.imgToAnns.get(image_id, [])]
            if not captions:
                raise DataError(f"COCO caption annotations {path}: image {image_id} "
                                f"({image['file_name']}) has no captions")
            records.append({"file_path": file_path, "captions": captions, "id": image_id,
                            "split": None})
    _check_unique_ids(f"COCO annotations in {coco_path}", records)
    return records


def load_karpathy(path):
    """Reads Karpathy's ``dataset_*.json`` with its splits (``restval`` kept as such here)."""
    data = load_json(path, "Karpathy dataset json")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"Karpathy dataset json {path}: expected an object with a list "
                        f"'images', as in dataset_coco.json")
    records = []
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(image, dict):
            raise DataError(f"Karpathy dataset json {path}: {where}: expected an object")
        for field in ("filename", "split", "sentences"):
            if field not in image:
                raise DataError(f"Karpathy dataset json {path}: {where}: field '{field}' is "
                                f"missing")
        file_path = image["filename"]
        if image.get("filepath"):
            file_path = f"{image['filepath']}/{file_path}"
        _check_file_path(f"Karpathy dataset json {path}", where, file_path)
        where = f"images[{i}] ({file_path})"
        if image["split"] not in SPLITS:
            raise DataError(f"Karpathy dataset json {path}: {where}: split {image['split']!r} "
                            f"is not one of {', '.join(SPLITS)}")
        sentences = image["sentences"]
        if not isinstance(sentences, list) or not all(
                isinstance(s, dict) and isinstance(s.get("raw"), str) for s in sentences):
            raise DataError(f"Karpathy dataset json {path}: {where}: field 'sentences' must be a "
                            f"list of objects with a string 'raw'")
        _check_captions(f"Karpathy dataset json {path}", where, [s["raw"] for s in sentences])
        image_id = image.get("cocoid", image.get("imgid"))
        records.append({"file_path": file_path, "captions": [s["raw"] for s in sentences],
                        "id": image_id, "split": image["split"]})
    _check_unique_ids(f"Karpathy dataset json {path}", records)
    return records


def apply_split_lists(records, splits_dir):
    """Assigns splits from ``coco_{split}.txt`` file-name lists; returns the listed records.

    A list names images by file name (``COCO_val2014_000000391895.jpg``) or by file path
    relative to the images root. Records named in no list are left out (their number is
    returned too); a name that matches no record is an error.
    """
    by_name = {}
    for record in records:
        by_name[record["file_path"]] = record
        by_name.setdefault(os.path.basename(record["file_path"]), record)
    found = False
    for split in SPLITS:
        path = os.path.join(splits_dir, f"coco_{split}.txt")
        if not os.path.isfile(path):
            continue
        found = True
        with open(path) as f:
            for line_number, line in enumerate(f, 1):
                name = line.strip()
                if not name:
                    continue
                if name not in by_name:
                    raise DataError(f"split list {path} line {line_number}: {name!r} is not "
                                    f"among the input images")
                by_name[name]["split"] = split
    if not found:
        raise DataError(f"splits_dir {splits_dir}: no split list found, expected "
                        f"{', '.join(f'coco_{s}.txt' for s in SPLITS)}")
    listed = [r for r in records if r["split"] is not None]
    return listed, len(records) - len(listed)


def merge_restval(records, keep_restval):
    """Karpathy's ``restval`` joins ``train`` unless ``keep_restval``."""
    if not keep_restval:
        for record in records:
            if record["split"] == "restval":
                record["split"] = "train"


def assign_random_splits(records, num_val, num_test):
    """imcap_keras' split, on already shuffled records: first ``num_val`` val, next ``num_test``
    test.

    Returns the numbers of val and test images assigned (fewer than asked when the records run
    out).
    """
    for i, record in enumerate(records):
        if i < num_val:
            record["split"] = "val"
        elif i < num_val + num_test:
            record["split"] = "test"
        else:
            record["split"] = "train"
    return min(num_val, len(records)), min(num_test, max(0, len(records) - num_val))
