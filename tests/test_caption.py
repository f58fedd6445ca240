"""The caption CLI on images of every kind, and the attention figures."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from imcap import caption
from imcap.evaluation.attention_maps import attention_map
from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.decoding import GreedyDecoder
from imcap.models import saving
from imcap.data.images import read_image
from imcap.models.preprocessing import preprocess_images

VOCAB = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(2)
    model = Captioner(CaptionerConfig(
        vocabulary=VOCAB, cnn_weights="none", cnn_layer="conv2_block1_out", image_size=32,
        emb_dim=8, z_dim=8, lstm_dim=8, dr_ratio=0.0, use_sentinel=True, max_length=8))
    path = str(tmp_path_factory.mktemp("model") / "tiny.keras")
    saving.save_model(model, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A JPEG, grayscale, RGBA, palette GIF, 16-bit PNG and a large non-square image."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8)
    base = Image.fromarray(pixels)
    paths = {"photo.jpg": base, "gray.png": base.convert("L"), "rgba.png": base.convert("RGBA"),
             "palette.gif": base.convert("P"),
             "deep.png": Image.fromarray((np.asarray(base.convert("L")).astype(np.uint16)
                                          * 257)),
             "big.jpg": base.resize((900, 500))}
    for name, image in paths.items():
        image.save(folder / name)
    return [str(folder / name) for name in paths]


def test_captions_for_images_of_every_kind_and_attention_figures(model_file, images, tmp_path,
                                                                  capsys):
    att_dir = tmp_path / "att"
    records = caption.main(images + ["-model_file", model_file, "--att_dir", str(att_dir),
                                     "-bs", "4"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in printed] == images
    model = saving.load_model(model_file, compile=False)
    decoder = GreedyDecoder(model)
    arrays = np.stack([read_image(p, 32).transpose(1, 2, 0) for p in images])
    expected = decoder.to_captions(decoder(preprocess_images(arrays)))
    assert [r["caption"] for r in records] == expected
    assert all(record["caption"] for record in records)
    with open(att_dir / "captions.json") as f:
        stored = json.load(f)
    for record in stored:
        assert len(record["beta"]) == len(record["words"])
        with Image.open(record["figure"]) as figure:
            assert figure.format == "PNG" and figure.size[0] > 300
    assert not [n for n in os.listdir(att_dir) if "partial" in n]


def test_beam_search_and_errors_from_the_console_script(model_file, images, tmp_path, capsys):
    script = os.path.join(os.path.dirname(sys.executable), "imcap-caption")
    done = subprocess.run([script, images[0], "-model_file", model_file, "-bsize", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(images[0] + "\t")
    missing = str(tmp_path / "nope.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    for bad, message in ((missing, f"image file not found: {missing}"),
                         (str(tmp_path / "empty.png"), "file is empty")):
        with pytest.raises(SystemExit) as exit_info:  # what the console script runs
            caption.main([images[0], bad, "-model_file", model_file])
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        caption.main([images[0], "-model_file", model_file, "-bsize", "0"])


def test_attention_map_peaks_on_the_attended_cell_and_thresholds():
    alpha = np.zeros(16)
    alpha[1 * 4 + 2] = 1.0  # row 1, column 2 of a 4 x 4 grid
    sharp = attention_map(alpha, 64, sig=0.0)
    row, column = np.unravel_index(np.argmax(sharp), sharp.shape)
    assert 16 <= row < 32 and 32 <= column < 48
    assert sharp.max() == pytest.approx(1.0) and sharp.min() == pytest.approx(0.0)
    smooth = attention_map(alpha, 64, sig=1.0)
    assert (smooth > 0.05).sum() > (sharp > 0.05).sum()  # smoothing spreads it
    cut = attention_map(alpha, 64, sig=1.0, th=0.5)
    assert ((cut == 0) | (cut >= 0.5)).all() and (cut == 0).sum() > (smooth == 0).sum()
    with pytest.raises(ValueError, match="not a square grid"):
        attention_map(np.ones(10), 64)



def test_folders_and_globs_expand_to_their_images(model_file, images, capsys):
    """A folder gives its images in name order, a glob the files it matches, mixed with files."""
    folder = os.path.dirname(images[0])
    records = caption.main([folder, os.path.join(folder, "*.jpg"), images[1],
                            "-model_file", model_file])
    printed = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
    in_order = sorted(images)
    assert printed == in_order + [p for p in in_order if p.endswith(".jpg")] + [images[1]]
    assert [record["image"] for record in records] == printed
    assert all(record["caption"] for record in records)


def test_folder_expansion_skips_other_files_hidden_files_and_subfolders(tmp_path):
    for name in ("b.PNG", "a.jpeg", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    (tmp_path / "sub.jpg" / "c.jpg").write_bytes(b"x")
    expected = [str(tmp_path / "a.jpeg"), str(tmp_path / "b.PNG")]
    assert caption.expand_images([str(tmp_path)]) == expected
    assert caption.expand_images([str(tmp_path / "*.jp*g"), "missing.jpg"]) == [
        str(tmp_path / "a.jpeg"), "missing.jpg"]  # the glob's folder left out, missing kept


@pytest.mark.parametrize("spec,message", [
    ("{tmp}", "folder {tmp} has no image files (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, "
              ".webp)"),
    ("{tmp}/*.jpg", "no file matches the glob {tmp}/*.jpg"),
])
def test_a_folder_without_images_or_a_glob_matching_nothing_is_one_line(model_file, tmp_path,
                                                                         capsys, spec, message):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    spec, message = spec.format(tmp=tmp_path), message.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as stop:
        caption.main([spec, "-model_file", model_file])
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"caption: error: {message}"]
