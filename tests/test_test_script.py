"""test.py: every image of a split captioned into a COCO result file pycocotools loads."""

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from pycocotools.coco import COCO

from imcap import test as test_script
from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.decoding import BeamSearchDecoder, GreedyDecoder
from imcap.models import saving
from imcap.data.loader import CaptionData
from imcap.models.preprocessing import preprocessor

RESNET = preprocessor("resnet")  # the encoder's preprocessing, for image datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_paths(folder):
    return (str(folder / "data" / "cocotalk_challenge.h5"),
            str(folder / "data" / "cocotalk_challenge.json"))


@pytest.fixture()
def trained(data_folder):
    """A random-weight captioner saved where train.py puts the best checkpoint."""
    h5, js = data_paths(data_folder)
    data = CaptionData(h5, js, "test")
    keras.utils.set_random_seed(4)
    model = Captioner(CaptionerConfig(
        vocabulary=data.vocabulary, cnn_weights="none", cnn_layer="conv2_block1_out",
        image_size=32, emb_dim=16, z_dim=16, lstm_dim=16, dr_ratio=0.0, use_sentinel=True))
    (data_folder / "models").mkdir()
    saving.save_model(model, str(data_folder / "models" / "model_best.keras"))
    return data_folder, model, data


def images_and_ids(data):
    x, _, _, ids = next(iter(data.dataset(len(data), RESNET, training=False)))
    return x["images"], ids.numpy()


def test_greedy_results_load_in_pycocotools_and_equal_the_decoder(trained, capsys):
    folder, model, data = trained
    results_file = test_script.main(["-data_folder", str(folder), "-bs", "3"])
    assert results_file == str(folder / "results" / "model_best_test_greedy.json")
    out = capsys.readouterr().out
    assert "captions/s" in out and "eval_caps" in out
    with open(results_file) as f:
        results = json.load(f)
    images, ids = images_and_ids(data)
    decoder = GreedyDecoder(model, 18)
    expected = dict(zip(ids.tolist(), decoder.to_captions(decoder(images))))
    assert {r["image_id"]: r["caption"] for r in results} == expected
    assert len(results) == len(data) == 4 and all(r["caption"] for r in results)
    coco = COCO(str(folder / "data" / "cocotalk_challenge_test_gt.json"))
    loaded = coco.loadRes(results_file)
    assert sorted(loaded.getImgIds()) == sorted(ids.tolist())
    assert not [name for name in os.listdir(folder / "results") if "partial" in name]


def test_beam_search_val_split_and_attention_file(trained):
    folder, model, _ = trained
    results_file = test_script.main(["-data_folder", str(folder), "-bsize", "3", "-split",
                                     "val", "--save_attention", "-seqlen", "8"])
    assert results_file.endswith("model_best_val_beam3.json")
    val = CaptionData(*data_paths(folder), "val")
    images, ids = images_and_ids(val)
    expected = BeamSearchDecoder(model, 3, 8).decode(images)
    with h5py.File(results_file.replace(".json", "_attention.h5"), "r") as f:
        np.testing.assert_array_equal(f["image_id"][:], ids)
        np.testing.assert_array_equal(f["words"][:], expected["words"])
        np.testing.assert_allclose(f["alpha"][:], expected["alpha"], atol=1e-6)
        np.testing.assert_allclose(f["beta"][:], expected["beta"], atol=1e-6)
        assert f["alpha"].shape == (len(val), 7, 64)
        assert tuple(f.attrs["vocabulary"].split("\n")) == model.config.vocabulary.words


def test_sampling_and_imcap_keras_command(trained):
    """`python test.py` from imcap/, as imcap_keras documents it, with -temperature."""
    folder, _, _ = trained
    done = subprocess.run([sys.executable, "test.py", "-data_folder", str(folder),
                           "-temperature", "0.7", "-results_file", str(folder / "s.json")],
                          cwd=os.path.join(REPO, "imcap"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sample0.7" in done.stdout
    assert len(json.loads((folder / "s.json").read_text())) == 4


def test_a_checkpoint_for_other_data_is_refused(trained, capsys):
    folder, model, _ = trained
    other = Captioner(model.config.replace(
        vocabulary=list(model.config.vocabulary.words[:-1]) + ["zebra"]))
    saving.save_model(other, str(folder / "models" / "other.keras"))
    bigger = Captioner(model.config.replace(image_size=64))
    saving.save_model(bigger, str(folder / "models" / "bigger.keras"))
    for name, message in (("other.keras", "another vocabulary"), ("bigger.keras", "64 px"),
                          ("missing.keras", "checkpoint not found")):
        with pytest.raises(SystemExit) as stop:
            test_script.main(["-data_folder", str(folder), "-model_file",
                              str(folder / "models" / name)])
        assert stop.value.code == 1
        assert message in capsys.readouterr().err
    assert not (folder / "results").exists() or not os.listdir(folder / "results")
