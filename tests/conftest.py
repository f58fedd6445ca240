"""Shared fixtures: small generated datasets. No test reads ../shared or the network."""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from imcap.utils import make_shapes, prepro_coco  # noqa: E402


def make_tiny_shapes(out):
    """A tiny synthetic dataset in the MS COCO layout (20 train, 2 restval, 4 val, 4 test)."""
    make_shapes.generate(str(out), num_train=20, num_restval=2, num_val=4, num_test=4,
                         image_size=48, seed=3)
    return out


def prepro_tiny_shapes(shapes_dir, out):
    """``shapes_dir`` preprocessed at 32 px with its split lists into ``out``: (h5, json)."""
    h5, js = str(out / "shapes.h5"), str(out / "shapes.json")
    prepro_coco.main(prepro_coco.parse_params([
        "--coco_path", str(shapes_dir), "--splits_dir", str(shapes_dir / "splits"),
        "--output_json", js, "--output_h5", h5, "--imsize", "32", "--workers", "1",
        "--word_count_threshold", "0"]))
    return h5, js


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def shapes_prepro(shapes_dir, tmp_path_factory):
    return prepro_tiny_shapes(shapes_dir, tmp_path_factory.mktemp("prepro"))


def copy_train_data(shapes_prepro, folder):
    """Makes ``folder`` a train.py -data_folder holding the preprocessed ``(h5, json)`` (and
    their ground-truth files) under the seed's file names; returns it."""
    h5, js = shapes_prepro
    (folder / "data").mkdir(parents=True)
    for source, name in ((h5, "cocotalk_challenge.h5"), (js, "cocotalk_challenge.json"),
                         (js.replace(".json", "_val_gt.json"), "cocotalk_challenge_val_gt.json"),
                         (js.replace(".json", "_test_gt.json"),
                          "cocotalk_challenge_test_gt.json")):
        shutil.copy(source, folder / "data" / name)
    return folder


@pytest.fixture()
def data_folder(shapes_prepro, tmp_path):
    """A train.py -data_folder holding the tiny preprocessed set under the seed's file names."""
    return copy_train_data(shapes_prepro, tmp_path / "run")
