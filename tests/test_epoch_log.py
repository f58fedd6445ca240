"""EpochLog: the CSV equals the history, and the TensorBoard writer is closed however the stage
ends (train.py's stage runs inside ``with EpochLog(...)``)."""

import csv

import pytest
import tensorflow as tf

from imcap.training.epoch_log import EpochLog
from tests.conftest import events_scalars


def test_a_stage_that_fails_still_closes_its_writer_and_keeps_what_it_wrote(tmp_path):
    history = [{"epoch": 1, "loss": 1.5, "val_CIDEr": 0.25},
               {"epoch": 2, "loss": 0.75, "val_CIDEr": 0.5}]
    board = tmp_path / "board"
    with pytest.raises(RuntimeError, match="the loss became nan"):
        with EpochLog(str(tmp_path / "log.csv"), str(board), "CIDEr") as epoch_log:
            epoch_log.write(history[:1])
            epoch_log.write(history)
            writer = epoch_log.writer
            raise RuntimeError("the loss became nan")
    assert epoch_log.writer is None
    with pytest.raises(RuntimeError, match="already closed"):
        with writer.as_default():
            tf.summary.scalar("after", 1.0, step=3)
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [{k: float(v) for k, v in row.items()} for row in rows] == history
    files, scalars = events_scalars(board)
    assert len(files) == 1
    assert scalars == {"loss": [(1, 1.5), (2, 0.75)], "val_CIDEr": [(1, 0.25), (2, 0.5)]}
