"""The ground-truth files prepro_coco.py writes, as pycocotools reads them, and the scoring
helpers built on them."""

import json

import pytest
from pycocotools.coco import COCO

from imcap.data import coco_gt
from imcap.evaluation.scoring import best_reference_scores, load_ground_truth, score_captions
from imcap.utils.fileio import DataError

RECORDS = [
    {"id": 7, "split": "val", "file_path": "val2014/a.jpg",
     "captions": ["A red circle.", "a red circle on grey", "one red circle"]},
    {"id": 3, "split": "val", "file_path": "val2014/b.jpg",
     "captions": ["a blue square", "A blue square!", "the blue square"]},
    {"id": 5, "split": "test", "file_path": "val2014/c.jpg", "captions": ["a green triangle"]},
]


def write_gt(tmp_path, split="val"):
    path = coco_gt.gt_path(str(tmp_path / "data.json"), split)
    with open(path, "w") as f:
        json.dump(coco_gt.build_gt(RECORDS, split, "the test"), f)
    return path


def test_the_files_are_named_beside_the_json_and_pycocotools_loads_them(tmp_path):
    assert coco_gt.gt_path("out/talk.json", "test") == "out/talk_test_gt.json"
    coco = COCO(write_gt(tmp_path))
    assert sorted(coco.getImgIds()) == [3, 7]
    assert [a["caption"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[7]))] == \
        RECORDS[0]["captions"]  # raw, unprocessed: scoring tokenizes them
    assert len({a["id"] for a in coco.dataset["annotations"]}) == 6
    assert coco.dataset["type"] == "captions"


def test_ground_truth_keeps_the_images_order(tmp_path):
    ground_truth = load_ground_truth(write_gt(tmp_path))
    assert list(ground_truth) == [7, 3]  # the 'images' list's order, as COCOEvalCap scores
    assert ground_truth[3] == RECORDS[1]["captions"]


@pytest.mark.parametrize("content, message", [
    ({"images": []}, "expected COCO caption annotations with a list 'annotations'"),
    ({"annotations": [{"image_id": 1}]}, r"annotations\[0\] needs 'image_id' and a string"),
])
def test_a_bad_ground_truth_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as error:
        load_ground_truth(str(path))
    assert str(path) in str(error.value)


def test_scores_are_pycocoevalcaps_and_unknown_input_is_refused(tmp_path):
    ground_truth = load_ground_truth(write_gt(tmp_path))
    overall, per_image = score_captions(ground_truth, {7: "a red circle", 3: "a blue square"},
                                        ("Bleu_1", "CIDEr"))
    assert overall["Bleu_1"] == pytest.approx(1.0, abs=1e-6)  # every word in a reference
    assert set(per_image) == {7, 3} and overall["CIDEr"] > 0
    worse, _ = score_captions(ground_truth, {7: "a blue square", 3: "a red circle"},
                              ("CIDEr",))
    assert worse["CIDEr"] < overall["CIDEr"]
    with pytest.raises(ValueError, match="unknown metrics"):
        score_captions(ground_truth, {7: "x"}, ("CIDEr-D",))
    with pytest.raises(DataError, match="1 result image ids have no ground truth"):
        score_captions(ground_truth, {99: "x"}, ("CIDEr",))


def test_the_best_reference_ceiling_is_the_best_of_each_images_own_references(tmp_path):
    ground_truth = load_ground_truth(write_gt(tmp_path))
    best, per_reference = best_reference_scores(ground_truth, "Bleu_1")
    assert len(per_reference) == 3 and best >= max(per_reference)
    assert best == pytest.approx(1.0, abs=1e-6)  # each reference is in its own references
