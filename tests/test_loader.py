"""The tf.data loader: shifted targets and masks, images from the HDF5, seeded order, eval ids."""

import json
import shutil

import h5py
import keras
import numpy as np
import pytest

from imcap.utils.fileio import DataError
from imcap.data.loader import CaptionData
from imcap.models.preprocessing import preprocess_images, preprocessor

RESNET = preprocessor("resnet")  # the encoder's preprocessing, for image datasets


def collect(dataset):
    return [tuple(np.asarray(t) if not isinstance(t, dict) else {k: np.asarray(v) for k, v in
                                                                  t.items()} for t in b)
            for b in dataset]


@pytest.fixture(scope="module")
def stored(shapes_prepro):
    h5, js = shapes_prepro
    with h5py.File(h5, "r") as f:
        arrays = {k: f[k][()] for k in f}
    with open(js) as f:
        info = json.load(f)
    return arrays, info


def test_batches_shift_mask_and_keep_the_last_partial_batch(shapes_prepro, stored):
    arrays, info = stored
    data = CaptionData(*shapes_prepro, "train")
    train_positions = [i for i, im in enumerate(info["images"]) if im["split"] == "train"]
    assert len(data) == len(train_positions) == 22  # restval joined train
    assert data.vocabulary.size == len(info["ix_to_word"]) + 1 and data.seq_length == 18
    assert data.vocabulary.words == tuple(info["ix_to_word"][str(i)]
                                          for i in range(1, len(info["ix_to_word"]) + 1))
    batches = collect(data.dataset(8, RESNET, seed=1))
    assert [len(b[1]) for b in batches] == [8, 8, 6]
    order, rows = data.epoch_plan(1, seed=1)
    x = {k: np.concatenate([b[0][k] for b in batches]) for k in ("images", "words")}
    targets = np.concatenate([b[1] for b in batches])
    weights = np.concatenate([b[2] for b in batches])
    captions = arrays["labels"][rows].astype(np.int32)  # (22, 1, 18)
    assert x["words"].shape == targets.shape == weights.shape == (22, 1, 17)
    np.testing.assert_array_equal(x["words"], captions[:, :, :-1])
    np.testing.assert_array_equal(targets, captions[:, :, 1:])
    np.testing.assert_array_equal(weights, (captions[:, :, 1:] > 0).astype(np.float32))
    assert x["words"].dtype == np.int32 and weights.dtype == np.float32
    positions = np.array(train_positions)[order]
    for k, position in enumerate(positions):  # each caption belongs to its image
        start, end = arrays["label_start_ix"][position], arrays["label_end_ix"][position]
        assert start - 1 <= rows[k, 0] <= end - 1
    rgb = arrays["images"][positions].transpose(0, 2, 3, 1).astype(np.float32)
    expected = keras.applications.resnet50.preprocess_input(rgb.copy())
    np.testing.assert_allclose(x["images"], expected, atol=1e-4)
    assert x["images"].shape == (22, 32, 32, 3)


def test_preprocess_matches_keras_applications():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    for cnn, module in (("resnet", keras.applications.resnet50),
                        ("vgg16", keras.applications.vgg16), ("vgg19", keras.applications.vgg19)):
        np.testing.assert_allclose(preprocess_images(rgb, cnn),
                                   module.preprocess_input(rgb.copy()), atol=1e-4)
    with pytest.raises(ValueError,
                       match="cnn must be one of resnet, resnet101, .*, got 'alexnet'"):
        preprocess_images(rgb, "alexnet")


