"""Faults: ``kill -9`` of training (during validation, while a checkpoint or the state is being
written), of feature caching and of preprocessing; a full disk and a read-only folder.

Each kill runs the real command in a child process (``tests/faults.py`` wraps one function to
SIGKILL the process at the chosen point); ``--resume`` (or a rerun) must then end like an
uninterrupted run, having lost at most one checkpoint interval.
"""

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from imcap import train
from imcap.data import features
from imcap.models import saving
from imcap.utils import fileio, prepro_coco
from tests.conftest import copy_train_data, events_scalars, labels_and_features
from tests.conftest import assert_only_json_hdf5_and_keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVERY = 2  # -ckpt_every: the tiny set has 3 steps per epoch (20 images, batches of 8)
STEPS = 3
FLAGS = ["-nepochs", "2", "-ftnepochs", "0", "-dr_ratio", "0.3", "--dr", "-es_metric", "loss",
         "-ckpt_every", str(EVERY), "-pat", "5", "-cnn_weights", "none",
         "-cnn_layer", "conv2_block1_out", "-imsize", "32", "-emb_dim", "16", "-z_dim", "16",
         "-lstm_dim", "16", "-bs", "8", "-lr", "0.01", "--sgate", "--log_term", "-seed", "7"]


def read_state(folder):
    with open(folder / "models" / "model_state.json") as f:
        return json.load(f)


