"""notebooks/sample_captions.ipynb runs top to bottom headless (nbclient) on a tiny model."""

import os
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.utils import checkpoints
from imcap.utils.loader import CaptionData

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "notebooks"))

import run_notebook  # noqa: E402


@pytest.mark.slow
def test_the_notebook_runs_headless_and_shows_its_figures(data_folder, tmp_path, monkeypatch):
    stem = str(data_folder / "data" / "cocotalk_challenge")
    data = CaptionData(stem + ".h5", stem + ".json", "test")
    keras.utils.set_random_seed(5)
    model = Captioner(CaptionerConfig(
        vocabulary=data.vocabulary, cnn_weights="none", cnn_layer="conv2_block1_out",
        image_size=32, emb_dim=8, z_dim=8, lstm_dim=8, dr_ratio=0.0, sgate=True, max_length=6))
    checkpoints.save_model(model, str(tmp_path / "tiny.keras"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 4), np.uint8),
                    "RGBA").save(tmp_path / "mine.png")
    monkeypatch.setenv("IMCAP_MODEL", str(tmp_path / "tiny.keras"))
    monkeypatch.setenv("IMCAP_DATA", stem)
    monkeypatch.setenv("IMCAP_IMAGE", str(tmp_path / "mine.png"))
    notebook = run_notebook.run()  # raises CellExecutionError if a cell fails
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if o.output_type == "display_data"
               and ("image/jpeg" in o.data or "image/png" in o.data)]
    assert len(figures) == 4  # captions, two attention figures, your own image
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "mine.png ->" in text and "sentinel on" in text
