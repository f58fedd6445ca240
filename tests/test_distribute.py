"""--strategy: mirrored on two logical CPU devices (both stages) and two local workers on
loopback (stage 1) train to the losses and weights of one device."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from imcap.training import distribute
from imcap import train
from imcap.models.saving import load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["-cnn_weights", "none", "-cnn_layer", "conv2_block1_out", "-imsize", "32",
         "-emb_dim", "16", "-z_dim", "16", "-lstm_dim", "16", "-bs", "8", "-lr", "0.01",
         "--sgate", "--log_term", "-seed", "7", "-dr_ratio", "0", "-nepochs", "1",
         "-ftnepochs", "1", "-finetune_start_layer", "12", "-es_metric", "loss"]


def history(folder, stages=("frozen", "finetune")):
    with open(folder / "models" / "model_state.json") as f:
        state = json.load(f)["stages"]
    return [h["loss"] for stage in stages for h in state[stage]["history"]]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(folder, extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "imcap.train", "-data_folder", str(folder)]
                            + FLAGS + extra, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})))


def finish(process):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def assert_same_training(reference, other, stages=("frozen", "finetune")):
    np.testing.assert_allclose(history(other, stages), history(reference, stages), rtol=1e-4)
    best = "model_cnntrain_best.keras" if "finetune" in stages else "model_best.keras"
    expected = load_model(str(reference / "models" / best), compile=False).get_weights()
    got = load_model(str(other / "models" / best), compile=False).get_weights()
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, atol=1e-4)


@pytest.mark.slow
def test_mirrored_and_multiworker_match_one_device(data_folder):
    mirrored, multiworker = data_folder.parent / "mirrored", data_folder.parent / "multiworker"
    for folder in (mirrored, multiworker):
        shutil.copytree(data_folder, folder)
    # the mirrored run in a child while the one-device run trains here (the suite's last
    # minutes often leave a core free)
    child = launch(mirrored, ["--strategy", "mirrored", "-cpu_devices", "2"])
    train.main(["-data_folder", str(data_folder)] + FLAGS)  # one device, in this process
    output = finish(child)
    assert "strategy mirrored: 2 replica(s)" in output
    assert_same_training(data_folder, mirrored)

    # stage 1 only: what stage 2 adds (the CNN's variables at their own learning rate) is the
    # same under both strategies, and mirrored training covered it
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    flags = ["--strategy", "multiworker", "-ftnepochs", "0"]
    workers = [launch(multiworker, flags, {"TF_CONFIG": json.dumps(
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})})
        for index in range(2)]
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
