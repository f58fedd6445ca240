"""The demo in its reduced form (small dataset, one epoch; the same code path): every artefact
exists and parses."""

import json
import os
import time

import pytest
from PIL import Image
from pycocotools.coco import COCO

from imcap import demo
from imcap.evaluation import grounding
from imcap.evaluation.attention_file import read_attention
from imcap.evaluation.scoring import load_ground_truth, score_captions
from imcap.models.saving import load_model

KEYS = ["CIDEr", "CIDEr_beam3", "CIDEr_xe", "CIDEr_xe_beam3", "Bleu_4", "METEOR", "ROUGE_L",
        "pointing", "pointing_chance", "pointing_within_one_cell", "beta_visual",
        "beta_nonvisual", "pointing_xe", "beta_visual_xe", "beta_nonvisual_xe", "seconds",
        "figures"]


@pytest.mark.slow
def test_the_quick_demo_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "demo"
    started = time.perf_counter()
    demo.main(["--out", str(out), "--quick"])
    elapsed = time.perf_counter() - started
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out / "summary.json")  # the summary's path comes last
    with open(out / "summary.json") as f:
        summary = json.load(f)
    assert all(key in summary for key in KEYS)
    # the run's own wall time (summary.json rounds it to 0.1 s)
    assert 0.8 * elapsed - 5 <= summary["seconds"] <= round(elapsed, 1) + 0.05
    # the grounding of both models is that of their greedy captions' attention files, measured
    # again here (a one-epoch model may caption no colour or shape: then pointing is None)
    objects, sizes = grounding.load_objects(
        str(out / "shapes" / "annotations" / "instances_val2014.json"))
    for end, name in (("", "greedy"), ("_xe", "xe_greedy")):
        attention, vocabulary = read_attention(
            summary["results"][name].replace(".json", "_attention.h5"))
        again = grounding.grounding_metrics(attention, vocabulary, objects, sizes)
        assert summary["grounding" + end] == again
        for key in ("pointing", "pointing_chance", "beta_visual", "beta_nonvisual"):
            assert summary[key + end] == again[key]
        if again["pointing"] is not None:
            assert 0 < again["pointing_chance"] < 1
            assert 0 <= again["pointing"] <= again["pointing_within_one_cell"] <= 1
        for key in ("beta_visual", "beta_nonvisual"):  # None: no such word was captioned
            assert again[key] is None or 0 <= again[key] <= 1
    # the quick split's references name every object, so copying the best one scores well
    assert 4 < summary["CIDEr_best_reference"] <= 10
    # the reported scores are those of the result files, scored again here
    ground_truth = load_ground_truth(str(out / "run" / "data" / "shapes_test_gt.json"))
    assert sorted(summary["results"]) == ["beam3", "greedy", "xe_beam3", "xe_greedy"]
    for name, results in summary["results"].items():
        with open(results) as f:
            captions = {r["image_id"]: r["caption"] for r in json.load(f)}
        again, _ = score_captions(ground_truth, captions, ("CIDEr", "Bleu_4"))
        for metric in ("CIDEr", "Bleu_4"):
            assert summary["scores"][name][metric] == pytest.approx(again[metric], abs=1e-9)
        assert "METEOR" in summary["scores"][name]
    assert summary["CIDEr"] == summary["scores"]["greedy"]["CIDEr"]
    for key, name in (("CIDEr_beam3", "beam3"), ("CIDEr_xe", "xe_greedy"),
                      ("CIDEr_xe_beam3", "xe_beam3")):
        assert summary[key] == summary["scores"][name]["CIDEr"]
    # two models: the self-critical one from the cross-entropy one's best checkpoint
    assert "scst" in summary["model"] and "scst" not in summary["model_xe"]
    assert os.path.basename(summary["results"]["greedy"]).startswith("model_scst_best_")
    assert os.path.basename(summary["results"]["xe_greedy"]).startswith("model_best_")
    assert len(summary["figures"]) == demo.EXAMPLES + 1
    for path in summary["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG"
    coco = COCO(str(out / "run" / "data" / "shapes_test_gt.json"))
    for results in summary["results"].values():
        assert len(coco.loadRes(results).getImgIds()) == 12
        assert os.path.exists(results.replace(".json", "_scores.json"))
    assert load_model(summary["model"]).config.use_sentinel
    assert "| self-critical, greedy |" in "\n".join(printed)
    assert "| cross-entropy, beam3 |" in "\n".join(printed)
