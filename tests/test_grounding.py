"""Pointing accuracy and sentinel weights on a constructed case with known answers."""

import json

import numpy as np
import pytest

from imcap.data.vocabulary import Vocabulary
from imcap.evaluation import grounding

VOCAB = Vocabulary(["<start>", "a", "red", "circle", "blue", "square", "<eos>"])


def test_pointing_and_beta_golden_values(tmp_path):
    instances = {
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        "images": [{"id": 7, "width": 64, "height": 64}],
        "annotations": [  # a red circle over cell (0, 0) of a 4 x 4 grid, a blue square (3, 3)
            {"image_id": 7, "bbox": [0, 0, 16, 16], "category_id": 1, "color": "red",
             "size": "small"},
            {"image_id": 7, "bbox": [48, 48, 16, 16], "category_id": 2, "color": "blue",
             "size": "large"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances))
    objects, sizes = grounding.load_objects(str(path))
    assert objects[7][0]["box"] == (0, 0, 16, 16) and sizes[7] == (64, 64)

    def peak(cell):
        alpha = np.full(16, 0.01)
        alpha[cell] = 0.5
        return alpha

    # "a red circle a blue square <eos>": red -> cell 0 (hit), circle -> cell 5 (miss, next to
    # it), blue -> cell 15 (hit), square -> cell 0 (miss, far); "a" twice non-visual
    words = [2, 3, 4, 2, 5, 6, 7, 0]
    alpha = np.stack([peak(c) for c in (9, 0, 5, 9, 15, 0, 9, 9)])
    beta = np.array([0.9, 0.1, 0.2, 0.7, 0.3, 0.4, 0.5, 0.0])
    metrics = grounding.grounding_metrics(
        {"image_id": np.array([7]), "words": np.array([words]), "alpha": alpha[None],
         "beta": beta[None]}, VOCAB, objects, sizes)
    assert metrics["pointing_words"] == 4
    assert metrics["pointing"] == pytest.approx(0.5)
    assert metrics["pointing_within_one_cell"] == pytest.approx(0.75)
    assert metrics["pointing_chance"] == pytest.approx(0.0625)  # each box covers 1/16
    assert metrics["beta_visual"] == pytest.approx(np.mean([0.1, 0.2, 0.3, 0.4]))
    assert metrics["beta_nonvisual"] == pytest.approx(np.mean([0.9, 0.7]))
