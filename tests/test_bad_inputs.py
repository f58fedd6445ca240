"""Bad input, every command: a one-line error naming the file, field or value and what was
expected, a non-zero exit status, and no output left behind (no new file, no changed file).

``CASES`` is the table; ``tests/bad_inputs.md`` shows it with the messages the commands print
(``python -m tests.test_bad_inputs`` rewrites it, and a test checks that it is current).
Inputs that must work (odd image modes, empty and non-ASCII captions) are at the end.
"""

import contextlib
import io
import json
import os
import pathlib
import shutil
import socket
import tempfile
import urllib.error
import zipfile
from dataclasses import dataclass, field
from unittest import mock

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from imcap import caption, export, test as test_script, train
from imcap.coco_caption import eval_caps
from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.models import saving
from imcap.utils import prepro_coco
from imcap.data.loader import CaptionData
from tests.conftest import copy_train_data, make_tiny_shapes, prepro_tiny_shapes

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "bad_inputs.md")

COMMANDS = {
    "prepro_coco": prepro_coco.cli,
    "train": train.main,
    "test": test_script.main,
    "caption": caption.main,
    "eval_caps": eval_caps.main,
    "export": export.main,
}
TINY = ["-cnn_weights", "none", "-cnn_layer", "conv2_block1_out", "-imsize", "32",
        "-emb_dim", "8", "-z_dim", "8", "-lstm_dim", "8", "-bs", "8", "-nepochs", "1",
        "-ftnepochs", "0", "-es_metric", "loss", "--sgate", "--log_term"]


@dataclass
class Case:
    name: str
    command: str
    what: str  # the bad input, for the table
    setup: object  # (world) -> argv
    expect: list = field(default_factory=list)  # fragments of the one error line
    status: int = 1  # 1: bad input; 2: bad flag


# --- inputs --------------------------------------------------------------------------------

