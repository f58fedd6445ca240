"""prepro_coco.py: imcap_keras' exact output, the three inputs, splits, images, ground truth, and
bad input."""

import json
import os
import random
import string
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from imcap.utils import prepro_coco
from imcap.utils.fileio import DataError
from tests.reference_prepro import reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    return prepro_coco.main(prepro_coco.parse_params([str(a) for a in argv]))


def read_outputs(out):
    with h5py.File(out / "d.h5", "r") as f:
        arrays = {k: f[k][()] for k in f}
    with open(out / "d.json") as f:
        info = json.load(f)
    return arrays, info


def write_raw(path, images):
    with open(path, "w") as f:
        json.dump(images, f)
    return path


# --- imcap_keras' output, golden values derived by hand -----------------------------------

def golden_images():
    """Six images; every word is common (count > 5) except 'red' and 'ball' (exactly 5 each),
    so the vocabulary order does not depend on the shuffle and is worked out by hand."""
    images = []
    for image_id in range(10, 16):
        third = "A red ball!" if image_id < 15 else " ".join(["a"] * 20)
        images.append({"file_path": f"img/{image_id}.png", "id": image_id,
                       "captions": ["A dog's toy.", "The well-lit BLUE room  ", third]})
    return images


GOLDEN_VOCAB = {"1": "<start>", "2": "a", "3": "dogs", "4": "toy", "5": "<eos>", "6": "the",
                "7": "welllit", "8": "blue", "9": "room", "10": "UNK"}
CAPTION_1 = [1, 2, 3, 4, 5] + [0] * 13
CAPTION_2 = [1, 6, 7, 8, 9, 5] + [0] * 12
CAPTION_RED_BALL = [1, 2, 10, 10, 5] + [0] * 13
CAPTION_LONG = [1] + [2] * 17  # 22 tokens clipped to 18: <eos> is lost, as in imcap_keras


