"""Both stages of train.py on one device (the loss falls, checkpoints load, --lrmults scales
the CNN's updates, BatchNormalization stays frozen), and --strategy: mirrored on two logical CPU
devices (both stages) and two local workers on loopback (stage 1) train to the losses and
weights of that one-device run. (One run serves both: the suite trains it once.)"""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from imcap.training import distribute
from imcap import train
from imcap.models.captioner import Captioner
from imcap.models.saving import load_model
from tests.conftest import finish, start_train, worker_configs

FLAGS = ["-cnn_weights", "none", "-cnn_layer", "conv2_block1_out", "-imsize", "32",
         "-emb_dim", "16", "-z_dim", "16", "-lstm_dim", "16", "-bs", "8", "-lr", "0.01",
         "--sgate", "--log_term", "-seed", "7", "-dr_ratio", "0", "-nepochs", "2",
         "-ftnepochs", "1", "-finetune_start_layer", "12", "-es_metric", "loss", "--lrmults",
         "-lrmult_conv", "0.5"]


def history(folder, stages=("frozen", "finetune")):
    with open(folder / "models" / "model_state.json") as f:
        state = json.load(f)["stages"]
    return [h["loss"] for stage in stages for h in state[stage]["history"]]


def launch(folder, extra, env=None):
    return start_train(["-data_folder", str(folder)] + FLAGS + extra, env)


def assert_same_training(reference, other, stages=("frozen", "finetune")):
    np.testing.assert_allclose(history(other, stages), history(reference, stages), rtol=1e-4)
    best = "model_cnntrain_best.keras" if "finetune" in stages else "model_best.keras"
    expected = load_model(str(reference / "models" / best), compile=False).get_weights()
    got = load_model(str(other / "models" / best), compile=False).get_weights()
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, atol=1e-4)


def assert_both_stages_trained(folder):
    """What the one-device run of both stages left: two epochs of stage 1 whose loss falls,
    one of stage 2, the checkpoints (last, best, best weights, stage 2's best) that load, the
    --lrmults optimizer saved with stage 2's checkpoint, and stage 2 changing the CNN above
    -finetune_start_layer only, BatchNormalization statistics never."""
    with open(folder / "models" / "model_state.json") as f:
        state = json.load(f)
    frozen, finetune = state["stages"]["frozen"], state["stages"]["finetune"]
    losses = [h["loss"] for h in frozen["history"]]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert frozen["done"] and finetune["done"] and finetune["epochs_done"] == 1
    models = sorted(os.listdir(folder / "models"))
    assert "model_best.keras" in models and "model_cnntrain_best.keras" in models
    assert "model_best.weights.h5" in models and "model_last_epoch02.keras" in models
    assert not [m for m in models if m.startswith("model_last_epoch0") and "02" not in m]
    assert not [m for m in models if "partial" in m]
    epoch_named = [m for m in models if m.startswith("model_epoch")]
    assert len(epoch_named) == 1 and epoch_named[0].endswith(".keras")
    tuned = load_model(str(folder / "models" / "model_cnntrain_best.keras"))
    before = load_model(str(folder / "models" / "model_best.keras"))
    assert tuned.config.use_sentinel and tuned.config.num_regions == 64
    weights_only = Captioner(before.config, load_encoder_weights=False)
    weights_only.load_weights(str(folder / "models" / "model_best.weights.h5"))
    for a, b in zip(weights_only.get_weights(), before.get_weights()):
        np.testing.assert_array_equal(a, b)
    # --lrmults: the fine-tuning optimizer (loaded back from the checkpoint) scales the CNN
    assert tuned.optimizer.lr_multiplier == 0.5
    assert set(tuned.optimizer.multiplied_paths) == {
        v.path for layer in tuned.encoder.layers[12:] for v in layer.weights
        if not isinstance(layer, keras.layers.BatchNormalization)} != set()
    with open(folder / "models" / "model_frozen_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], losses, rtol=1e-6)
    for index, (a, b) in enumerate(zip(before.encoder.layers, tuned.encoder.layers)):
        for u, v in zip(a.get_weights(), b.get_weights()):
            changed = not np.array_equal(u, v)
            is_bn = isinstance(a, keras.layers.BatchNormalization)
            assert changed == (index >= 12 and not is_bn), a.name


@pytest.mark.slow
def test_both_stages_on_one_device_and_mirrored_and_multiworker_match_it(data_folder):
    mirrored, multiworker = data_folder.parent / "mirrored", data_folder.parent / "multiworker"
    for folder in (mirrored, multiworker):
        shutil.copytree(data_folder, folder)
    # the mirrored run in a child while the one-device run trains here (the suite's last
    # minutes often leave a core free)
    child = launch(mirrored, ["--strategy", "mirrored", "-cpu_devices", "2"])
    train.main(["-data_folder", str(data_folder)] + FLAGS)  # one device, in this process
    assert_both_stages_trained(data_folder)
    output = finish(child)
    assert "strategy mirrored: 2 replica(s)" in output
    assert_same_training(data_folder, mirrored)

    # stage 1 only: what stage 2 adds (the CNN's variables at their own learning rate) is the
    # same under both strategies, and mirrored training covered it
    flags = ["--strategy", "multiworker", "-ftnepochs", "0"]
    workers = [launch(multiworker, flags, {"TF_CONFIG": config})
               for config in worker_configs(2)]
    outputs = [finish(worker) for worker in workers]
    assert "strategy multiworker: 2 replica(s)" in outputs[0]
    assert_same_training(data_folder, multiworker, stages=("frozen",))
    # only the chief wrote into -data_folder; worker 1 kept its own copy under tmp/
    worker_models = multiworker / "tmp" / "worker_1" / "models"
    assert (worker_models / "model_best.keras").is_file()
    assert not (multiworker / "models" / "model_cnntrain_best.keras").exists()
    assert history(multiworker, ("frozen",)) == pytest.approx(
        history(worker_models.parent, ("frozen",)))


@pytest.mark.parametrize("value, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{nope", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {}}', "must hold a 'cluster'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "is not one of the cluster's"),
])
def test_a_bad_tf_config_is_named(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=message):
        distribute.check_tf_config()


def test_default_strategy_and_bad_names():
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    assert distribute.worker_index(tf.distribute.get_strategy()) is None
    with pytest.raises(ValueError, match="--strategy must be one of"):
        distribute.make_strategy("parameter_server")
