"""The demo in its reduced form (small dataset, one epoch; the same code path): every artefact
exists and parses."""

import json
import os

import pytest
from PIL import Image
from pycocotools.coco import COCO

from imcap import demo
from imcap.utils.checkpoints import load_model

KEYS = ["CIDEr", "Bleu_4", "METEOR", "ROUGE_L", "pointing", "pointing_chance",
        "pointing_within_one_cell", "beta_visual", "beta_nonvisual", "seconds", "figures"]


@pytest.mark.slow
def test_the_quick_demo_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "demo"
    demo.main(["--out", str(out), "--quick"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out / "summary.json")  # the summary's path comes last
    with open(out / "summary.json") as f:
        summary = json.load(f)
    assert all(key in summary for key in KEYS)
    assert summary["seconds"] > 0 and 0 <= summary["pointing_chance"] <= 1
    # the quick split's references name every object, so copying the best one scores well
    assert 4 < summary["CIDEr_best_reference"] <= 10
    for name in ("greedy", "beam3"):
        assert 0 <= summary["scores"][name]["CIDEr"] and "METEOR" in summary["scores"][name]
    assert len(summary["figures"]) == demo.EXAMPLES + 1
    for path in summary["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG"
    coco = COCO(str(out / "run" / "data" / "shapes_test_gt.json"))
    for results in summary["results"]:
        assert len(coco.loadRes(results).getImgIds()) == 12
        assert os.path.exists(results.replace(".json", "_scores.json"))
    assert load_model(summary["model"]).config.sgate
    assert "| greedy |" in "\n".join(printed)