def test_imcap_keras_defaults_give_the_hand_derived_output(tmp_path):
    images = golden_images()
    run(["--input_json", write_raw(tmp_path / "raw.json", images), "--no_images",
         "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    arrays, info = read_outputs(tmp_path)
    order = list(range(6))
    random.seed(123)
    random.shuffle(order)  # imcap_keras shuffles the image list exactly like this
    assert info["ix_to_word"] == GOLDEN_VOCAB
    assert list(info["ix_to_word"]) == [str(i) for i in range(1, 11)]
    assert info["images"] == [{"split": "val", "file_path": f"img/{10 + k}.png", "id": 10 + k}
                              for k in order]  # num_val defaults to 2000: all val
    expected_rows = []
    for k in order:
        expected_rows += [CAPTION_1, CAPTION_2, CAPTION_LONG if k == 5 else CAPTION_RED_BALL]
    np.testing.assert_array_equal(arrays["labels"], np.array(expected_rows, dtype=np.uint32))
    assert arrays["labels"].dtype == np.uint32
    np.testing.assert_array_equal(arrays["label_start_ix"], [1, 4, 7, 10, 13, 16])
    np.testing.assert_array_equal(arrays["label_end_ix"], [3, 6, 9, 12, 15, 18])
    lengths = []
    for k in order:
        lengths += [5, 6, 18 if k == 5 else 5]
    np.testing.assert_array_equal(arrays["label_length"], lengths)
    for name in ("label_start_ix", "label_end_ix", "label_length"):
        assert arrays[name].dtype == np.uint32
    assert "images" not in arrays  # --no_images
    # the JSON is what json.dump writes for imcap_keras' dict, byte for byte
    imcap_keras_dict = {"ix_to_word": {int(k): v for k, v in GOLDEN_VOCAB.items()},
                 "images": info["images"]}
    assert (tmp_path / "d.json").read_text() == json.dumps(imcap_keras_dict)


def test_random_split_sizes(tmp_path):
    run(["--input_json", write_raw(tmp_path / "raw.json", golden_images()), "--no_images",
         "--num_val", 2, "--num_test", 1,
         "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    _, info = read_outputs(tmp_path)
    assert [im["split"] for im in info["images"]] == ["val", "val", "test", "train", "train",
                                                       "train"]


def random_raw_images(rng, n):
    alphabet = ["cat", "Dog", "sits", "on", "the", "mat.", "a", "red", "Ball", "tree,", "café",
                "it's", "well-lit", "UNK", "<b>", "x", "y", "z"]
    images = []
    for i in range(n):
        captions = []
        for _ in range(int(rng.integers(1, 7))):
            words = rng.choice(alphabet, size=int(rng.integers(0, 24)))
            punct = rng.choice(list(string.punctuation))
            captions.append(" ".join(words) + (punct if rng.random() < 0.5 else "") + "  ")
        images.append({"file_path": f"x/{i}.jpg", "captions": captions, "id": 1000 + i})
    return images


@pytest.mark.parametrize("threshold,max_length,num_val,num_test", [
    (5, 18, 2000, 2000), (0, 18, 3, 4), (20, 7, 10, 0), (3, 30, 0, 5)])
def test_matches_independent_reference(tmp_path, threshold, max_length, num_val, num_test):
    images = random_raw_images(np.random.default_rng(threshold + max_length), 40)
    run(["--input_json", write_raw(tmp_path / "raw.json", images), "--no_images",
         "--word_count_threshold", threshold, "--max_length", max_length,
         "--num_val", num_val, "--num_test", num_test,
         "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    arrays, info = read_outputs(tmp_path)
    ix_to_word, ref_images, labels, start, end, lengths = reference(
        images, threshold, max_length, num_val, num_test)
    assert info["ix_to_word"] == ix_to_word
    assert list(info["ix_to_word"].values()) == list(ix_to_word.values())
    assert info["images"] == ref_images
    np.testing.assert_array_equal(arrays["labels"], labels)
    np.testing.assert_array_equal(arrays["label_start_ix"], start)
    np.testing.assert_array_equal(arrays["label_end_ix"], end)
    np.testing.assert_array_equal(arrays["label_length"], lengths)


# --- the three inputs and the splits -------------------------------------------------------

def neuraltalk2_raw_json(coco_dir):
    """What NeuralTalk2's coco_preprocess.ipynb writes: val images, then train, with captions
    in annotation order."""
    raw = []
    for part in ("val", "train"):
        with open(coco_dir / "annotations" / f"captions_{part}2014.json") as f:
            data = json.load(f)
        captions = {}
        for ann in data["annotations"]:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        for image in data["images"]:
            raw.append({"file_path": f"{part}2014/{image['file_name']}",
                        "captions": captions[image["id"]], "id": image["id"]})
    return raw


def test_coco_path_equals_neuraltalk2_raw_json(shapes_dir, tmp_path):
    common = ["--num_val", 5, "--num_test", 5, "--imsize", 24, "--workers", 1,
              "--word_count_threshold", 2]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    run(["--coco_path", shapes_dir, "--output_json", a / "d.json", "--output_h5", a / "d.h5"]
        + common)
    raw = write_raw(tmp_path / "coco_raw.json", neuraltalk2_raw_json(shapes_dir))
    run(["--input_json", raw, "--images_root", shapes_dir / "images",
         "--output_json", b / "d.json", "--output_h5", b / "d.h5"] + common)
    arrays_a, info_a = read_outputs(a)
    arrays_b, info_b = read_outputs(b)
    assert info_a == info_b
    assert (a / "d.json").read_bytes() == (b / "d.json").read_bytes()
    assert set(arrays_a) == set(arrays_b) == {"images", "labels", "label_start_ix",
                                              "label_end_ix", "label_length"}
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name])
    for split in ("val", "test"):
        assert (a / f"d_{split}_gt.json").read_bytes() != b""


def test_karpathy_splits_and_restval(shapes_dir, tmp_path):
    karpathy = shapes_dir / "dataset_shapes.json"
    with open(karpathy) as f:
        expected = {im["cocoid"]: im["split"] for im in json.load(f)["images"]}
    run(["--karpathy_json", karpathy, "--images_root", shapes_dir / "images", "--no_images",
         "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    _, info = read_outputs(tmp_path)
    assert {im["id"]: im["split"] for im in info["images"]} == {
        i: "train" if s == "restval" else s for i, s in expected.items()}
    run(["--karpathy_json", karpathy, "--images_root", shapes_dir / "images", "--no_images",
         "--keep_restval", "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    _, info = read_outputs(tmp_path)
    assert {im["id"]: im["split"] for im in info["images"]} == expected
    assert sum(im["split"] == "restval" for im in info["images"]) == 2


def test_splits_dir_matches_karpathy_json(shapes_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    run(["--coco_path", shapes_dir, "--splits_dir", shapes_dir / "splits", "--no_images",
         "--output_json", a / "d.json", "--output_h5", a / "d.h5"])
    run(["--karpathy_json", shapes_dir / "dataset_shapes.json", "--no_images",
         "--output_json", b / "d.json", "--output_h5", b / "d.h5"])
    _, info_a = read_outputs(a)
    _, info_b = read_outputs(b)
    split_a = {im["id"]: im["split"] for im in info_a["images"]}
    split_b = {im["id"]: im["split"] for im in info_b["images"]}
    assert split_a == split_b
    assert sorted(split_a.values()).count("test") == 4


def test_flickr_style_karpathy_json(tmp_path):
    """dataset_flickr8k.json has no 'filepath' and no 'cocoid': paths are file names, ids imgid."""
    (tmp_path / "Flickr8k").mkdir()
    images = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        name = f"{1000 + i}_abc.jpg"
        Image.new("RGB", (12, 9), (50 * i, 0, 0)).save(tmp_path / "Flickr8k" / name)
        images.append({"filename": name, "imgid": i, "split": split, "sentids": [2 * i],
                       "sentences": [{"raw": f"A dog runs {i}.", "tokens": [], "imgid": i}]})
    karpathy = tmp_path / "dataset_flickr8k.json"
    karpathy.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    run(["--karpathy_json", karpathy, "--images_root", tmp_path / "Flickr8k", "--imsize", 6,
         "--workers", 1, "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    arrays, info = read_outputs(tmp_path)
    by_id = {im["id"]: im for im in info["images"]}
    assert by_id[2] == {"split": "val", "file_path": "1002_abc.jpg", "id": 2}
    assert sorted(im["split"] for im in info["images"]) == ["test", "train", "train", "val"]
    position = [im["id"] for im in info["images"]].index(3)
    assert arrays["images"][position, 0, 0, 0] == 150
    gt = COCO(str(tmp_path / "d_test_gt.json"))
    assert gt.imgToAnns[3][0]["caption"] == "A dog runs 3."


def test_random_split_sizes_conflict_with_given_splits(shapes_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        prepro_coco.parse_params(["--karpathy_json", "x.json", "--num_val", "5",
                                  "--images_root", "."])
    assert "--karpathy_json already gives the splits" in capsys.readouterr().err


def test_split_list_naming_unknown_file(shapes_dir, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "coco_val.txt").write_text("COCO_val2014_000000000023.jpg\nnope.jpg\n")
    with pytest.raises(DataError, match=r"coco_val.txt line 2: 'nope.jpg' is not among"):
        run(["--coco_path", shapes_dir, "--splits_dir", splits, "--no_images",
             "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])


# --- images and ground truth ---------------------------------------------------------------

def test_images_are_resized_rgb_in_hdf5_order(shapes_prepro, shapes_dir):
    h5, js = shapes_prepro
    with open(js) as f:
        info = json.load(f)
    with h5py.File(h5, "r") as f:
        stored = f["images"][()]
    assert stored.shape == (30, 3, 32, 32) and stored.dtype == np.uint8
    for k in (0, 7, 29):
        with Image.open(shapes_dir / "images" / info["images"][k]["file_path"]) as im:
            expected = np.asarray(im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
        diff = np.abs(stored[k].transpose(1, 2, 0).astype(int) - expected.astype(int))
        assert diff.mean() < 2.0  # JPEG draft decoding differs from a full decode by rounding


def test_ground_truth_files_load_with_pycocotools(shapes_prepro, shapes_dir):
    h5, js = shapes_prepro
    with open(js) as f:
        info = json.load(f)
    with open(shapes_dir / "annotations" / "captions_val2014.json") as f:
        source = json.load(f)
    raw = {}
    for ann in source["annotations"]:
        raw.setdefault(ann["image_id"], []).append(ann["caption"])
    for split in ("val", "test"):
        coco = COCO(js.replace(".json", f"_{split}_gt.json"))
        ids = [im["id"] for im in info["images"] if im["split"] == split]
        assert sorted(coco.getImgIds()) == sorted(ids) and len(ids) == 4
        for image_id in ids:
            assert [a["caption"] for a in coco.imgToAnns[image_id]] == raw[image_id]
        results = coco.loadRes([{"image_id": i, "caption": "a red circle"} for i in ids])
        assert sorted(results.getImgIds()) == sorted(ids)


# --- bad input -------------------------------------------------------------------------------

def make_png_set(root, n):
    (root / "img").mkdir(parents=True)
    images = []
    for i in range(n):
        Image.new("RGB", (20, 16), (10 * i, 0, 0)).save(root / "img" / f"{i}.png")
        images.append({"file_path": f"img/{i}.png", "captions": ["a b c", "a b"], "id": i})
    return images


def run_on(tmp_path, images, *extra):
    raw = write_raw(tmp_path / "raw.json", images)
    return run(["--input_json", raw, "--images_root", tmp_path, "--imsize", 8, "--workers", 1,
                "--output_json", tmp_path / "out" / "d.json",
                "--output_h5", tmp_path / "out" / "d.h5", *extra])


def assert_no_outputs(tmp_path):
    out = tmp_path / "out"
    assert not out.exists() or sorted(os.listdir(out)) == []


@pytest.mark.parametrize("content,reason", [
    (b"", "file is empty"), (b"not an image at all", "cannot identify image file"),
    ("truncated", "truncated")])
def test_unreadable_image_stops_with_its_index(tmp_path, content, reason):
    images = make_png_set(tmp_path, 4)
    bad = tmp_path / "img" / "2.png"
    if content == "truncated":
        data = bad.read_bytes()
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    order = list(range(4))
    random.seed(123)
    random.shuffle(order)
    with pytest.raises(DataError, match=rf"image {order.index(2)} \(img/2.png\).*{reason}"):
        run_on(tmp_path, images)
    assert_no_outputs(tmp_path)


def test_skip_bad_images_drops_and_lists_them(tmp_path, capsys):
    images = make_png_set(tmp_path, 5)
    (tmp_path / "img" / "1.png").write_bytes(b"")
    (tmp_path / "img" / "3.png").unlink()
    run_on(tmp_path, images, "--skip_bad_images", "--word_count_threshold", 0)
    printed = capsys.readouterr().out
    listed = tmp_path / "out" / "d_dropped.txt"
    assert f"dropped 2 unreadable or missing images, listed in {listed}" in printed
    assert "img/1.png" not in printed and "img/3.png" not in printed  # in the list, not stdout
    assert listed.read_text() == "img/1.png\tfile is empty (0 bytes)\nimg/3.png\tfile not found\n"
    with h5py.File(tmp_path / "out" / "d.h5", "r") as f:
        assert f["images"].shape == (3, 3, 8, 8)
        assert len(f["label_start_ix"]) == 3
        reds = sorted(int(f["images"][k, 0, 0, 0]) for k in range(3))
    with open(tmp_path / "out" / "d.json") as f:
        kept = sorted(im["id"] for im in json.load(f)["images"])
    assert kept == [0, 2, 4] and reds == [0, 20, 40]


def test_missing_image_file(tmp_path):
    images = make_png_set(tmp_path, 3)
    (tmp_path / "img" / "0.png").unlink()
    with pytest.raises(DataError, match=r"\(img/0.png\): file not found"):
        run_on(tmp_path, images)
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize("images,message", [
    ({"file_path": "a.png"}, "expected a list of images"),
    ([{"file_path": "a.png", "captions": []}], r"item 0 \(a.png\): image has no captions"),
    ([{"captions": ["x"]}], "item 0: field 'file_path' is missing"),
    ([{"file_path": "a.png", "captions": "a cat"}], "field 'captions' must be a list"),
    ([{"file_path": "../etc/passwd", "captions": ["x"]}], "leaves the images root"),
    ([{"file_path": "a.png", "captions": ["x"], "id": "7"}], "field 'id' must be an integer"),
    ([{"file_path": "a.png", "captions": ["x"], "id": 1},
      {"file_path": "b.png", "captions": ["y"], "id": 1}], "image id 1 appears twice"),
])
def test_wrongly_shaped_json(tmp_path, images, message):
    with pytest.raises(DataError, match=message):
        run_on(tmp_path, images)
    assert_no_outputs(tmp_path)


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "raw.json").write_text('[{"file_path": "a.png",\n "captions": [}]')
    with pytest.raises(DataError, match=r"raw.json is malformed JSON: .* \(line 2, column"):
        run(["--input_json", tmp_path / "raw.json", "--images_root", tmp_path,
             "--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])


def test_coco_image_without_captions(shapes_dir, tmp_path):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for part in ("train", "val"):
        with open(shapes_dir / "annotations" / f"captions_{part}2014.json") as f:
            data = json.load(f)
        if part == "val":
            data["images"].append({"id": 999, "file_name": "COCO_val2014_000000000999.jpg"})
        with open(coco / "annotations" / f"captions_{part}2014.json", "w") as f:
            json.dump(data, f)
    with pytest.raises(DataError, match=r"captions_val2014.json: image 999 .* has no captions"):
        run(["--coco_path", coco, "--no_images", "--output_json", tmp_path / "d.json",
             "--output_h5", tmp_path / "d.h5"])


def test_interrupted_run_leaves_no_file_that_looks_complete(tmp_path, monkeypatch):
    images = make_png_set(tmp_path, 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "d.json").write_text("previous run")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepro_coco, "write_labels", fail)
    with pytest.raises(KeyboardInterrupt):
        run_on(tmp_path, images)
    assert sorted(os.listdir(tmp_path / "out")) == ["d.json"]
    assert (tmp_path / "out" / "d.json").read_text() == "previous run"


# --- the command line, run as a user would -------------------------------------------------

@pytest.mark.parametrize("how", ["script", "module", "console"])
def test_command_line_entry_points(tmp_path, how):
    images = make_png_set(tmp_path, 3)
    raw = write_raw(tmp_path / "raw.json", images)
    args = ["--input_json", str(raw), "--images_root", str(tmp_path), "--imsize", "8",
            "--output_json", str(tmp_path / "d.json"), "--output_h5", str(tmp_path / "d.h5")]
    bindir = os.path.dirname(sys.executable)
    command, cwd = {
        "script": ([sys.executable, "prepro_coco.py"], os.path.join(REPO, "imcap", "utils")),
        "module": ([sys.executable, "-m", "imcap.utils.prepro_coco"], REPO),
        "console": ([os.path.join(bindir, "imcap-prepro")], str(tmp_path)),
    }[how]
    done = subprocess.run(command + args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "number of UNKs" in done.stdout and "top words and their counts" in done.stdout
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert f["images"].shape == (3, 3, 8, 8)
    bad = subprocess.run(command + args[:-4] + ["--num_val", "-1"], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--num_val must be at least 0, got -1" in bad.stderr
    (tmp_path / "img" / "1.png").write_bytes(b"")
    bad = subprocess.run(command + args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("prepro_coco: error: image ")
    assert "img/1.png" in bad.stderr and "file is empty" in bad.stderr


def test_the_vocabulary_from_every_split_or_from_training_only(tmp_path):
    """imcap_keras counts every split's captions; --vocab_from train leaves words only val and
    test captions hold out (they become UNK), as a vocabulary that never sees the test set."""
    images = [{"filename": f"{i}.jpg", "imgid": i, "split": split,
               "sentences": [{"raw": caption}]}
              for i, (split, caption) in enumerate([("train", "a dog runs"),
                                                    ("train", "a cat runs"),
                                                    ("val", "a zebra runs"),
                                                    ("test", "a dog sleeps")])]
    karpathy = tmp_path / "dataset_flickr8k.json"
    karpathy.write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    common = ["--karpathy_json", karpathy, "--no_images", "--word_count_threshold", 0]
    run(common + ["--output_json", tmp_path / "d.json", "--output_h5", tmp_path / "d.h5"])
    _, info = read_outputs(tmp_path)
    markers = ["<eos>", "<start>"]
    assert sorted(info["ix_to_word"].values()) == markers + ["a", "cat", "dog", "runs", "sleeps",
                                                             "zebra"]
    run(common + ["--vocab_from", "train", "--output_json", tmp_path / "d.json",
                  "--output_h5", tmp_path / "d.h5"])
    arrays, info = read_outputs(tmp_path)
    words = info["ix_to_word"]
    assert sorted(words.values()) == markers + ["UNK", "a", "cat", "dog", "runs"]
    test_row = [im["split"] for im in info["images"]].index("test")
    start = arrays["label_start_ix"][test_row] - 1
    caption = [words[str(w)] for w in arrays["labels"][start] if w]
    assert caption == ["<start>", "a", "dog", "UNK", "<eos>"]
