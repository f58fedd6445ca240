"""The run folder names every file of a run; the training state round-trips and refuses what
train.py would not have written."""

import json
import os

import pytest

from imcap.training.run_folder import RunFolder, StageState, TrainingState
from imcap.utils.fileio import DataError


def test_every_file_of_a_run_is_named_in_one_place(tmp_path):
    run = RunFolder(str(tmp_path), "m")
    models = os.path.join(str(tmp_path), "models")
    assert run.best() == os.path.join(models, "m_best.keras")
    assert run.best("finetune") == os.path.join(models, "m_cnntrain_best.keras")
    assert run.best_weights("finetune") == os.path.join(models, "m_cnntrain_best.weights.h5")
    assert run.best_of_epoch("frozen", 3, "CIDEr", 1.23456) == \
        os.path.join(models, "m_epoch03_CIDEr1.2346.keras")
    assert run.last("frozen", 2) == (os.path.join(models, "m_last_epoch02.keras"),
                                     os.path.join(models, "m_last_epoch02_optimizer.h5"))
    assert run.last("finetune", 2, 7)[0] == \
        os.path.join(models, "m_cnntrain_last_epoch02_step00007.keras")
    assert run.state == os.path.join(models, "m_state.json")
    assert run.csv_log("frozen") == os.path.join(models, "m_frozen_log.csv")
    assert run.feature_cache == os.path.join(str(tmp_path), "tmp", "m_features.h5")
    assert run.log_file == os.path.join(str(tmp_path), "logs", "m.log")
    assert run.result("/x/m_best.keras", "test", "beam3") == \
        os.path.join(str(tmp_path), "results", "m_best_test_beam3.json")
    assert run.curves == os.path.join(str(tmp_path), "results", "m_curves.png")
    assert run.data_file("a.h5") == os.path.join(str(tmp_path), "data", "a.h5")


def test_a_worker_writes_elsewhere_but_reads_the_same_data(tmp_path):
    run = RunFolder("runs", "m", output=str(tmp_path / "tmp" / "worker_1"))
    assert run.data_file("a.json") == os.path.join("runs", "data", "a.json")
    assert run.models == str(tmp_path / "tmp" / "worker_1" / "models")
    assert run.output_folders() == [str(tmp_path / "tmp" / "worker_1" / name)
                                    for name in ("models", "results", "tmp", "logs")]


def test_the_state_round_trips_in_train_pys_json(tmp_path):
    state = TrainingState()
    frozen = state.stage("frozen")
    frozen.epochs_done, frozen.best, frozen.last_path = 2, 1.5, "a.keras"
    frozen.history.append({"epoch": 1, "loss": 2.0, "CIDEr": 1.5})
    state.stage("finetune").steps_done = 4
    state.stage("finetune").epoch_loss = [8.0, 16]
    state.stage("finetune").last_path = "b.keras"
    path = str(tmp_path / "state.json")
    state.write(path)
    with open(path) as f:
        stored = json.load(f)
    assert stored["stages"]["frozen"] == {"epochs_done": 2, "steps_done": 0, "best": 1.5,
                                          "wait": 0, "last_path": "a.keras", "done": False,
                                          "history": [{"epoch": 1, "loss": 2.0, "CIDEr": 1.5}]}
    assert stored["stages"]["finetune"]["epoch_loss"] == [8.0, 16]
    assert TrainingState.read(path) == state
    assert state.last_checkpoint() == "b.keras"
    assert TrainingState().last_checkpoint() is None


def test_the_epoch_loss_is_only_kept_with_the_steps_it_belongs_to():
    stage = StageState(epochs_done=1, steps_done=0, epoch_loss=[1.0, 2])
    assert "epoch_loss" not in stage.to_dict()


@pytest.mark.parametrize("content, message", [
    ("{", "is malformed JSON"),
    ("[]", "field 'stages' must be an object"),
    ('{"stages": {"frozen": 3}}', "field 'stages' must be an object"),
    ('{"stages": {"third": {}}}', "unknown stage 'third'"),
    ('{"stages": {"frozen": {"epochs": 1}}}', "unknown field 'epochs' in a stage"),
])
def test_a_bad_state_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        TrainingState.read(str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_an_older_runs_state_still_reads(tmp_path):
    """Runs before the typed state kept the pair being replaced as ``previous_last``."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"stages": {"frozen": {
        "epochs_done": 1, "last_path": "a.keras", "optimizer_path": "a.h5",
        "previous_last": [None, None]}}}))
    assert TrainingState.read(str(path)).stage("frozen").last_path == "a.keras"


def test_the_kept_checkpoint_is_what_the_state_on_disk_names(tmp_path):
    run = RunFolder(str(tmp_path), "m")
    assert run.kept_checkpoint() == "none yet"
    os.makedirs(run.models)
    state = TrainingState()
    state.stage("frozen").last_path = "x.keras"
    state.write(run.state)
    assert run.kept_checkpoint() == "x.keras"
    with pytest.raises(DataError, match="no training state to resume from"):
        RunFolder(str(tmp_path / "other"), "m").read_state()
