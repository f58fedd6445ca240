"""The checkpoint store and the epoch's callbacks, each on its own (no trainer)."""

import os

import keras
import numpy as np
import pytest

from imcap.training.callbacks import EarlyStopping, EpochMeans, StepCheckpoint
from imcap.training.run_folder import RunFolder, TrainingState
from imcap.training.store import CheckpointStore, TrainingError
from imcap.utils.fileio import DataError
from imcap.models import saving


@pytest.fixture
def tiny():
    """A compiled two-weight model that has taken one step (its optimizer has state)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.train_on_batch(np.ones((4, 3)), np.zeros((4, 2)))
    return model


@pytest.fixture
def store(tmp_path):
    run = RunFolder(str(tmp_path), "m")
    os.makedirs(run.models)
    return CheckpointStore(run)


def files(store):
    return sorted(os.listdir(store.run.models))


def test_the_state_is_written_after_its_pair_and_before_the_old_pair_goes(store, tiny,
                                                                          monkeypatch):
    seen = []
    real = saving.write_state

    def write_state(path, state):
        seen.append(files(store))
        real(path, state)
    monkeypatch.setattr(saving, "write_state", write_state)
    store.save_last(tiny, tiny.optimizer, "frozen", 1, 5, steps_done=5, epoch_loss=[1.0, 4])
    store.save_last(tiny, tiny.optimizer, "frozen", 1, 10, steps_done=10, epoch_loss=[2.0, 8])
    step5 = ["m_last_epoch01_step00005.keras", "m_last_epoch01_step00005_optimizer.h5"]
    step10 = ["m_last_epoch01_step00010.keras", "m_last_epoch01_step00010_optimizer.h5"]
    assert seen[0] == sorted(step5)
    assert seen[1] == sorted(step5 + step10 + ["m_state.json"])  # both pairs while writing
    assert files(store) == sorted(step10 + ["m_state.json"])
    stored = store.run.read_state().stage("frozen")
    assert (stored.steps_done, stored.epoch_loss) == (10, [2.0, 8])
    assert stored.last_path.endswith(step10[0]) and stored.optimizer_path.endswith(step10[1])


def test_an_improved_epoch_links_the_best_files_to_the_last_checkpoint(store, tiny):
    store.save_epoch(tiny, tiny.optimizer, "frozen", 1, "CIDEr", 0.5, True, best=0.5,
                     epochs_done=1)
    store.save_epoch(tiny, tiny.optimizer, "frozen", 2, "CIDEr", 0.4, False, epochs_done=2)
    store.save_epoch(tiny, tiny.optimizer, "finetune", 1, "CIDEr", 0.7, True, best=0.7)
    assert files(store) == sorted([
        "m_epoch01_CIDEr0.5000.keras", "m_best.keras", "m_last_epoch02.keras",
        "m_last_epoch02_optimizer.h5", "m_cnntrain_epoch01_CIDEr0.7000.keras",
        "m_cnntrain_best.keras", "m_cnntrain_last_epoch01.keras",
        "m_cnntrain_last_epoch01_optimizer.h5", "m_state.json"])
    models = store.run.models
    assert os.path.samefile(os.path.join(models, "m_best.keras"),
                            os.path.join(models, "m_epoch01_CIDEr0.5000.keras"))
    state = store.run.read_state()
    assert state.stage("frozen").best_path == store.run.best("frozen")
    assert (state.stage("frozen").epochs_done, state.stage("frozen").best) == (2, 0.5)
    # a better epoch replaces the epoch-named best file
    store.save_epoch(tiny, tiny.optimizer, "frozen", 3, "CIDEr", 0.9, True)
    assert "m_epoch01_CIDEr0.5000.keras" not in files(store)
    assert os.path.samefile(os.path.join(models, "m_best.keras"),
                            os.path.join(models, "m_last_epoch03.keras"))
    store.save_best_weights("frozen")
    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    restored.load_weights(store.run.best_weights("frozen"))
    for a, b in zip(restored.get_weights(), tiny.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_failed_write_names_the_file_and_the_checkpoint_kept(store, tiny, monkeypatch):
    store.save_last(tiny, tiny.optimizer, "frozen", 1)

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(saving, "save_optimizer", full_disk)
    with pytest.raises(TrainingError, match=r"cannot write .*m_last_epoch02_optimizer.h5: No "
                                            r"space left on device; the last complete "
                                            r"checkpoint is .*m_last_epoch01.keras"):
        store.save_last(tiny, tiny.optimizer, "frozen", 2)
    assert store.run.read_state().stage("frozen").last_path.endswith("m_last_epoch01.keras")


def test_early_stopping_counts_epochs_without_improvement():
    stopper = EarlyStopping(2, maximize=True)
    assert [stopper.update(v) for v in (1.0, 0.5, 2.0, 2.0, 1.0)] == [
        (True, False), (False, False), (True, False), (False, False), (False, True)]
    resumed = EarlyStopping(2, maximize=False, best=1.0, wait=1)
    assert resumed.update(1.5) == (False, True)


def test_the_epoch_means_across_a_resume_equal_the_uninterrupted_means():
    """10 images, batches of 4 (4, 4, 2): losses 1, 2, 4 and rewards 3, 0, 1 per image;
    killed after step 1."""
    uninterrupted = {"loss": (4 * 1 + 4 * 2 + 2 * 4) / 10, "reward": (4 * 3 + 0 + 2 * 1) / 10}
    before = EpochMeans(10, 4, 0)
    saved = before.through(1, {"loss": 1.0, "reward": 3.0})
    assert saved == [4.0, 4, {"reward": 12.0}]
    after = EpochMeans(10, 4, 1, saved)
    assert after.images_left() == 6
    means = after.epoch_means({"loss": (4 * 2 + 2 * 4) / 6, "reward": (0 + 2 * 1) / 6})
    assert means == pytest.approx(uninterrupted)
    done = EpochMeans(10, 4, 3, [20.0, 10, {"reward": 14.0}])  # killed after the last step
    assert done.images_left() == 0  # was saved
    assert done.epoch_means({}) == pytest.approx({"loss": 2.0, "reward": 1.4})
    assert EpochMeans(10, 4, 0, [5.0, 4]).sum == 0.0  # a stored sum without steps is stale
    older = EpochMeans(10, 4, 1, [4.0, 4])  # a state that kept the loss's sum only
    assert older.epoch_means({"loss": 16 / 6, "reward": 0.5}) == pytest.approx(
        {"loss": uninterrupted["loss"], "reward": 0.5})


def test_the_step_checkpoint_saves_every_n_steps_and_never_a_diverged_model(store, tiny):
    loss = EpochMeans(40, 4, 2, [8.0, 8])
    callback = StepCheckpoint(store, tiny, tiny.optimizer, "frozen", 3, loss, every=2)
    callback.on_train_batch_end(0, {"loss": 1.0})  # step 3
    assert not os.listdir(store.run.models)
    callback.on_train_batch_end(1, {"loss": 1.5})  # step 4
    state = store.run.read_state().stage("frozen")
    assert state.steps_done == 4 and state.epoch_loss == [8.0 + 1.5 * 8, 16]
    assert state.last_path.endswith("m_last_epoch03_step00004.keras")
    callback.on_train_batch_end(3, {"loss": float("nan")})  # step 6: not saved
    assert callback.bad_step == 6 and store.run.read_state().stage("frozen").steps_done == 4
    StepCheckpoint(store, tiny, tiny.optimizer, "frozen", 3, loss, every=0).on_train_batch_end(
        5, {"loss": 1.0})
    assert store.run.read_state().stage("frozen").steps_done == 4  # every=0: epochs only
    assert isinstance(store.state, TrainingState)


def test_the_optimizer_state_and_the_random_generators_round_trip(tmp_path, tiny):
    """What --resume restores: the optimizer's moments and iteration count, and the states of
    the model's random generators (Keras keeps neither in a .keras)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.Dropout(0.5, seed=1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=2, verbose=0)
    path = str(tmp_path / "opt.h5")
    saving.save_optimizer(model.optimizer, path, model)
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.Dropout(0.5, seed=2)])
    fresh.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    saving.restore_optimizer(fresh.optimizer, fresh.trainable_variables, path, fresh)
    for a, b in zip(fresh.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(fresh.optimizer.iterations) == 2
    generators = [v for v in fresh.variables if v.path.endswith("seed_generator_state")]
    assert generators and all(
        np.array_equal(a, b) for a, b in zip(
            generators, [v for v in model.variables if v.path.endswith("seed_generator_state")]))
    # another run's file is refused, naming it
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(2)])
    other.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    with pytest.raises(DataError, match=r"opt.h5 holds 6 variables, the model needs 10: it "
                                        r"belongs to another run"):
        saving.restore_optimizer(other.optimizer, other.trainable_variables, path)
    with pytest.raises(DataError, match="holds 1 random generator states, the model has 0"):
        saving.restore_optimizer(tiny.optimizer, tiny.trainable_variables, path, tiny)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="optimizer state .*broken.h5 cannot be read"):
        saving.restore_optimizer(tiny.optimizer, tiny.trainable_variables,
                                 str(tmp_path / "broken.h5"))