def killed(point, count, command, argv, cwd=REPO):
    """Runs ``tests/faults.py``; asserts it died of SIGKILL; returns its output."""
    done = subprocess.run([sys.executable, os.path.join(REPO, "tests", "faults.py"), point,
                           str(count), command] + argv, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def straight(shapes_prepro, tmp_path_factory):
    """An uninterrupted run: its training state."""
    folder = copy_train_data(shapes_prepro, tmp_path_factory.mktemp("straight") / "run")
    train.main(["-data_folder", str(folder)] + FLAGS)
    keras.backend.clear_session()
    return read_state(folder)["stages"]["frozen"], folder


# one run killed at each point in turn, each kill resumed by the next (3 steps per epoch, a
# checkpoint every 2): point, its count within that process, steps trained when killed
KILLS = [
    ("step", STEPS + 1, STEPS + 1),  # in epoch 2, after its first step
    ("state", 1, STEPS + EVERY),  # writing the state after step 2 of epoch 2 (the first write
    #                               of the resumed run): the state of epoch 1's end stays
    ("checkpoint", 2, 2 * STEPS),  # writing epoch 2's end-of-epoch checkpoint (1: its step 2)
    ("validation", 1, 2 * STEPS),  # validating epoch 2
]


def assert_killed_cleanly(folder, trained):
    """After a kill: every file that looks complete loads, the state names files that exist,
    and at most one checkpoint interval is lost. Returns the state of the stage."""
    models = folder / "models"
    state = read_state(folder)["stages"]["frozen"]
    for name in os.listdir(models):
        if name.endswith(".keras") and ".partial" not in name:
            saving.load_model(str(models / name), compile=False)
    assert os.path.isfile(state["last_path"]) and os.path.isfile(state["optimizer_path"])
    saved = state["epochs_done"] * STEPS + state.get("steps_done", 0)
    assert 0 <= trained - saved <= EVERY, (trained, saved)
    return state


@pytest.mark.slow
def test_kill_9_at_each_point_then_resume_ends_like_an_uninterrupted_run(straight, shapes_prepro,
                                                                         tmp_path, capsys):
    """kill -9 in the middle of a step, while the state and a checkpoint are written and while
    validating, each resumed by the next run (a resume that went wrong shows at the end): the
    last --resume ends where the uninterrupted run did, losses and weights."""
    reference, _ = straight
    folder = copy_train_data(shapes_prepro, tmp_path / "run")
    state = None
    for point, count, trained in KILLS:
        resume = ["--resume"] if state is not None else []
        output = killed(point, count, "train", ["-data_folder", str(folder)] + FLAGS + resume)
        if state is not None:
            assert f"resuming stage frozen after epoch {state['epochs_done']}" in output, point
        state = assert_killed_cleanly(folder, trained)

    capsys.readouterr()
    train.main(["-data_folder", str(folder), "--resume"] + FLAGS)
    keras.backend.clear_session()
    assert f"resuming stage frozen after epoch {state['epochs_done']}" in capsys.readouterr().out
    resumed = read_state(folder)["stages"]["frozen"]
    assert resumed["epochs_done"] == reference["epochs_done"] == 2 and resumed["done"]
    assert os.path.basename(resumed["best_epoch_path"]) == \
        os.path.basename(reference["best_epoch_path"])
    np.testing.assert_allclose([h["loss"] for h in resumed["history"]],
                               [h["loss"] for h in reference["history"]], rtol=1e-5)
    for x, y in zip(saving.load_model(resumed["last_path"], compile=False).get_weights(),
                    saving.load_model(reference["last_path"], compile=False).get_weights()):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert not [name for name in os.listdir(folder / "models") if ".partial" in name]


@pytest.mark.slow
def test_ctrl_c_is_one_line_in_the_terminal_and_the_log_and_its_command_resumes_exactly(
        straight, shapes_prepro, tmp_path):
    """SIGINT in the middle of training: exit status 130, one line naming where it stopped, the
    last complete checkpoint and the command that goes on; the same line in the log; running
    that command ends like an uninterrupted run (dropout masks included)."""
    reference, _ = straight
    folder = copy_train_data(shapes_prepro, tmp_path / "run")
    flags = ["-data_folder", str(folder)] + [f for f in FLAGS if f != "--log_term"]
    state_file = folder / "models" / "model_state.json"
    child = subprocess.Popen([sys.executable, "train.py"] + flags, cwd=os.path.join(REPO, "imcap"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not state_file.exists() and child.poll() is None:  # the first step checkpoint
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=600)
    assert child.returncode == 130, err[-3000:]
    line = err.strip().splitlines()[-1]
    kept = read_state(folder)["stages"]["frozen"]["last_path"]
    match = re.fullmatch(r"train: interrupted in stage frozen, epoch [12], after step [0-3]; the "
                         r"last complete checkpoint is (\S+); go on with: (python train\.py .*)",
                         line)
    assert match and match.group(1) == kept, line
    assert "Traceback" not in err
    assert line[len("train: "):] in (folder / "logs" / "model.log").read_text()
    command = shlex.split(match.group(2))
    assert command[-1] == "--resume"
    done = subprocess.run([sys.executable] + command[1:], cwd=os.path.join(REPO, "imcap"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = read_state(folder)["stages"]["frozen"]
    np.testing.assert_allclose([h["loss"] for h in resumed["history"]],
                               [h["loss"] for h in reference["history"]], rtol=1e-5)
    for x, y in zip(saving.load_model(resumed["last_path"], compile=False).get_weights(),
                    saving.load_model(reference["last_path"], compile=False).get_weights()):
        np.testing.assert_allclose(x, y, atol=1e-5)

@pytest.mark.slow
def test_kill_9_while_caching_features_then_the_rerun_resumes_it(shapes_prepro, tmp_path,
                                                                 capsys):
    flags = FLAGS[:1] + ["1"] + FLAGS[2:] + ["--precompute_feats"]  # one epoch
    folder = copy_train_data(shapes_prepro, tmp_path / "run")
    killed("features", 2, "train", ["-data_folder", str(folder)] + flags)  # 16 of 30 images
    cache = folder / "tmp" / "model_features.h5"
    assert not cache.exists() and (folder / "tmp" / "model_features.h5.partial").exists()
    assert not (folder / "models" / "model_state.json").exists()

    capsys.readouterr()
    train.main(["-data_folder", str(folder)] + flags)  # a plain rerun: nothing to --resume
    keras.backend.clear_session()
    assert "resuming the feature cache" in capsys.readouterr().out
    state = read_state(folder)["stages"]["frozen"]
    assert state["done"] and [h["epoch"] for h in state["history"]] == [1]
    # the resumed cache is the one its model's encoder (frozen in stage 1) writes in one go;
    # the killed run was another process: oneDNN may split a convolution differently there,
    # and a float16 feature may round the other way (seen once: 1 of 491,520 values, one ulp)
    model = saving.load_model(state["last_path"], compile=False)
    data = folder / "data"
    whole = features.cache_features(model.encoder, "resnet", str(data / "cocotalk_challenge.h5"),
                                    str(tmp_path / "whole.h5"))
    with h5py.File(cache) as a, h5py.File(whole) as b:
        np.testing.assert_allclose(a["features"][:].astype(np.float32),
                                   b["features"][:].astype(np.float32), rtol=2e-3, atol=1e-3)
        np.testing.assert_array_equal(a["image_ids"][:], b["image_ids"][:])
        assert a.attrs["fingerprint"] == b.attrs["fingerprint"]
    assert_only_json_hdf5_and_keras(folder)


def prepro_flags(shapes_dir, out):
    return ["--coco_path", str(shapes_dir), "--splits_dir", str(shapes_dir / "splits"),
            "--output_json", str(out / "talk.json"), "--output_h5", str(out / "talk.h5"),
            "--imsize", "32", "--workers", "1", "--word_count_threshold", "0"]


def test_kill_9_of_preprocessing_leaves_nothing_complete_and_a_rerun_finishes(shapes_dir,
                                                                               tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    killed("images", 3, "prepro", prepro_flags(shapes_dir, out))  # after 12 of 30 images
    left = sorted(os.listdir(out))
    assert left and all(name.endswith(".partial") for name in left), left
    prepro_coco.cli(prepro_flags(shapes_dir, out))
    reference = tmp_path / "reference"
    reference.mkdir()
    prepro_coco.cli(prepro_flags(shapes_dir, reference))
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))
    assert (out / "talk.json").read_bytes() == (reference / "talk.json").read_bytes()
    with h5py.File(out / "talk.h5") as a, h5py.File(reference / "talk.h5") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_array_equal(a[name][()], b[name][()])


# --- a full disk, a read-only folder -------------------------------------------------------

def test_a_full_disk_while_saving_stops_with_the_last_good_checkpoint(shapes_prepro, tmp_path,
                                                                      monkeypatch, capsys):
    """The disk fills up while epoch 2's checkpoint is written: one line names the file and
    the checkpoint kept; the state still points at epoch 1, and --resume then finishes."""
    folder = copy_train_data(shapes_prepro, tmp_path / "run")
    flags = FLAGS
    real = saving.save_model
    calls = []

    def full_disk(model, path):
        calls.append(path)
        if len(calls) == 4:  # epoch 2's end-of-epoch checkpoint
            def write_some(temporary):
                with open(temporary, "wb") as f:
                    f.write(b"PK\x03\x04 half a zip")
                raise OSError(28, "No space left on device", temporary)
            saving._save_atomically(write_some, path, ".keras")
        real(model, path)

    monkeypatch.setattr(saving, "save_model", full_disk)
    with pytest.raises(SystemExit) as stop:
        train.main(["-data_folder", str(folder)] + flags)
    keras.backend.clear_session()
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("train: error: cannot write ") and "No space left on device" \
        in err[-1] and "model_epoch02.partial.keras" not in err[-1], err[-1]
    assert "model_last_epoch02.keras" in err[-1] and "--resume" in err[-1]
    state = read_state(folder)["stages"]["frozen"]
    assert (state["epochs_done"], state["steps_done"]) == (1, EVERY)
    assert not [n for n in os.listdir(folder / "models") if ".partial" in n]
    monkeypatch.setattr(saving, "save_model", real)
    train.main(["-data_folder", str(folder), "--resume"] + flags)
    keras.backend.clear_session()
    assert read_state(folder)["stages"]["frozen"]["epochs_done"] == 2


def test_too_little_space_or_a_read_only_folder_fails_before_training(shapes_prepro, tmp_path,
                                                                      monkeypatch, capsys):
    folder = copy_train_data(shapes_prepro, tmp_path / "run")
    real = shutil.disk_usage
    monkeypatch.setattr(fileio.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=1_000_000))
    with pytest.raises(SystemExit):
        train.main(["-data_folder", str(folder)] + FLAGS)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train: error: ") and "1.0 MB free" in err and \
        str(folder / "models") in err, err
    monkeypatch.setattr(fileio.shutil, "disk_usage", real)
    assert not (folder / "models" / "model_state.json").exists()


def in_user_namespace(script):
    """Runs ``script`` with sh as root of a new user and mount namespace (a real tmpfs or a
    read-only bind mount without privileges); skips where the kernel does not allow it."""
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("unprivileged user namespaces are not available here")
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def test_a_really_full_disk_and_a_really_read_only_folder(shapes_dir, tmp_path):
    """prepro_coco.py on a 64 kB tmpfs, then into a read-only bind mount: one line each,
    exit status 1, nothing left behind."""
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    python = sys.executable
    flags = lambda out: " ".join(prepro_flags(shapes_dir, out))  # noqa: E731
    done = in_user_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {full} && mount --bind -o ro {ro} {ro} && "
        f"{python} -m imcap.utils.prepro_coco {flags(full)} >/dev/null; echo status $?; "
        f"ls -A {full}; echo ---; "
        f"{python} -m imcap.utils.prepro_coco {flags(ro)} >/dev/null; echo status $?; ls -A {ro}")
    first, second = done.stdout.split("---")
    assert first.split() == ["status", "1"], done.stdout + done.stderr
    assert second.split() == ["status", "1"], done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("prepro_coco")]
    assert len(errors) == 2, done.stderr
    assert "No space left on device" in errors[0] or "too little space" in errors[0], errors[0]
    assert str(full) in errors[0]
    assert "not writable" in errors[1] and str(ro) in errors[1], errors[1]