def jpeg_bytes(size=40, colour=(200, 30, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class World:
    """A fresh folder per case, with the shared tiny data and models copied or linked in."""

    def __init__(self, root, shared):
        self.root, self.shared = root, shared
        self.patches = contextlib.ExitStack()  # undone by run_case after the case

    def offline(self):
        """No network and an empty Keras cache in the case's folder."""
        from keras.src.backend import config as keras_config
        from keras.src.utils import file_utils

        def no_network(url, target, progress=None):
            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        os.makedirs(self.path("keras"))  # get_file falls back to /tmp/.keras without it
        self.patches.enter_context(mock.patch.object(keras_config, "_KERAS_DIR",
                                                     self.path("keras")))
        self.patches.enter_context(mock.patch.object(file_utils, "urlretrieve", no_network))
        return []

    def path(self, *parts):
        return str(self.root.joinpath(*parts))

    # prepro_coco: a raw NeuralTalk2 json of three images
    def raw(self, images=None, edit=None, file_name="raw.json", text=None):
        (self.root / "images").mkdir(exist_ok=True)
        for name, colour in (("a.jpg", (200, 30, 30)), ("b.jpg", (30, 200, 30)),
                             ("c.jpg", (30, 30, 200))):
            (self.root / "images" / name).write_bytes(jpeg_bytes(colour=colour))
        items = [{"file_path": "a.jpg", "captions": ["a red square"], "id": 1},
                 {"file_path": "b.jpg", "captions": ["a green circle"], "id": 2},
                 {"file_path": "c.jpg", "captions": ["a blue square"], "id": 3}]
        for name, content in (images or {}).items():
            (self.root / "images" / name).write_bytes(content)
        if edit:
            edit(items)
        raw = self.root / file_name
        raw.write_text(text if text is not None else json.dumps(items))
        return ["--input_json", str(raw), "--images_root", self.path("images"),
                "--output_json", self.path("out", "talk.json"),
                "--output_h5", self.path("out", "talk.h5"), "--num_val", "1", "--num_test", "1",
                "--imsize", "16", "--workers", "1", "--word_count_threshold", "0"]

    # prepro_coco: the MS COCO layout, one val and one train image
    def coco(self, val_file="a.jpg", val_captions=("a red square",)):
        for part, name in (("val", val_file), ("train", "b.jpg")):
            (self.root / "coco" / "images" / f"{part}2014").mkdir(parents=True, exist_ok=True)
            (self.root / "coco" / "images" / f"{part}2014" / "a.jpg").write_bytes(jpeg_bytes())
            (self.root / "coco" / "images" / f"{part}2014" / "b.jpg").write_bytes(jpeg_bytes())
            image_id = 1 if part == "val" else 2
            captions = val_captions if part == "val" else ("a green circle",)
            annotations = {"images": [{"id": image_id, "file_name": name}],
                           "annotations": [{"id": 10 * image_id + i, "image_id": image_id,
                                            "caption": c} for i, c in enumerate(captions)]}
            (self.root / "coco" / "annotations").mkdir(exist_ok=True)
            (self.root / "coco" / "annotations" / f"captions_{part}2014.json").write_text(
                json.dumps(annotations))
        return ["--coco_path", self.path("coco"), "--output_json", self.path("out", "talk.json"),
                "--output_h5", self.path("out", "talk.h5"), "--num_val", "0", "--num_test", "0",
                "--imsize", "16", "--workers", "1", "--word_count_threshold", "0"]

    # train / test: the tiny preprocessed set under train.py's file names
    def data_folder(self, edit_h5=None, edit_json=None):
        folder = self.root / "run"
        shutil.copytree(self.shared["data_folder"], folder)
        if edit_h5:
            with h5py.File(folder / "data" / "cocotalk_challenge.h5", "a") as f:
                edit_h5(f)
        if edit_json:
            path = folder / "data" / "cocotalk_challenge.json"
            path.write_text(json.dumps(edit_json(json.loads(path.read_text()))))
        return ["-data_folder", str(folder)]

    # -features: a features file or folder for the tiny set (4 regions x 6 channels)
    def image_ids(self, split=None):
        with open(os.path.join(self.shared["data_folder"], "data",
                               "cocotalk_challenge.json")) as f:
            return [image["id"] for image in json.load(f)["images"]
                    if split is None or image["split"] == split]

    def features_file(self, edit=None):
        ids = self.image_ids()
        values = {"features": np.random.default_rng(0).random((len(ids), 4, 6), np.float32),
                  "image_ids": np.array(ids, np.int64),
                  "num_regions": np.full(len(ids), 4, np.int32)}
        if edit:
            edit(values, self)
        path = self.path("feats.h5")
        with h5py.File(path, "w") as f:
            for name, value in values.items():
                f[name] = value
        return ["-features", path]

    def features_folder(self, arrays):
        folder = self.root / "feats"
        folder.mkdir()
        for name, array in arrays.items():
            if name.endswith(".npz"):
                np.savez(folder / name, **array)
            else:
                np.save(folder / name, array)
        return ["-features", str(folder)]

    def interrupted_run(self):
        """The state of a run interrupted after one epoch, its last checkpoint the tiny model."""
        models = self.root / "run" / "models"
        models.mkdir()
        state = {"stages": {"frozen": {"last_path": self.shared["model"], "epochs_done": 1,
                                       "optimizer_path": str(models / "opt.h5")}}}
        (models / "model_state.json").write_text(json.dumps(state))
        return []

    def file(self, name, content):
        path = self.root / name
        path.write_bytes(content)
        return str(path)

    def results(self, content):
        path = self.root / "results.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return ["-results_file", str(path), "-ann_file", self.shared["test_gt"],
                "-out_file", self.path("out", "scores.json")]


def drop(name):
    def edit(f):
        del f[name]
    return edit


def shorten(name):
    def edit(f):
        values = f[name][:-1]
        del f[name]
        f.create_dataset(name, data=values)
    return edit


def small_images(f):
    count = f["images"].shape[0]
    del f["images"]
    f.create_dataset("images", data=np.zeros((count, 3, 16, 16), np.uint8))


def other_vocabulary(info):
    """Three words, <start> and <eos> among them: too few for the HDF5's labels."""
    words = list(info["ix_to_word"].values())
    kept = ["<start>", next(w for w in words if w not in ("<start>", "<eos>")), "<eos>"]
    info["ix_to_word"] = {str(i + 1): word for i, word in enumerate(kept)}
    return info


def no_end_word(info):
    info["ix_to_word"] = {ix: word for ix, word in info["ix_to_word"].items()
                          if word != "<eos>"}
    info["ix_to_word"] = {str(i + 1): w for i, w in enumerate(info["ix_to_word"].values())}
    return info


def one_image_less(info):
    info["images"] = info["images"][:-1]
    return info


def without_first_train_image(values, world):
    keep = values["image_ids"] != world.image_ids("train")[0]
    values.update({name: value[keep] for name, value in values.items()})


def nan_in_first_test_image(values, world):
    row = values["image_ids"].tolist().index(world.image_ids("test")[0])
    values["features"][row, 1, 2] = np.inf


def first_image_without_regions(values, world):
    values["num_regions"][0] = 0


def ids_of_another_dataset(values, world):
    values["image_ids"] += 10 ** 6


def other_channels(values, world):
    values["features"] = values["features"][:, :, :5]


def lambda_checkpoint(world):
    """A .keras file whose model holds a Lambda layer (arbitrary code: refused)."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = world.path("lambda.keras")
    model.save(path)
    return path


def garbage_checkpoint(world):
    path = world.path("garbage.keras")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
    return path


def gt_ids(world):
    with open(world.shared["test_gt"]) as f:
        return sorted(image["id"] for image in json.load(f)["images"])


CASES = [
    # prepro_coco.py
    Case("corrupt_jpeg", "prepro_coco", "a JPEG file holding random bytes",
         lambda w: w.raw({"b.jpg": os.urandom(300)}),
         ["b.jpg", "cannot read image", "cannot identify image file"]),
    Case("truncated_jpeg", "prepro_coco", "a JPEG cut in half",
         lambda w: w.raw({"b.jpg": jpeg_bytes()[:300]}),
         ["b.jpg", "cannot read image", "Truncated"]),
    Case("empty_jpeg", "prepro_coco", "a 0-byte JPEG",
         lambda w: w.raw({"b.jpg": b""}), ["b.jpg", "file is empty (0 bytes)"]),
    Case("missing_image", "prepro_coco", "an image file that does not exist",
         lambda w: w.raw(edit=lambda items: items[1].update(file_path="gone.jpg")),
         ["gone.jpg", "not found"]),
    Case("no_captions", "prepro_coco", "an image with an empty caption list",
         lambda w: w.raw(edit=lambda items: items[2].update(captions=[])),
         ["raw.json", "item 2 (c.jpg)", "image has no captions"]),
    Case("captions_not_a_list", "prepro_coco", "'captions' a string, not a list",
         lambda w: w.raw(edit=lambda items: items[0].update(captions="a red square")),
         ["raw.json", "item 0 (a.jpg)", "field 'captions' must be a list of strings"]),
    Case("missing_field", "prepro_coco", "an image without 'file_path'",
         lambda w: w.raw(edit=lambda items: items[1].pop("file_path")),
         ["raw.json", "item 1", "field 'file_path' is missing"]),
    Case("malformed_json", "prepro_coco", "a JSON file cut short",
         lambda w: w.raw(text='[{"file_path": "a.jpg", "captions": ["a red'),
         ["raw.json", "malformed JSON", "(line 1, column 38)"]),
    Case("json_wrong_shape", "prepro_coco", "a JSON object where a list of images is expected",
         lambda w: w.raw(text='{"images": []}'),
         ["raw.json", "expected a list of images", "got a dict"]),
    Case("non_integer_id", "prepro_coco", "an image id that is a string",
         lambda w: w.raw(edit=lambda items: items[0].update(id="one")),
         ["raw.json", "item 0 (a.jpg)", "field 'id' must be an integer", "'one'"]),
    Case("path_escapes_root", "prepro_coco", "a file path with '../'",
         lambda w: w.raw(edit=lambda items: items[0].update(file_path="../../etc/passwd")),
         ["raw.json", "item 0", "'../../etc/passwd' leaves the images root"]),
    Case("absolute_path", "prepro_coco", "an absolute file path",
         lambda w: w.raw(edit=lambda items: items[0].update(file_path="/etc/passwd")),
         ["raw.json", "'/etc/passwd' leaves the images root"]),
    Case("coco_path_escapes_root", "prepro_coco", "COCO annotations naming '../a.jpg'",
         lambda w: w.coco(val_file="../train2014/a.jpg"),
         ["captions_val2014.json", "image 1", "'../train2014/a.jpg' leaves the images root"]),
    Case("coco_image_without_captions", "prepro_coco", "a COCO image no caption names",
         lambda w: w.coco(val_captions=()),
         ["captions_val2014.json", "image 1 (a.jpg) has no captions"]),
    Case("skip_bad_too_few_left", "prepro_coco",
         "--skip_bad_images leaving 2 of 3 images for --num_val 1, --num_test 1 and one train",
         lambda w: w.raw({"b.jpg": b""}) + ["--skip_bad_images"],
         ["2 of 3 images remain", "too few for --num_val 1 + --num_test 1 and one train image",
          "was dropped (b.jpg: file is empty (0 bytes))"]),
    Case("unknown_flag", "prepro_coco", "a flag that does not exist",
         lambda w: w.raw() + ["--bogus", "1"], ["unrecognized arguments: --bogus 1"], 2),
    Case("imsize_zero", "prepro_coco", "--imsize 0",
         lambda w: w.raw() + ["--imsize", "0"], ["--imsize must be at least 1, got 0"], 2),
    # train.py
    Case("imagenet_weights_offline", "train", "-cnn_weights imagenet without network",
         lambda w: w.data_folder() + w.offline() + TINY + ["-cnn_weights", "imagenet"],
         ["cannot download the ImageNet weights of resnet from https://",
          "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "-cnn_weights FILE",
          "-cnn_weights none"]),
    Case("h5_missing_dataset", "train", "an HDF5 without 'label_end_ix'",
         lambda w: w.data_folder(edit_h5=drop("label_end_ix")) + TINY,
         ["cocotalk_challenge.h5", "dataset 'label_end_ix' is missing"]),
    Case("h5_mismatched_lengths", "train", "'label_start_ix' one entry short",
         lambda w: w.data_folder(edit_h5=shorten("label_start_ix")) + TINY,
         ["cocotalk_challenge.h5", "dataset 'label_start_ix' has 29 entries",
          "lists 30 images"]),
    Case("vocabulary_not_the_h5s", "train", "a vocabulary JSON of 3 words for the HDF5",
         lambda w: w.data_folder(edit_json=other_vocabulary) + TINY,
         ["cocotalk_challenge.h5", "has only 3 words", "do not belong together"]),
    Case("vocabulary_without_eos", "train", "a vocabulary JSON without <eos>",
         lambda w: w.data_folder(edit_json=no_end_word) + TINY,
         ["cocotalk_challenge.json", "vocabulary must contain '<eos>'"]),
    Case("json_lists_fewer_images", "train", "a vocabulary JSON listing one image less",
         lambda w: w.data_folder(edit_json=one_image_less) + TINY,
         ["dataset 'label_start_ix' has 30 entries", "lists 29 images"]),
    Case("imsize_not_the_h5s", "train", "-imsize 64 for 32 px images",
         lambda w: w.data_folder() + TINY + ["-imsize", "64"],
         ["-imsize is 64", "holds 32 px images"]),
    Case("imsize_too_small", "train", "-imsize 16 on 16 px images (the encoder needs 32)",
         lambda w: w.data_folder(edit_h5=small_images) + TINY + ["-imsize", "16"],
         ["image_size 16 is too small for resnet"]),
    Case("accum_with_a_strategy", "train", "-accum 2 with --strategy mirrored",
         lambda w: w.data_folder() + TINY + ["-accum", "2", "--strategy", "mirrored"],
         ["-accum 2 cannot run with --strategy mirrored", "keras-team/keras#20582"], 2),
    Case("negative_batch_size", "train", "-bs -8",
         lambda w: w.data_folder() + TINY + ["-bs", "-8"],
         ["argument -bs/--bs: must be positive, got -8"], 2),
    Case("scst_alone_without_model_file", "train", "-nepochs 0 -scst_epochs 1, no -model_file",
         lambda w: w.data_folder() + TINY + ["-nepochs", "0", "-scst_epochs", "1"],
         ["self-critical training alone", "pass -model_file"]),
    Case("scst_mean_baseline_one_sample", "train", "-scst_sample_n 1 with the mean baseline",
         lambda w: w.data_folder() + TINY + ["-scst_epochs", "1", "-scst_sample_n", "1"],
         ["-scst_sample_n 1 with -scst_baseline mean", "at least 2"]),
    Case("scst_references_cut_short", "train", "SCST's stored references cut short",
         lambda w: scst_references_cut_short(w) + TINY + [
             "-nepochs", "0", "-scst_epochs", "1", "-model_file", w.shared["model"]],
         ["SCST references", "model_scst_references.json: malformed", "delete it"]),
    Case("model_file_other_vocabulary", "train", "-model_file built for another vocabulary",
         lambda w: w.data_folder() + TINY + ["-model_file", w.shared["other_vocab_model"]],
         ["other_vocab.keras", "another vocabulary", "is 'zebra' and"]),
    Case("resume_with_other_flags", "train", "--resume with -lstm_dim 16 for a run of 8",
         lambda w: w.data_folder() + w.interrupted_run() + TINY + ["--resume", "-lstm_dim", "16"],
         ["--resume: checkpoint", "tiny.keras has lstm_dim 8 (-lstm_dim) but the flags give 16",
          "repeat the flags"]),
    Case("resume_without_state", "train", "--resume where nothing was trained",
         lambda w: w.data_folder() + TINY + ["--resume"],
         ["no training state to resume from", "model_state.json"]),
    Case("features_missing_an_image", "train", "-features without an image of the train split",
         lambda w: w.data_folder() + w.features_file(without_first_train_image) + TINY,
         ["features file", "feats.h5: image", "of the train split", "is missing"]),
    Case("features_ids_match_nothing", "train", "-features whose ids are another dataset's",
         lambda w: w.data_folder() + w.features_file(ids_of_another_dataset) + TINY,
         ["feats.h5: none of its image ids (100", "'id's of prepro_coco.py's JSON"]),
    Case("features_zero_regions", "train", "-features with a row of zero regions",
         lambda w: w.data_folder() + w.features_file(first_image_without_regions) + TINY,
         ["feats.h5: 'num_regions' of image", "is 0, expected 1 to 4"]),
    Case("features_npz_without_feat", "train", "an .npz without the array 'feat'",
         lambda w: w.data_folder() + w.features_folder({"1.npz": {"x": np.ones((2, 6))}})
         + TINY, ["1.npz: no array 'feat' (it holds x)"]),
    Case("features_npz_object_array", "train", "an .npz whose 'feat' is an object array",
         lambda w: w.data_folder() + w.features_folder(
             {"1.npz": {"feat": np.array([None, 1], dtype=object)}}) + TINY,
         ["1.npz: 'feat' is an object array", "never unpickled"]),
    Case("features_folder_empty", "train", "an empty features folder",
         lambda w: w.data_folder() + w.features_folder({}) + TINY,
         ["features folder", "holds no {image_id}.npz or {image_id}.npy files"]),
    Case("features_with_cnntrain", "train", "--cnntrain with -features",
         lambda w: w.data_folder() + w.features_file() + TINY + ["--cnntrain"],
         ["--cnntrain fine-tunes the CNN, and with -features there is none"]),
    # test.py
    Case("features_not_finite", "test", "-features with an infinite value in a test image",
         lambda w: w.data_folder() + w.features_file(nan_in_first_test_image)
         + ["-model_file", w.shared["features_model"]],
         ["feats.h5: image", "has NaN or infinite values"]),
    Case("features_other_channels", "test", "-features of 5 channels, a checkpoint of 6",
         lambda w: w.data_folder() + w.features_file(other_channels)
         + ["-model_file", w.shared["features_model"]],
         ["features.keras takes features of 4 x 6 (regions x channels)", "has 5 channels"]),
    Case("features_checkpoint_on_images", "test", "a checkpoint on features, without -features",
         lambda w: w.data_folder() + ["-model_file", w.shared["features_model"]],
         ["features.keras takes precomputed features (4 x 6), not the images of",
          "pass -features PATH"]),
    Case("checkpoint_other_vocabulary", "test", "a checkpoint built for another vocabulary",
         lambda w: w.data_folder() + ["-model_file", w.shared["other_vocab_model"]],
         ["other_vocab.keras", "another vocabulary"]),
    Case("checkpoint_other_image_size", "test", "a checkpoint for 64 px images, data of 32 px",
         lambda w: w.data_folder() + ["-model_file", w.shared["big_model"]],
         ["big.keras", "takes 64 px images", "holds 32 px ones"]),
    Case("checkpoint_not_a_model", "test", "a .keras file whose config is not JSON",
         lambda w: w.data_folder() + ["-model_file", garbage_checkpoint(w)],
         ["garbage.keras", "cannot be loaded"]),
    Case("checkpoint_with_lambda", "test", "a .keras file with a Lambda layer (code)",
         lambda w: w.data_folder() + ["-model_file", lambda_checkpoint(w)],
         ["lambda.keras", "cannot be loaded", "Lambda"]),
    Case("beam_size_zero", "test", "-bsize 0",
         lambda w: w.data_folder() + ["-model_file", w.shared["model"], "-bsize", "0"],
         ["-bsize", "must be positive, got 0"], 2),
    # eval_caps.py
    Case("results_unknown_ids", "eval_caps", "results for image ids not in the annotations",
         lambda w: w.results([{"image_id": 999999, "caption": "a red square"}]),
         ["results.json", "1 image ids are not in", "999999"]),
    Case("results_duplicate_ids", "eval_caps", "an image id twice",
         lambda w: w.results([{"image_id": i, "caption": "a red square"}
                              for i in gt_ids(w)[:1] * 2]),
         ["results.json", "entry 1", "appears"]),
    Case("results_non_integer_ids", "eval_caps", "an image id \"12\" (a string)",
         lambda w: w.results([{"image_id": "12", "caption": "a red square"}]),
         ["results.json", "entry 0", "'image_id' must be an integer", "'12'"]),
    Case("results_empty_caption", "eval_caps", "an empty caption",
         lambda w: w.results([{"image_id": gt_ids(w)[0], "caption": " "}]),
         ["results.json", "entry 0", "caption"]),
    Case("results_malformed_json", "eval_caps", "a results file that is not JSON",
         lambda w: w.results("[{\"image_id\": 1,"), ["results.json", "malformed JSON"]),
    Case("results_wrong_shape", "eval_caps", "a results object instead of a list",
         lambda w: w.results({"image_id": 1, "caption": "a"}),
         ["results.json", "expected a list"]),
    # caption.py and export.py
    Case("caption_folder_without_images", "caption", "a folder holding no image file",
         lambda w: [os.makedirs(w.path("photos")) or w.path("photos"), "-model_file",
                    w.shared["model"]],
         ["folder", "photos has no image files (.bmp, .gif, .jpeg, .jpg, .png"]),
    Case("caption_glob_matches_nothing", "caption", "a glob that matches no file",
         lambda w: [w.path("photos", "*.jpg"), "-model_file", w.shared["model"]],
         ["no file matches the glob", "photos/*.jpg"]),
    Case("caption_missing_image", "caption", "an image path that does not exist",
         lambda w: [w.path("nowhere.jpg"), "-model_file", w.shared["model"]],
         ["image file not found", "nowhere.jpg"]),
    Case("caption_corrupt_image", "caption", "a PNG holding random bytes",
         lambda w: [w.file("bad.png", os.urandom(200)), "-model_file", w.shared["model"]],
         ["bad.png", "cannot read image"]),
    Case("caption_batch_size_zero", "caption", "-bs 0",
         lambda w: [w.file("ok.jpg", jpeg_bytes()), "-model_file", w.shared["model"],
                    "-bs", "0"], ["-bs must be at least 1, got 0"]),
    Case("export_beam_size_zero", "export", "-bsize 0",
         lambda w: ["-model_file", w.shared["model"], "-out_dir", w.path("out", "saved"),
                    "-bsize", "0"], ["-bsize must be at least 1, got 0"], 2),
]


# --- running a case ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared(data_folder_for_module):
    return data_folder_for_module


@pytest.fixture(scope="module")
def data_folder_for_module(shapes_prepro, tmp_path_factory):
    return make_shared(shapes_prepro, tmp_path_factory.mktemp("bad_inputs_shared"))


def scst_references_cut_short(world):
    argv = world.data_folder()
    models = world.root / "run" / "models"
    models.mkdir()
    (models / "model_scst_references.json").write_text('{"references": {"1": ["a red')
    return argv


def make_shared(shapes_prepro, root):
    """The tiny data in train.py's layout and three tiny checkpoints: one for the data, one for
    another vocabulary, one for 64 px images."""
    h5, js = shapes_prepro
    folder = copy_train_data(shapes_prepro, root / "run")
    vocabulary = CaptionData(h5, js, "test").vocabulary
    keras.utils.set_random_seed(1)
    config = CaptionerConfig(vocabulary=vocabulary, cnn_weights="none",
                             cnn_layer="conv2_block1_out", image_size=32, emb_dim=8, z_dim=8,
                             lstm_dim=8, dr_ratio=0.0, use_sentinel=True)
    models = {"model": config,
              "other_vocab_model": config.replace(
                  vocabulary=list(vocabulary.words[:-1]) + ["zebra"]),
              "big_model": config.replace(image_size=64),
              "features_model": config.replace(input_images=False, num_regions=4,
                                               feature_dim=6)}
    shared = {"data_folder": str(folder),
              "test_gt": str(folder / "data" / "cocotalk_challenge_test_gt.json")}
    for key, model_config in models.items():
        name = {"model": "tiny", "other_vocab_model": "other_vocab", "big_model": "big",
                "features_model": "features"}[key]
        shared[key] = str(root / f"{name}.keras")
        saving.save_model(Captioner(model_config), shared[key])
    return shared


def snapshot(root):
    """Every file under ``root`` with its size and modification time."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            files[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
    return files


def run_case(case, root, shared):
    """Runs ``case`` in ``root``; returns ``(exit status, stderr, files added or changed)``."""
    world = World(root, shared)
    argv = case.setup(world)
    before = snapshot(root)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), world.patches:
            COMMANDS[case.command](argv)
        status = 0
    except SystemExit as stop:
        status = stop.code
    finally:
        keras.backend.clear_session()
    err = err.getvalue()
    after = snapshot(root)
    changed = sorted(path for path, stat in after.items() if before.get(path) != stat)
    return status, err, changed


