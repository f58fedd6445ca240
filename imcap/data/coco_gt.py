"""COCO-format ground-truth caption files for the val and test splits.

``prepro_coco.py`` writes one per split beside its output JSON (``<name>_val_gt.json``,
``<name>_test_gt.json``) with the raw, unprocessed captions, so that eval_caps and early stopping
can score generated captions without any other file. The layout is COCO's caption annotations:
``{"info", "licenses", "type": "captions", "images": [{"id", "file_name"}],
"annotations": [{"image_id", "id", "caption"}]}``, which pycocotools ``COCO`` loads.
"""

import os

GT_SPLITS = ("val", "test")


def gt_path(output_json, split):
    """The ground-truth file written for ``split`` next to the preprocessed ``output_json``."""
    root, _ = os.path.splitext(output_json)
    return f"{root}_{split}_gt.json"


def build_gt(records, split, source):
    """Builds the COCO caption annotations of ``split`` from image records."""
    images, annotations = [], []
    for record in records:
        if record["split"] != split:
            continue
        images.append({"id": record["id"], "file_name": record["file_path"]})
        for caption in record["captions"]:
            annotations.append({"image_id": record["id"], "id": len(annotations) + 1,
                                "caption": caption})
    return {
        "info": {"description": f"ground-truth captions of the {split} split, from {source}"},
        "licenses": [],
        "type": "captions",
        "images": images,
        "annotations": annotations,
    }
