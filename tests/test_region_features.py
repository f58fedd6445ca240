"""Precomputed region features as an input: the features file and self-critical.pytorch's
folders (``imcap.data.region_features``), the loader on them, ``imcap-features``, and
``train.py -features`` / ``test.py -features`` end to end."""

import json
import os

import h5py
import numpy as np
import pytest

from imcap import extract_features, test as test_script, train
from imcap.data.loader import CaptionData
from imcap.data.region_features import FeaturesFile, FeaturesFolder, open_region_features
from imcap.models.saving import load_model
from imcap.utils.fileio import DataError
from tests.conftest import (DIM, copy_train_data, features_of, json_ids,
                            labels_and_features, finish, start_train, worker_configs,
                            write_file)

TINY = ["-emb_dim", "8", "-z_dim", "8", "-lstm_dim", "8", "-bs", "8", "-nepochs", "1",
        "-ftnepochs", "0", "-es_metric", "loss", "--sgate", "--log_term", "-seed", "3"]


def test_a_file_in_any_row_order_reads_by_image_id(tmp_path):
    ids, counts = [7, 3, 11, 5], [4, 2, 3, 4]
    path = write_file(tmp_path / "f.h5", ids, counts, order=[2, 0, 3, 1], dtype=np.float16)
    source = open_region_features(path)
    assert isinstance(source, FeaturesFile)
    assert (source.max_regions, source.dim, source.variable) == (4, DIM, True)
    assert source.attrs["backbone"] == "made by hand"
    batch, got = source.read([3, 11], regions=5)
    assert batch.shape == (2, 5, DIM) and batch.dtype == np.float32 and got.tolist() == [2, 3]
    np.testing.assert_allclose(batch[0, :2], features_of(3, 2).astype(np.float16))
    assert not batch[0, 2:].any() and not batch[1, 3:].any()  # zero after the real regions
    with pytest.raises(DataError, match="images have up to 4 regions but the model takes 3"):
        source.read([3], regions=3)


def test_a_folder_of_npz_and_npy_with_variable_regions(tmp_path):
    np.savez(tmp_path / "12.npz", feat=features_of(12, 3))
    np.save(tmp_path / "40.npy", features_of(40, 5))
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_region_features(str(tmp_path))
    assert isinstance(source, FeaturesFolder)
    assert (len(source), source.max_regions, source.dim, source.variable) == (2, 5, DIM, True)
    batch, counts = source.read([40, 12])
    np.testing.assert_array_equal(batch[0], features_of(40, 5))
    np.testing.assert_array_equal(batch[1, :3], features_of(12, 3))
    assert counts.tolist() == [5, 3] and not batch[1, 3:].any()


