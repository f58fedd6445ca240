"""Checkpoints and the training state, saved in the one order that survives a crash.

Every save writes the checkpoint and its optimizer state first, then the state file that
names them, and only then removes the pair it replaced: killed at any point, the state on disk
points at a complete, matching pair, from which ``--resume`` goes on.
"""

import contextlib
import logging
import os

import numpy as np

from imcap.training.run_folder import TrainingState
from imcap.models import saving
from imcap.utils import fileio
from imcap.utils.fileio import link_atomically

log = logging.getLogger("imcap.train")


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a full disk); the message says what was kept."""


class CheckpointStore:
    """The run's checkpoints and its ``TrainingState`` (``state``), in ``run`` (a
    ``RunFolder``)."""

    def __init__(self, run, state=None):
        self.run = run
        self.state = state if state is not None else TrainingState()

    def save_last(self, model, optimizer, stage, epoch, step=None, **updates):
        """Saves ``model`` and ``optimizer`` as the last checkpoint of ``stage`` after
        ``epoch`` (1-based), or after ``step`` of it; then the state, with ``updates`` to the
        stage's fields."""
        paths = self._write_pair(model, optimizer, stage, epoch, step)
        self._commit(stage, paths, updates)

    def save_epoch(self, model, optimizer, stage, epoch, metric, value, improved, **updates):
        """The checkpoints of a finished ``epoch`` (1-based): the last one and, if
        ``improved``, the best one (named by epoch and ``metric`` ``value``, as imcap_keras did,
        and the ``_best.keras`` alias: links to the last one); then the state, with
        ``updates``."""
        paths = self._write_pair(model, optimizer, stage, epoch)
        previous_best = self.state.stage(stage).best_epoch_path
        if improved:
            best, alias = self.run.best_of_epoch(stage, epoch, metric, value), self.run.best(stage)
            with self.writing(best):
                link_atomically(paths[0], best)
                link_atomically(best, alias)
            updates = dict(updates, best_path=alias, best_epoch_path=best)
        self._commit(stage, paths, updates)
        if improved and previous_best and previous_best != best \
                and os.path.exists(previous_best):
            os.remove(previous_best)

    def _write_pair(self, model, optimizer, stage, epoch, step=None):
        last, optimizer_path = self.run.last(stage, epoch, step)
        with self.writing(last):
            saving.save_model(model, last)
        with self.writing(optimizer_path):
            saving.save_optimizer(optimizer, optimizer_path, model)
        return last, optimizer_path

    def _commit(self, stage, paths, updates):
        """The state names the new pair (and ``updates``); then the pair it replaced goes."""
        stage_state = self.state.stage(stage)
        previous = (stage_state.last_path, stage_state.optimizer_path)
        for name, value in dict(updates, last_path=paths[0], optimizer_path=paths[1]).items():
            setattr(stage_state, name, value)
        self.write_state()
        for path in previous:
            if path and path not in paths and os.path.exists(path):
                os.remove(path)

    def save_best_weights(self, stage):
        """``MODEL_best.weights.h5``: the best checkpoint's weights only, written once when the
        stage ends rather than at every improvement."""
        best = self.state.stage(stage).best_path
        if best:
            path = self.run.best_weights(stage)
            with self.writing(path):
                saving.save_weights(saving.load_model(best, compile=False), path)

    def write_state(self):
        with self.writing(self.run.state):
            saving.write_state(self.run.state, self.state.to_dict())

    @contextlib.contextmanager
    def writing(self, path):
        """A failed write (a full disk) becomes a ``TrainingError`` naming ``path`` and the
        checkpoint ``--resume`` goes on from (the one the state file names)."""
        try:
            yield
        except OSError as e:
            raise TrainingError(f"cannot write {path}: {e.strerror or e}; the last complete "
                                f"checkpoint is {self.run.kept_checkpoint()}: make room, then "
                                f"run again with --resume") from None


def remove_partial_files(folder):
    """Removes what a killed run left half-written (``*.partial*``): nothing reads them."""
    for name in os.listdir(folder):
        if ".partial" in name:
            log.info("removing %s, left half-written by an interrupted run", name)
            os.remove(os.path.join(folder, name))


def check_checkpoint_space(folder, model, fit_model):
    """Fails before training when ``folder`` cannot hold two checkpoints (the last one and the
    one being written) with their optimizer state."""
    weights = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    moments = sum(int(np.prod(w.shape)) * 4 for w in fit_model.trainable_weights) * 2
    need = 2 * (weights + moments) + weights  # + best.weights.h5 at the end of the stage
    fileio.check_space(os.path.join(folder, "checkpoint"), need, "training (its checkpoints)")