# train.py -features: no CNN, the hand-made features of tests/conftest.py
FEATURE_FLAGS = ["-ftnepochs", "0", "-dr_ratio", "0.3", "--dr", "-es_metric", "loss",
                 "-ckpt_every", str(EVERY), "-pat", "5", "-emb_dim", "16", "-z_dim", "16",
                 "-lstm_dim", "16", "-bs", "8", "-lr", "0.01", "--sgate", "--log_term",
                 "-seed", "7"]


def csv_log(folder, stage):
    with open(folder / "models" / f"model_{stage}_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def tensorboard_scalars(folder, stage):
    """The stage's TensorBoard events files and their scalars: (files, {tag: [(step, value)]})."""
    return events_scalars(folder / "logs" / "tensorboard" / f"model_{stage}")


def assert_resumed_like(folder, reference, stage):
    """The ``stage`` of ``folder``'s state ended with the training losses (and, in
    self-critical training, rewards and sampled lengths), validation scores, last weights and
    CSV log of the ``reference`` folder's, a run never killed."""
    resumed = read_state(folder)["stages"][stage]
    expected = read_state(reference)["stages"][stage]
    assert resumed["done"] and resumed["epochs_done"] == expected["epochs_done"]
    for key in ("loss", "val_loss", "reward", "baseline", "length"):
        np.testing.assert_allclose([h.get(key, 0.0) for h in resumed["history"]],
                                   [h.get(key, 0.0) for h in expected["history"]], rtol=1e-5)
    for x, y in zip(saving.load_model(resumed["last_path"], compile=False).get_weights(),
                    saving.load_model(expected["last_path"], compile=False).get_weights()):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert os.path.basename(resumed["best_path"]) == os.path.basename(expected["best_path"])
    rows, expected_rows = csv_log(folder, stage), csv_log(reference, stage)
    assert [list(r) for r in rows] == [list(r) for r in expected_rows]
    np.testing.assert_allclose([[float(v) for v in r.values()] for r in rows],
                               [[float(v) for v in r.values()] for r in expected_rows],
                               rtol=1e-5)


@pytest.mark.slow
def test_features_runs_killed_in_stage_1_and_in_scst_then_resumed_end_like_uninterrupted_runs(
        shapes_prepro, tmp_path, capsys):
    """train.py -features (precomputed region features, labels-only data): kill -9 in stage 1's
    second epoch; then self-critical training alone from stage 1's checkpoint (-nepochs 0
    -model_file) killed in the middle of its epoch, after a step checkpoint. Each --resume
    goes on from the last checkpoint (SCST's samples are seeded by the optimizer step, the
    data order by the epoch) and ends with the losses, rewards and weights of a run never
    killed. (The same kills from images: the chain above.)"""
    def stage_1(folder, path):
        return ["-data_folder", str(folder), "-features", path, "-nepochs", "2"] + FEATURE_FLAGS

    def scst(folder, path, start):
        return ["-data_folder", str(folder), "-features", path, "-nepochs", "0",
                "-scst_epochs", "1", "-scst_lr", "0.002", "-scst_sample_n", "2",
                "-model_file", start] + FEATURE_FLAGS

    # runs never killed: stage 1, then SCST alone from its best checkpoint
    first, path = labels_and_features(shapes_prepro, tmp_path / "reference")
    train.main(stage_1(first, path))
    keras.backend.clear_session()
    start = str(first / "models" / "model_best.keras")
    second, _ = labels_and_features(shapes_prepro, tmp_path / "reference_scst")
    train.main(scst(second, path, start))
    keras.backend.clear_session()
    references = {"frozen": first, "scst": second}
    assert list(read_state(second)["stages"]) == ["scst"]
    # the logs: the state's history as a CSV and as TensorBoard scalars (one events file per
    # stage and process), each epoch's training loss apart from its validation loss
    for stage, columns in (("frozen", ["epoch", "loss", "val_loss"]),
                           ("scst", ["epoch", "loss", "reward", "baseline", "length",
                                     "val_loss"])):
        history = read_state(references[stage])["stages"][stage]["history"]
        assert [h["epoch"] for h in history] == ([1, 2] if stage == "frozen" else [1])
        assert all(h["loss"] != h["val_loss"] for h in history)
        rows = csv_log(references[stage], stage)
        assert list(rows[0]) == columns
        np.testing.assert_allclose([[float(r[c]) for c in columns] for r in rows],
                                   [[h[c] for c in columns] for h in history], rtol=1e-6)
        files, scalars = tensorboard_scalars(references[stage], stage)
        assert len(files) == 1 and sorted(scalars) == sorted(columns[1:])
        for column in columns[1:]:
            assert [step for step, _ in scalars[column]] == [h["epoch"] for h in history]
            np.testing.assert_allclose([value for _, value in scalars[column]],
                                       [h[column] for h in history], rtol=1e-6)
    assert all(h["length"] > 0 and h["reward"] >= 0
               for h in read_state(second)["stages"]["scst"]["history"])

    for stage, point, count, arguments in (
            ("frozen", "step", STEPS + 1, stage_1),  # after epoch 2's first step
            ("scst", "step", EVERY + 1, lambda folder, path: scst(folder, path, start))):
        folder, features = labels_and_features(shapes_prepro, tmp_path / stage)
        killed(point, count, "train", arguments(folder, features))
        state = read_state(folder)["stages"][stage]
        assert (state["epochs_done"], state["steps_done"], state["done"]) == (
            (1, 0, False) if stage == "frozen" else (0, EVERY, False))
        capsys.readouterr()
        train.main(arguments(folder, features) + ["--resume"])
        keras.backend.clear_session()
        out = capsys.readouterr().out
        assert ("resuming stage frozen after epoch 1" in out if stage == "frozen" else
                f"resuming epoch 1 after step {EVERY}" in out), out[-2000:]
        assert_resumed_like(folder, references[stage], stage)
        if stage == "scst":
            assert os.path.isfile(folder / "models" / "model_scst_references.json")
