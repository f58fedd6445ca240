"""Shared fixtures: small generated datasets. No test reads ../shared or the network."""

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from imcap.data import make_shapes  # noqa: E402
from imcap.utils import prepro_coco  # noqa: E402


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
    their ground-truth files) under imcap_keras' file names; returns it."""
    h5, js = shapes_prepro
    (folder / "data").mkdir(parents=True)
    for source, name in ((h5, "cocotalk_challenge.h5"), (js, "cocotalk_challenge.json"),
                         (js.replace(".json", "_val_gt.json"), "cocotalk_challenge_val_gt.json"),
                         (js.replace(".json", "_test_gt.json"),
                          "cocotalk_challenge_test_gt.json")):
        shutil.copy(source, folder / "data" / name)
    return folder


# --- precomputed region features (train.py -features) -------------------------------------------

DIM = 6  # channels of the hand-made features


def json_ids(json_path, split=None):
    with open(json_path) as f:
        return [image["id"] for image in json.load(f)["images"]
                if split is None or image["split"] == split]


def features_of(image_id, count):
    """Features that say which image they belong to (a seeded draw per id)."""
    return np.random.default_rng(image_id).normal(size=(count, DIM)).astype(np.float32)


def write_file(path, ids, counts, order=None, dtype=np.float32):
    order = np.arange(len(ids)) if order is None else order
    regions = max(counts)
    values = np.zeros((len(ids), regions, DIM), dtype)
    for row, n in enumerate(order):
        values[row, :counts[n]] = features_of(ids[n], counts[n])
    with h5py.File(path, "w") as f:
        f["features"] = values
        f["image_ids"] = np.asarray(ids, np.int64)[order]
        if len(set(counts)) > 1:
            f["num_regions"] = np.asarray(counts, np.int32)[order]
        f.attrs["backbone"] = "made by hand"
    return str(path)


def labels_and_features(shapes_prepro, parent):
    """A labels-only copy of the tiny set in ``parent / "run"`` (as prepro_coco.py --no_images
    writes it) and a features file of 4 regions per image: (folder, features path)."""
    folder = copy_train_data(shapes_prepro, parent / "run")
    with h5py.File(folder / "data" / "cocotalk_challenge.h5", "a") as f:
        del f["images"]
    ids = json_ids(folder / "data" / "cocotalk_challenge.json")
    return folder, write_file(folder / "feats.h5", ids, [4] * len(ids))


def start_train(argv, env=None):
    """``python -m imcap.train ARGV`` in a child process (from the repository, output piped,
    ``env`` added to the environment); ``finish`` waits for it."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.Popen([sys.executable, "-m", "imcap.train"] + argv, cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})))


def finish(process):
    """Waits for a ``start_train`` process; asserts it succeeded; returns its output."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def events_scalars(board):
    """The TensorBoard events files in the folder ``board`` and their scalars:
    ``(files, {tag: [(step, value)]})``."""
    import tensorflow as tf

    files = sorted(board.glob("events.out.tfevents.*"))
    scalars = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return files, scalars


def worker_configs(count):
    """``TF_CONFIG`` values (JSON) for a cluster of ``count`` workers on free localhost ports,
    one per worker process (``--strategy multiworker`` on this machine)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    hosts = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
            for index in range(count)]


@pytest.fixture()
def data_folder(shapes_prepro, tmp_path):
    """A train.py -data_folder holding the tiny preprocessed set under imcap_keras' file names."""
    return copy_train_data(shapes_prepro, tmp_path / "run")


def check_layer(layer, inputs, expected_shapes, trainable_weights, workdir):
    """What every custom layer must do: the output shapes on ``inputs`` (an array or a list),
    ``trainable_weights`` trainable weights, a ``get_config`` / ``from_config`` round trip, and
    a ``.keras`` round trip with ``safe_mode=True`` (inside a functional model) that computes
    the same outputs. Returns the layer's outputs."""
    import keras
    import numpy as np
    import tensorflow as tf

    outputs = layer(inputs)
    flat = tf.nest.flatten(outputs)
    assert [tuple(o.shape) for o in flat] == [tuple(s) for s in expected_shapes]
    assert len(layer.trainable_weights) == trainable_weights
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    symbolic = [keras.Input(a.shape[1:], dtype=str(a.dtype)) for a in arrays]
    model = keras.Model(symbolic, tf.nest.flatten(
        layer(symbolic if isinstance(inputs, (list, tuple)) else symbolic[0])))
    path = str(workdir / f"{layer.name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(tf.nest.flatten(loaded(arrays)), flat):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    return outputs


@pytest.fixture()
def layer_check(tmp_path):
    """``check_layer`` with a folder for its ``.keras`` files."""
    import functools
    import imcap.models.captioner  # noqa: F401  (registers the custom layers)

    return functools.partial(check_layer, workdir=tmp_path)


# --- what a training run writes: only JSON, HDF5 and .keras (no pickle, no Lambda) ----------

HDF5 = b"\x89HDF\r\n\x1a\n"


def kind_of(path):
    """What a file written by training is, from its bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5:
        return "hdf5"
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as archive:
            inner = {name: archive.read(name)[:8] for name in archive.namelist()}
        assert set(inner) == {"config.json", "metadata.json", "model.weights.h5"}, inner
        assert inner["model.weights.h5"] == HDF5
        config = json.loads(zipfile.ZipFile(path).read("config.json"))
        assert "Lambda" not in json.dumps(config)
        return "keras"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        json.loads(text)
        return "json"
    if path.endswith((".csv", ".log")):
        return "text"
    return "other"


def assert_only_json_hdf5_and_keras(folder):
    """Checks what a training run wrote in ``folder``'s models/ and tmp/: checkpoints are
    .keras zips holding JSON and HDF5 (no Lambda) that load with safe_mode=True, the optimizer
    state and the feature cache are HDF5, the state is JSON. (Used by the
    fault tests on their run from the feature cache, to train only once.)"""
    kinds = {}
    for sub in ("models", "tmp"):
        for name in os.listdir(folder / sub):
            path = str(folder / sub / name)
            if os.path.isfile(path):
                kinds[f"{sub}/{name}"] = kind_of(path)
                if kinds[f"{sub}/{name}"] == "keras":
                    from imcap.models import saving
                    saving.load_model(path, compile=False)
    assert "other" not in kinds.values(), kinds
    assert {"keras", "hdf5", "json"} <= set(kinds.values()), kinds
    assert kinds["tmp/model_features.h5"] == "hdf5"
    assert any(name.endswith("_optimizer.h5") and kind == "hdf5" for name, kind in kinds.items())


def sharpen_logits(model, seed, end_id):
    """Redraws ``model``'s logits layer (N(0, 2^2), ``<eos>`` favoured a little): sharper,
    varied word distributions and caption lengths than a fresh initialisation gives."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.startswith("logits/"):
            value = rng.normal(size=weight.shape) * 2.0
            if weight.path.endswith("bias"):
                value[end_id] += 1.0
            weight.assign(value)
    return model