def error_lines(err, command):
    """The error lines: ``COMMAND: error:`` (bad input) or ``COMMAND.py: error:`` (bad flag)."""
    return [line for line in err.splitlines()
            if line.startswith((f"{command}: error:", f"{command}.py: error:"))]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_an_exit_status_and_no_output(case, shared, tmp_path):
    status, err, changed = run_case(case, tmp_path, shared)
    assert status == case.status, err[-2000:]
    assert "Traceback" not in err
    lines = error_lines(err, case.command)
    assert len(lines) == 1, err[-2000:]
    assert err.rstrip().splitlines()[-1] == lines[0]  # the last thing printed
    for fragment in case.expect:
        assert fragment in lines[0], lines[0]
    assert changed == [], f"{case.name} left {changed}"


def test_the_table_in_bad_inputs_md_is_current():
    with open(TABLE) as f:
        rows = [line for line in f if line.startswith("| `")]
    listed = {row.split("`")[1]: row for row in rows}
    assert list(listed) == [case.name for case in CASES], \
        "rewrite tests/bad_inputs.md: python -m tests.test_bad_inputs"
    for case in CASES:
        message = listed[case.name].rstrip().rstrip("|").split("|")[-1]
        for fragment in case.expect:
            assert fragment.replace("|", "\\|") in message, (case.name, fragment)


