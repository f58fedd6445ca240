"""The serving export: a SavedModel that a fresh process loads with tf.saved_model.load alone
and that captions encoded image bytes as the caption CLI does."""

import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from imcap import export
from imcap.caption import caption_images
from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.decoding import GreedyDecoder
from imcap.models import saving

VOCAB = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]

LOAD_AND_CAPTION = """
import json, sys
import tensorflow as tf
assert "imcap" not in sys.modules
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = [open(path, "rb").read() for path in sys.argv[2:]]
out = serve(images=tf.constant(images))
assert "imcap" not in sys.modules, "loading needed imcap"
print(json.dumps({"caption": [c.decode() for c in out["caption"].numpy()],
                  "attention": list(out["attention"].shape),
                  "sentinel": out["sentinel"].numpy().tolist()}))
"""


@pytest.mark.slow
def test_a_fresh_process_loads_the_export_and_captions_image_bytes(tmp_path):
    keras.utils.set_random_seed(3)
    model = Captioner(CaptionerConfig(
        vocabulary=VOCAB, cnn_weights="none", cnn_layer="conv2_block1_out", image_size=32,
        emb_dim=8, z_dim=8, lstm_dim=8, dr_ratio=0.0, use_sentinel=True, max_length=7))
    model_file = str(tmp_path / "tiny.keras")
    saving.save_model(model, model_file)
    rng = np.random.default_rng(1)
    paths = []
    for name, mode in (("exact.png", "RGB"), ("gray.png", "L")):  # already 32 x 32: no resize
        pixels = rng.integers(0, 255, (32, 32, 3), np.uint8)
        Image.fromarray(pixels).convert(mode).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 140, 3), np.uint8)).save(buffer, "JPEG")
    (tmp_path / "big.jpg").write_bytes(buffer.getvalue())
    paths.append(str(tmp_path / "big.jpg"))

    out_dir = str(tmp_path / "served")
    export.main(["-model_file", model_file, "-out_dir", out_dir])
    assert os.path.isfile(os.path.join(out_dir, "saved_model.pb"))
    assert not os.path.exists(out_dir + ".partial")
    done = subprocess.run([sys.executable, "-c", LOAD_AND_CAPTION, out_dir] + paths,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])

    expected = caption_images(model, paths[:2], GreedyDecoder(model), 2)
    for caption, (words, _, beta, _) in zip(served["caption"], expected):
        assert caption == " ".join(w for w in words if w != "<eos>") and caption
    assert served["attention"] == [3, 6, 64]
    assert len(served["caption"]) == 3 and served["caption"][2]
    sentinel = np.array(served["sentinel"])
    assert ((sentinel >= 0) & (sentinel <= 1)).all()
    np.testing.assert_allclose(sentinel[0, :len(expected[0][2])], expected[0][2], atol=1e-5)