@pytest.mark.parametrize("make, message", [
    (lambda d: np.savez(d / "1.npz", other=np.ones((2, DIM))), "no array 'feat' (it holds other)"),
    (lambda d: np.savez(d / "1.npz", feat=np.array([None, 1], dtype=object)),
     "object array"),
    (lambda d: np.save(d / "1.npy", np.ones((0, DIM), np.float32)), "zero regions"),
    (lambda d: np.save(d / "1.npy", np.ones((2, 3, DIM), np.float32)), "expected (K, D)"),
    (lambda d: (d / "1.npz").write_bytes(b"not a zip"), "is not an .npz archive"),
    (lambda d: None, "holds no {image_id}.npz or {image_id}.npy files"),
])
def test_bad_folders_are_one_line(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError) as error:
        open_region_features(str(tmp_path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_nan_and_missing_images_are_named(tmp_path):
    path = write_file(tmp_path / "f.h5", [1, 2], [3, 3])
    with h5py.File(path, "a") as f:
        f["features"][1, 0, 0] = np.nan
    source = open_region_features(path)
    with pytest.raises(DataError, match="image 2 has NaN or infinite values"):
        source.read([1, 2])
    with pytest.raises(DataError, match="image 9 of the train split of x.json is missing"):
        source.check_images([1, 9], "x.json", "train")
    with pytest.raises(DataError, match="none of its image ids"):
        source.check_images([8, 9], "x.json", "train")


def test_the_loader_yields_features_and_counts_by_id(shapes_prepro, tmp_path):
    h5, js = shapes_prepro
    ids = json_ids(js)
    counts = [2 + i % 3 for i in range(len(ids))]
    path = write_file(tmp_path / "f.h5", ids, counts, order=np.random.default_rng(0).permutation(
        len(ids)))
    data = CaptionData(h5, js, "val", with_images=False, features=path, regions=6)
    x, _, _, batch_ids = next(iter(data.dataset(4, training=False)))
    assert set(x) == {"features", "num_regions", "words"} and x["features"].shape[1:] == (6, DIM)
    for n, image_id in enumerate(batch_ids.numpy()):
        k = counts[ids.index(image_id)]
        assert x["num_regions"][n] == k
        np.testing.assert_array_equal(x["features"][n, :k], features_of(int(image_id), k))


@pytest.fixture
def features_run(shapes_prepro, tmp_path_factory):
    """train.py -features on a labels-only copy of the tiny set (every image 4 regions): stage
    1 (one epoch; stage 2 asked for, and skipped), then self-critical training, with
    --strategy multiworker (two worker processes on this machine; mirrored training is
    test_distribute's, from images) and --mixed_precision bfloat16 together (-accum is refused
    under a strategy, see test_bad_inputs; on one device: test_training_from_a_folder_of_
    variable_region_sets here, and test_train). Returns (folder, features path, the chief's
    log)."""
    folder, path = labels_and_features(shapes_prepro, tmp_path_factory.mktemp("features"))
    at = TINY.index("-nepochs")
    flags = [f for f in TINY[:at] + TINY[at + 2:] if f != "--log_term"] + [  # with a log file
        "-nepochs", "1", "-ftnepochs", "2", "-scst_epochs", "1", "-scst_sample_n", "2",
        "--mixed_precision", "bfloat16", "--strategy", "multiworker"]
    workers = [start_train(["-data_folder", str(folder), "-features", path] + flags,
                           {"TF_CONFIG": config}) for config in worker_configs(2)]
    for worker in workers:
        finish(worker)
    return folder, path, (folder / "logs" / "model.log").read_text()


def check_training_from_a_features_file_then_captioning_it(features_run):
    folder, path, log = features_run
    with open(folder / "models" / "model_state.json") as f:
        stages = json.load(f)["stages"]
    assert list(stages) == ["frozen", "scst"] and stages["frozen"]["done"]  # no stage 2
    assert "stage 2 (-ftnepochs 2) is skipped" in log
    model = load_model(stages["frozen"]["best_path"])
    config = model.config
    assert not config.input_images and (config.num_regions, config.feature_dim) == (4, DIM)
    assert config.features_source == os.path.abspath(path)  # recorded in the checkpoint
    assert model.encoder is None
    test_ids = json_ids(folder / "data" / "cocotalk_challenge.json", "test")
    for extra in ([], ["-bsize", "3"], ["-temperature", "0.5"]):
        results = test_script.main(["-data_folder", str(folder), "-features", path] + extra)
        with open(results) as f:
            assert sorted(r["image_id"] for r in json.load(f)) == sorted(test_ids)


def check_a_features_checkpoint_refuses_images_and_other_features(features_run, tmp_path,
                                                                   capsys):
    folder, path, _ = features_run
    with pytest.raises(SystemExit):
        test_script.main(["-data_folder", str(folder)])
    assert "takes precomputed features (4 x 6), not the images of" in capsys.readouterr().err
    other = write_file(tmp_path / "other.h5", json_ids(folder / "data" /
                                                     "cocotalk_challenge.json"), [4] * 30)
    with h5py.File(other, "a") as f:
        values = f["features"][:, :, :5]
        del f["features"]
        f["features"] = values
    with pytest.raises(SystemExit):
        test_script.main(["-data_folder", str(folder), "-features", other])
    err = capsys.readouterr().err
    assert f"takes features of 4 x 6, from {os.path.abspath(path)} (regions x channels)" in err
    assert "has 5 channels" in err
    with pytest.raises(SystemExit):
        train.main(["-data_folder", str(folder), "-features", path, "--cnntrain"] + TINY)
    assert "with -features there is none" in capsys.readouterr().err


def check_features_and_scst_on_two_workers_and_mixed_precision(features_run):
    """The run of ``features_run``: both stages trained on two replicas, the checkpoints keep
    the bfloat16 policy, and test.py decodes the self-critical model from the same
    features."""
    folder, path, log = features_run
    assert "strategy multiworker: 2 replica(s)" in log
    with open(folder / "models" / "model_state.json") as f:
        stages = json.load(f)["stages"]
    assert all(stages[s]["done"] for s in stages)
    (trained,) = stages["frozen"]["history"]  # (the loss falling: test_distribute)
    assert np.isfinite(trained["loss"])
    (sampled,) = stages["scst"]["history"]
    assert sampled["length"] > 0 and np.isfinite([sampled["reward"], sampled["baseline"],
                                                  sampled["loss"]]).all()
    # SCST's validation loss is the whole loss on two replicas too (a Keras loss comes divided
    # by the replicas: it read half of stage 1's); three steps at -scst_lr 5e-5 barely move it
    assert sampled["val_loss"] == pytest.approx(trained["val_loss"], rel=0.05)
    frozen, scst = (load_model(stages[s]["best_path"]) for s in ("frozen", "scst"))
    for model in (frozen, scst):
        assert model.config.dtype_policy == "mixed_bfloat16"
        assert model.dtype_policy.compute_dtype == "bfloat16"
    assert any(not np.array_equal(a, b) for a, b in zip(frozen.get_weights(),
                                                         scst.get_weights()))
    results = test_script.main(["-data_folder", str(folder), "-features", path, "--scst"])
    with open(results) as f:
        assert len(json.load(f)) == len(json_ids(folder / "data" /
                                                 "cocotalk_challenge.json", "test"))


@pytest.mark.slow
def test_features_file_training_on_two_replicas_captioning_and_refusals(features_run, tmp_path,
                                                                        capsys):
    """One test for the one run of ``features_run`` (a module fixture would run once per
    pytest-xdist worker that gets one of its tests)."""
    check_training_from_a_features_file_then_captioning_it(features_run)
    check_features_and_scst_on_two_workers_and_mixed_precision(features_run)
    check_a_features_checkpoint_refuses_images_and_other_features(features_run, tmp_path, capsys)


def test_imcap_features_from_the_hdf5_and_from_a_folder(shapes_prepro, shapes_dir, tmp_path):
    h5, js = shapes_prepro
    flags = ["-cnn_weights", "none", "-cnn_layer", "conv2_block1_out", "-imsize", "32",
             "-bs", "8"]
    out = extract_features.main(["-h5", h5, "-json", js, "-out", str(tmp_path / "a.h5")]
                                + flags)
    source = open_region_features(out)
    assert sorted(source.image_ids.tolist()) == sorted(json_ids(js))
    assert (source.max_regions, source.dim) == (64, 256) and not source.variable
    assert source.attrs["backbone"] == "resnet" and source.attrs["image_size"] == 32
    assert not os.path.exists(out + ".partial")
    # a folder of image files, ids from the names' numbers
    images = shapes_dir / "images" / "val2014"
    names = sorted(os.listdir(images))[:3]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in names:
        os.link(images / name, folder / name)
    out = extract_features.main(["-images", str(folder), "-out", str(tmp_path / "b.h5")] + flags)
    expected = sorted(int(os.path.splitext(n)[0].rsplit("_", 1)[1]) for n in names)
    assert sorted(open_region_features(out).image_ids.tolist()) == expected


def test_training_from_a_folder_of_variable_region_sets(shapes_prepro, tmp_path):
    """self-critical.pytorch's layout: {id}.npz with 'feat' of 2 to 5 regions per image."""
    folder = copy_train_data(shapes_prepro, tmp_path / "run")
    ids = json_ids(folder / "data" / "cocotalk_challenge.json")
    feats = tmp_path / "cocobu_att"
    feats.mkdir()
    for n, image_id in enumerate(ids):
        np.savez(feats / f"{image_id}.npz", feat=features_of(image_id, 2 + n % 4))
    train.main(["-data_folder", str(folder), "-features", str(feats), "-standardize", "channel",
                "-scst_epochs", "1", "-scst_sample_n", "2", "-accum", "2"] + TINY)  # and SCST
    with open(folder / "models" / "model_state.json") as f:
        stages = json.load(f)["stages"]
    assert list(stages) == ["frozen", "scst"] and stages["scst"]["done"]
    assert stages["scst"]["history"][0]["length"] > 0
    # -accum 2 in both stages: stage 1's checkpoint keeps its accumulating optimizer (SCST's
    # trains the wrapper around the captioner); SCST still updates the weights
    frozen, scst = (load_model(stages[s]["last_path"]) for s in ("frozen", "scst"))
    assert frozen.optimizer.gradient_accumulation_steps == 2
    assert any(not np.array_equal(a, b) for a, b in zip(frozen.get_weights(),
                                                         scst.get_weights()))
    config = frozen.config
    assert config.variable_regions and (config.num_regions, config.feature_dim) == (5, DIM)
    for extra in (["-bsize", "2"], ["--scst"]):
        results = test_script.main(["-data_folder", str(folder), "-features", str(feats)]
                                   + extra)
        with open(results) as f:
            assert len(json.load(f)) == len(json_ids(folder / "data" /
                                                     "cocotalk_challenge.json", "test"))