# --- inputs that must work -----------------------------------------------------------------

def test_odd_images_and_captions_are_preprocessed(tmp_path, capsys):
    """CMYK JPEG, 16-bit PNG, RGBA PNG, palette GIF; an empty and a non-ASCII caption."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert("CMYK").save(images / "cmyk.jpg", "JPEG", quality=95)
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(images / "deep.png")
    assert Image.open(images / "deep.png").mode.startswith("I")
    rgba = np.dstack([pixels, np.full((20, 24), 255, np.uint8)])
    rgba[:10, :, 3] = 0  # the top half transparent: composited over white
    Image.fromarray(rgba, "RGBA").save(images / "alpha.png")
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(images / "pal.gif")
    items = [{"file_path": "cmyk.jpg", "captions": ["a red square"], "id": 1},
             {"file_path": "deep.png", "captions": ["", "a grey square"], "id": 2},
             {"file_path": "alpha.png", "captions": ["un café près du carré"], "id": 3},
             {"file_path": "pal.gif", "captions": ["Ein grüner Kreis über dem Würfel"], "id": 4}]
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    out_json, out_h5 = tmp_path / "out.json", tmp_path / "out.h5"
    prepro_coco.cli(["--input_json", str(raw), "--images_root", str(images), "--output_json",
                     str(out_json), "--output_h5", str(out_h5), "--num_val", "1",
                     "--num_test", "1", "--imsize", "16", "--workers", "2",
                     "--word_count_threshold", "0"])
    info = json.loads(out_json.read_text())
    words = set(info["ix_to_word"].values())
    assert {"café", "près", "grüner", "würfel"} <= words
    order = [image["file_path"] for image in info["images"]]
    with h5py.File(out_h5) as f:
        stored = f["images"][:]
        starts, ends, lengths = f["label_start_ix"][:], f["label_end_ix"][:], f["label_length"][:]
    assert stored.shape == (4, 3, 16, 16) and stored.dtype == np.uint8
    alpha = stored[order.index("alpha.png")]
    assert alpha[:, :6].min() == 255  # the transparent rows are white
    deep = stored[order.index("deep.png")]
    np.testing.assert_array_equal(deep[0], deep[1])  # grey: equal channels
    assert deep.max() > 200  # 16-bit values scaled to 8 bits, not clipped to 255 everywhere
    assert deep.std() > 10
    rows = order.index("deep.png")
    assert ends[rows] - starts[rows] + 1 == 2  # the empty caption kept, as imcap_keras did
    # lengths count <start> and <eos>: the empty caption is "<start> <eos>"
    assert sorted(lengths[starts[rows] - 1:ends[rows]]) == [2, 5]


def write_table():
    """Runs every case and writes tests/bad_inputs.md with the messages printed."""
    root = tempfile.mkdtemp(prefix="bad_inputs_")
    base = pathlib.Path(root)
    shapes_dir = make_tiny_shapes(base / "shapes")
    (base / "shared").mkdir()
    shared = make_shared(prepro_tiny_shapes(shapes_dir, base), base / "shared")
    rows = ["# Bad input: every case and its message", "",
            "Generated by `python -m tests.test_bad_inputs` from the table `CASES` in "
            "`tests/test_bad_inputs.py`, which runs each case and checks the exit status, that "
            "the error is one line naming the file, field or value, and that nothing was "
            "written. Status 1: bad input; 2: a bad flag. `…/` stands for the case's folder.",
            "", "| case | command | input | status | message |",
            "| --- | --- | --- | --- | --- |"]
    for i, case in enumerate(CASES):
        folder = base / f"case{i}"
        folder.mkdir()
        status, err, _ = run_case(case, folder, shared)
        lines = error_lines(err, case.command)
        message = lines[0] if lines else err.strip().splitlines()[-1]
        message = message.replace(str(folder) + "/", "…/").replace(str(base) + "/", "…/")
        message = message.replace("|", "\\|")
        rows.append(f"| `{case.name}` | {case.command} | {case.what} | {status} | {message} |")
        print(case.name, status, message)
    with open(TABLE, "w") as f:
        f.write("\n".join(rows) + "\n")
    shutil.rmtree(root)


if __name__ == "__main__":
    write_table()
