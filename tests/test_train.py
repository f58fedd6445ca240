"""train.py on the synthetic set: early stopping, the feature cache, standardised features, a NaN
loss, the curves, gradient accumulation, the console scripts. (Both stages on one device:
``test_distribute``, whose one-device run is the reference of the mirrored ones.)"""

import json
import os
import re
import shutil

import h5py
import keras
import numpy as np
import pytest

from imcap import train
from imcap.train import training_config
from imcap.training.callbacks import EarlyStopping
from imcap.training.trainer import Trainer
from imcap.models.feature_standardization import feature_statistics
from imcap.data import features
from imcap.models.saving import load_model
from imcap.data.loader import CaptionData
from imcap.models.preprocessing import preprocessor

RESNET = preprocessor("resnet")  # the encoder's preprocessing, for image datasets

TINY = ["-cnn_weights", "none", "-cnn_layer", "conv2_block1_out", "-imsize", "32",
        "-emb_dim", "16", "-z_dim", "16", "-lstm_dim", "16", "-bs", "8", "-lr", "0.01",
        "--sgate", "--log_term", "-seed", "7"]


def read_state(folder):
    with open(folder / "models" / "model_state.json") as f:
        return json.load(f)


def test_early_stopping_stops_at_the_right_epoch(data_folder, monkeypatch):
    scripted = iter([1.0, 2.0, 2.0, 1.5, 1.9, 3.0, 4.0])
    monkeypatch.setattr(Trainer, "validate", lambda self, *models: next(scripted))
    train.main(["-data_folder", str(data_folder), "-nepochs", "10", "-ftnepochs", "0",
                "-pat", "3"] + TINY)
    frozen = read_state(data_folder)["stages"]["frozen"]
    assert frozen["epochs_done"] == 5  # best at epoch 2, then three epochs without improvement
    assert frozen["best"] == 2.0 and frozen["wait"] == 3
    assert os.path.basename(frozen["best_epoch_path"]) == "model_epoch02_CIDEr2.0000.keras"
    assert os.path.exists(frozen["best_epoch_path"])
    assert not os.path.exists(data_folder / "models" / "model_epoch01_CIDEr1.0000.keras")


def test_early_stopping_on_loss_minimizes():
    stopper = EarlyStopping(2, maximize=False)
    assert [stopper.update(v) for v in (3.0, 2.0, 2.5, 1.0, 1.5, 1.2)] == [
        (True, False), (True, False), (False, False), (True, False), (False, False),
        (False, True)]


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["-data_folder", str(tmp_path)] + TINY)
    assert exit_info.value.code == 1
    assert "preprocessed data not found: " in capsys.readouterr().err
    keras.backend.clear_session()


def test_feature_cache_gives_the_numbers_of_images(data_folder, tmp_path):
    args = ["-nepochs", "2", "-ftnepochs", "0", "-dr_ratio", "0", "-es_metric", "loss"] + TINY
    cached = tmp_path / "cached"
    shutil.copytree(data_folder, cached)
    train.main(["-data_folder", str(data_folder)] + args)
    train.main(["-data_folder", str(cached), "--precompute_feats"] + args)
    from_images = read_state(data_folder)["stages"]["frozen"]
    from_cache = read_state(cached)["stages"]["frozen"]
    # float16 storage of the features is the only difference
    np.testing.assert_allclose([h["loss"] for h in from_cache["history"]],
                               [h["loss"] for h in from_images["history"]], rtol=2e-3)
    # and one model gives the same logits from images and from its cached features
    model = load_model(from_images["last_path"])
    h5 = str(data_folder / "data" / "cocotalk_challenge.h5")
    js = str(data_folder / "data" / "cocotalk_challenge.json")
    cache = features.cache_features(model.encoder, "resnet", h5, str(tmp_path / "c.h5"))
    x_images = next(iter(CaptionData(h5, js, "val").dataset(4, RESNET, training=False)))[0]
    x_cached = next(iter(CaptionData(h5, js, "val", features=cache).dataset(
        4, training=False)))[0]
    assert set(x_cached) == {"features", "words"}  # every image has K regions
    np.testing.assert_allclose(model.features_model()(x_cached), model(x_images), atol=1e-2)
    # the cache is a features file: each row's image id from the JSON, the extractor named
    with h5py.File(cache, "r") as f, open(js) as j:
        assert f["image_ids"][()].tolist() == [image["id"] for image in json.load(j)["images"]]
        assert f.attrs["backbone"] == "resnet" and f.attrs["image_size"] == 32