def test_shuffle_is_seeded_per_epoch(shapes_prepro):
    data = CaptionData(*shapes_prepro, "train")
    a = data.epoch_plan(1, seed=7, epoch=0)
    b = data.epoch_plan(1, seed=7, epoch=0)
    c = data.epoch_plan(1, seed=7, epoch=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert sorted(a[0]) == sorted(c[0]) == list(range(22))
    first = collect(data.dataset(5, RESNET, seed=7, epoch=3))
    again = collect(data.dataset(5, RESNET, seed=7, epoch=3))
    for p, q in zip(first, again):
        np.testing.assert_array_equal(p[0]["images"], q[0]["images"])
        np.testing.assert_array_equal(p[1], q[1])


def test_seq_per_img_draws_distinct_captions(shapes_prepro, stored):
    arrays, info = stored
    data = CaptionData(*shapes_prepro, "train")
    order, rows = data.epoch_plan(5, seed=2)
    for image_rows, start in zip(rows, data.label_start[order]):
        assert sorted(image_rows) == list(range(start, start + 5))  # all five, each once
    order, rows = data.epoch_plan(7, seed=2)
    for image_rows, start in zip(rows, data.label_start[order]):
        assert set(image_rows) == set(range(start, start + 5))
    x, targets, weights = next(iter(data.dataset(4, RESNET, seq_per_img=5)))
    assert x["words"].shape == targets.shape == weights.shape == (4, 5, 17)


def test_eval_mode_keeps_order_and_yields_ids(shapes_prepro, stored):
    arrays, info = stored
    data = CaptionData(*shapes_prepro, "val")
    batches = collect(data.dataset(3, RESNET, training=False))
    assert [len(b[3]) for b in batches] == [3, 1]
    ids = np.concatenate([b[3] for b in batches])
    positions = [i for i, im in enumerate(info["images"]) if im["split"] == "val"]
    assert list(ids) == [info["images"][p]["id"] for p in positions]
    words = np.concatenate([b[0]["words"] for b in batches])
    first_rows = arrays["label_start_ix"][positions] - 1
    np.testing.assert_array_equal(words[:, 0], arrays["labels"][first_rows, :-1])


def test_reads_a_file_laid_out_like_imcap_keras_files(shapes_prepro, stored, tmp_path):
    """imcap_keras wrote contiguous (unchunked) datasets; the loader reads those too."""
    arrays, _ = stored
    h5 = tmp_path / "imcap_keras.h5"
    with h5py.File(h5, "w") as f:
        for name, values in arrays.items():
            f.create_dataset(name, data=values)
    ours = collect(CaptionData(*shapes_prepro, "test").dataset(2, RESNET, training=False))
    theirs = collect(CaptionData(str(h5), shapes_prepro[1], "test").dataset(2, RESNET,
                                                                          training=False))
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p[0]["images"], q[0]["images"])
        np.testing.assert_array_equal(p[3], q[3])


def test_mismatched_or_broken_files(shapes_prepro, stored, tmp_path):
    h5, js = shapes_prepro
    arrays, info = stored
    short = dict(info, images=info["images"][:-1])
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(DataError, match=r"'label_start_ix' has 30 entries but .*short.json "
                                        r"lists 29 images"):
        CaptionData(h5, str(tmp_path / "short.json"), "train")
    small_vocab = dict(info, ix_to_word={"1": "<start>", "2": "a", "3": "<eos>"})
    (tmp_path / "vocab.json").write_text(json.dumps(small_vocab))
    with pytest.raises(DataError, match="has only 3 words; the two files do not belong together"):
        CaptionData(h5, str(tmp_path / "vocab.json"), "train")
    with pytest.raises(DataError, match=r"split 'restval' has no images \(splits present: "
                                        r"test, train, val\)"):
        CaptionData(h5, js, "restval")
    broken = tmp_path / "broken.h5"
    shutil.copy(h5, broken)
    with h5py.File(broken, "a") as f:
        del f["label_end_ix"]
    with pytest.raises(DataError, match="broken.h5: dataset 'label_end_ix' is missing"):
        CaptionData(str(broken), js, "train")
    with pytest.raises(DataError, match="HDF5 file not found"):
        CaptionData(str(tmp_path / "none.h5"), js, "train")
    labels_only = CaptionData(h5, js, "train", with_images=False)
    with pytest.raises(ValueError, match="opened without images"):
        labels_only.dataset(4, RESNET)
