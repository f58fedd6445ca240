"""A stage's epochs as a CSV file and as TensorBoard scalars, both from the training state.

Each epoch's record (``StageState.history``: the epoch, its mean training loss, the validation
metric and, in self-critical training, the mean reward, baseline and sampled length) is what
``--resume`` knows, so the CSV is rewritten whole from it after every epoch: it never holds a
half row, a row of an epoch that a kill undid, or a resumed epoch's partial mean. TensorBoard
gets the same numbers, one writer per stage and process (one events file, not one per epoch).
"""

import csv

import tensorflow as tf

from imcap.training.run_folder import SAMPLED, validation_value
from imcap.utils.fileio import atomic_output


def columns(history, metric):
    """The CSV's columns for ``history``: epoch, loss, SCST's if any, ``val_METRIC``."""
    sampled = [name for name in SAMPLED if any(name in record for record in history)]
    return ["epoch", "loss", *sampled, f"val_{metric}"]


class EpochLog:
    """Writes a stage's history to ``csv_path`` and its newest epoch to the TensorBoard folder
    ``tensorboard_dir`` (scalars named as the CSV's columns, step = epoch)."""

    def __init__(self, csv_path, tensorboard_dir, metric):
        self.csv_path, self.tensorboard_dir, self.metric = csv_path, tensorboard_dir, metric
        self.writer = None

    def write(self, history):
        names = columns(history, self.metric)
        with atomic_output(self.csv_path, ".csv", check=False) as temporary:
            with open(temporary, "w", newline="", encoding="utf-8") as f:
                rows = csv.DictWriter(f, names, extrasaction="ignore")
                rows.writeheader()
                rows.writerows({**record, names[-1]: validation_value(record, self.metric)}
                               for record in history)
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.tensorboard_dir)
        record = history[-1]
        with self.writer.as_default():
            for name in names[1:]:
                if name in record:
                    tf.summary.scalar(name, record[name], step=record["epoch"])
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):  # also when the stage stops with an error (NaN, kill)
        self.close()