def test_standardized_features_store_their_statistics(data_folder):
    train.main(["-data_folder", str(data_folder), "-nepochs", "1", "-ftnepochs", "0",
                "-standardize", "position", "--precompute_feats", "-sent_dropout", "0.5",
                "--position_embedding"] + TINY)
    model = load_model(read_state(data_folder)["stages"]["frozen"]["last_path"])
    layer = model.get_layer("standardize")
    assert model.config.standardize == "position" and layer.center
    assert layer.scale.shape == (256,) and layer.mean.shape == (64, 256)
    assert not layer.trainable_weights  # statistics, not parameters
    # they are the training split's, from the cache of the model's own encoder
    cache = str(data_folder / "tmp" / "model_features.h5")
    split = CaptionData(str(data_folder / "data" / "cocotalk_challenge.h5"),
                        str(data_folder / "data" / "cocotalk_challenge.json"), "train")
    scale, center = feature_statistics(features.read_split_features(cache, split.image_ids),
                                       center=True)
    np.testing.assert_allclose(layer.scale, scale, rtol=1e-5)
    np.testing.assert_allclose(layer.mean, center, rtol=1e-5, atol=1e-6)
    assert model.config.sent_dropout == 0.5 and model.config.position_embedding


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(data_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["-data_folder", str(data_folder), "-nepochs", "3", "-ftnepochs", "0",
                    "-optim", "SGD"] + TINY + ["-lr", "1e30", "-clip", "1e30"])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert re.search(r"the loss became (nan|inf) in stage frozen, epoch 1, step [0-9]+;", message)
    assert "stopped, the last good checkpoint is" in message
    models = os.listdir(data_folder / "models")
    assert not [m for m in models if "partial" in m]


def test_plot_curves_writes_a_png(tmp_path, capsys):
    """From the state train.py keeps (two stages, their epochs one after the other)."""
    from imcap import plot_curves
    from imcap.training.run_folder import RunFolder, TrainingState

    data_folder = tmp_path / "run"
    with pytest.raises(SystemExit):
        plot_curves.main(["-data_folder", str(data_folder)])
    assert "plot_curves: error: no training state at" in capsys.readouterr().err
    state = TrainingState()
    # stage 1's records as train.py writes them (val_CIDEr); stage 2's as a state from before
    # 2026-12-06 holds them (CIDEr): both panels must show both stages
    for stage, losses, key in (("frozen", [3.0, 2.0, 1.5], "val_CIDEr"),
                               ("finetune", [1.4, 1.2], "CIDEr")):
        state.stage(stage).history = [{"epoch": n + 1, "loss": loss, key: 2.0 / loss}
                                      for n, loss in enumerate(losses)]
    run = RunFolder(str(data_folder), "model")
    os.makedirs(run.models)
    state.write(run.state)
    plot_curves.main(["-data_folder", str(data_folder)])
    png = data_folder / "results" / "model_curves.png"
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1000, 400)  # 10 x 4 inches at 100 dpi
        pixels = np.asarray(image.convert("RGB"))
    # two panels, each with a line per stage in matplotlib's first two colours
    for half in (pixels[:, :500], pixels[:, 500:]):
        for colour in ((31, 119, 180), (255, 127, 14)):  # #1f77b4, #ff7f0e
            assert np.all(np.abs(half.astype(int) - colour) < 30, axis=-1).sum() > 100
    assert not (data_folder / "results" / "model_curves.partial.png").exists()


def test_accumulated_gradients_equal_the_large_batch(shapes_prepro):
    """-accum 2 with batches of 4 makes the same update as one batch of 8 (SGD, no dropout)."""
    from imcap import args as imcap_args
    from imcap.models.captioner import Captioner
    from imcap.models.encoder import set_trainable

    h5, js = shapes_prepro
    data = CaptionData(h5, js, "train")
    x, y, w = next(iter(data.dataset(8, RESNET, training=False)))[:3]
    results = []
    for accum, batches in ((1, [(x, y, w)]), (2, [
            ({k: v[:4] for k, v in x.items()}, y[:4], w[:4]),
            ({k: v[4:] for k, v in x.items()}, y[4:], w[4:])])):
        parsed = training_config(imcap_args.parse_args(
            TINY + ["-dr_ratio", "0", "-optim", "SGD", "-lr", "0.5", "-accum", str(accum)]))
        keras.utils.set_random_seed(1)
        model = Captioner(parsed.model_config(data.vocabulary))
        set_trainable(model.encoder)  # stage 1: BatchNormalization in inference mode
        model.compile(optimizer=parsed.optimizer.make(parsed.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for bx, by, bw in batches:
            model.train_on_batch(bx, by, sample_weight=bw)
        results.append(model.get_weights())
    changed = 0
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(results[0], Captioner(model.config).get_weights()):
        changed += not np.allclose(a, b)
    assert changed > 0  # the update really happened


def test_every_console_script_answers_help():
    """Each console script of pyproject.toml is installed and reaches its command's parser."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "pyproject.toml")) as f:  # (tomllib is Python 3.11+)
        section = f.read().split("[project.scripts]\n", 1)[1].split("\n\n", 1)[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, re.M))
    assert {"imcap-train", "imcap-test", "imcap-prepro", "imcap-eval"} <= set(scripts)
    bindir = os.path.dirname(sys.executable)
    for name in scripts:
        done = subprocess.run([os.path.join(bindir, name), "-h"], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert done.stdout.startswith("usage: "), (name, done.stdout[:200])
    # --help is fast: no command module imports TensorFlow before its flags parse
    modules = sorted({target.split(":")[0] for target in scripts.values()})
    done = subprocess.run([sys.executable, "-c", f"import sys\nfor m in {modules!r}: "
                           f"__import__(m)\nprint(sorted(m for m in sys.modules if m in "
                           f"('tensorflow', 'keras')))"], capture_output=True, text=True,
                          timeout=300, cwd=repo)
    assert done.returncode == 0 and done.stdout.split("\n")[0] == "[]", done.stdout + done.stderr
