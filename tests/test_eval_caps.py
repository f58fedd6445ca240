"""eval_caps.py: exactly COCOEvalCap's numbers on the images of the results, and clear errors."""

import json
import os
import subprocess
import sys

import pytest
from pycocotools.coco import COCO

from imcap.coco_caption import eval_caps
from imcap.evaluation.scoring import (best_reference_scores, load_ground_truth, score_captions,
                                      spice_missing, tokenize_together)
from imcap.utils.fileio import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]


@pytest.fixture()
def fixture(shapes_prepro, tmp_path):
    """The tiny set's test ground truth and results for three of its four images."""
    ann_file = shapes_prepro[1].replace(".json", "_test_gt.json")
    with open(ann_file) as f:
        annotations = json.load(f)["annotations"]
    ids = sorted({a["image_id"] for a in annotations})[:3]
    first = {i: next(a["caption"] for a in annotations if a["image_id"] == i) for i in ids}
    results = [{"image_id": ids[0], "caption": first[ids[0]]},  # one ground-truth caption
               {"image_id": ids[1], "caption": "A big, RED square on the left."},
               {"image_id": ids[2], "caption": first[ids[2]].split(" and ")[0] + " there"}]
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    return str(results_file), ann_file, ids


class NoSpice:
    """Stands in for SPICE, which needs models an offline machine cannot download."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(res)

    def method(self):
        return "SPICE"


def test_scores_equal_cocoevalcap_on_the_results_images(fixture, monkeypatch, capsys):
    import pycocoevalcap.eval as cocoeval

    results_file, ann_file, ids = fixture
    # another evaluation first: the one METEOR process of this process (scoring.meteor) has
    # then scored other captions, and must still give COCOEvalCap's fresh process's numbers
    other = {i: "zebra " * (n + 1) for n, i in enumerate(ids)}
    score_captions(load_ground_truth(ann_file), other)
    scores = eval_caps.evaluate(results_file, ann_file)
    assert scores["num_images"] == 3 and scores["num_annotated_images"] == 4

    monkeypatch.setattr(cocoeval, "Spice", NoSpice)
    coco = COCO(ann_file)
    coco_results = coco.loadRes(results_file)
    reference = cocoeval.COCOEvalCap(coco, coco_results)
    reference.params["image_id"] = coco_results.getImgIds()  # as imcap_keras' eval_caps
    reference.evaluate()
    capsys.readouterr()
    assert {m: scores["overall"][m] for m in METRICS} == {m: reference.eval[m] for m in METRICS}
    per_image = {row["image_id"]: row for row in scores["per_image"]}
    assert sorted(per_image) == sorted(ids)
    for image_id in ids:
        for metric in METRICS:
            assert per_image[image_id][metric] == reference.imgToEval[image_id][metric]
    assert 0 < scores["overall"]["CIDEr"] and scores["overall"]["Bleu_1"] > 0.3
    with open(os.path.splitext(results_file)[0] + "_scores.json") as f:
        assert json.load(f)["overall"] == scores["overall"]


@pytest.mark.parametrize("content, message", [
    ("[{\"image_id\": 1, ", "malformed JSON"),
    ("{\"image_id\": 1}", "expected a list"),
    ("[{\"image_id\": \"7\", \"caption\": \"a\"}]", "'image_id' must be an integer"),
    ("[{\"image_id\": 1.0, \"caption\": \"a\"}]", "'image_id' must be an integer"),
    ("[{\"image_id\": true, \"caption\": \"a\"}]", "'image_id' must be an integer"),
    ("[{\"image_id\": ID, \"caption\": \"a\"}, {\"image_id\": ID, \"caption\": \"b\"}]",
     "appears twice"),
    ("[{\"image_id\": ID, \"caption\": \"  \"}]", "the caption is empty"),
    ("[{\"image_id\": ID, \"caption\": 3}]", "'caption' must be a string"),
    ("[{\"image_id\": 987654, \"caption\": \"a red circle\"}]", "are not in"),
    ("[]", "no captions to score"),
])
def test_bad_results_are_named(fixture, tmp_path, content, message):
    _, ann_file, ids = fixture
    bad = tmp_path / "bad.json"
    bad.write_text(content.replace("ID", str(ids[0])))
    with pytest.raises(DataError, match=message) as error:
        eval_caps.evaluate(str(bad), ann_file)
    assert str(bad) in str(error.value)
    assert not os.path.exists(tmp_path / "bad_scores.json")


def test_spice_without_its_models_is_a_message_not_a_crash(fixture):
    if spice_missing() is None:
        pytest.skip("SPICE's models are installed here")
    results_file, ann_file, _ = fixture
    messages = []
    scores = eval_caps.evaluate(results_file, ann_file, spice=True, log=messages.append)
    assert any("SPICE skipped" in m and "get_stanford_models" in m for m in messages)
    assert "SPICE" not in scores["overall"] and "CIDEr" in scores["overall"]


def test_imcap_keras_command_from_coco_caption(fixture, tmp_path):
    results_file, ann_file, _ = fixture
    out_file = tmp_path / "scores.json"
    done = subprocess.run([sys.executable, "eval_caps.py", "-results_file", results_file,
                           "-ann_file", ann_file, "-out_file", str(out_file)],
                          cwd=os.path.join(REPO, "imcap", "coco_caption"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "CIDEr:" in done.stdout and "scoring 3 of the 4 images" in done.stderr
    assert set(json.loads(out_file.read_text())["overall"]) == set(METRICS)
    missing = subprocess.run([sys.executable, "eval_caps.py", "-results_file",
                              str(tmp_path / "nope.json"), "-ann_file", ann_file],
                             cwd=os.path.join(REPO, "imcap", "coco_caption"),
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith(
        "eval_caps: error: results file not found")


def test_best_reference_scores_of_identical_references_is_cider_maximum():
    # every reference of an image the same, no n-gram shared between images: a copy of one
    # scores CIDEr-D's maximum, 10, on every image
    # (at least four words each: a caption without 4-grams scores 0 on CIDEr's fourth n)
    ground_truth = {1: ["a big red circle"] * 5, 2: ["two blue squares here"] * 5,
                    3: ["green triangle on gray"] * 3}
    best, per_reference = best_reference_scores(ground_truth)
    assert best == pytest.approx(10.0) and per_reference == pytest.approx([10.0] * 5)
    ground_truth[1] = ["a big red circle", "one large red circle", "a big red circle",
                       "a big red circle", "a big red circle"]
    best, per_reference = best_reference_scores(ground_truth)
    assert per_reference[1] < best < 10.0 and per_reference[0] == pytest.approx(best)


def test_one_tokenizer_run_gives_what_one_run_per_group_gives():
    """score_captions tokenises references and results in one Java run: line by line, as two
    runs would (punctuation, case, an empty caption, the same key in both groups)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    references = {1: [{"caption": "A man, riding a horse."}, {"caption": "Two dogs' toys!"}],
                  7: [{"caption": "a \"quoted\" word -- and (brackets)"}]}
    results = {1: [{"caption": ""}], 7: [{"caption": "It's a cat... on a mat?"}]}
    together = tokenize_together(references, results)
    assert together == (PTBTokenizer().tokenize(references), PTBTokenizer().tokenize(results))
    assert together[1][7] == ["it 's a cat on a mat"]
