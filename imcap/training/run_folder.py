"""A training run's files and its state, named and read in one place.

A run lives in a folder (train.py's ``-data_folder``)::

    data/{JSON, H5}                        prepro_coco.py's output (read, never written)
    models/MODEL[S]_best.keras             the best checkpoint of a stage, where S is nothing
                                           (stage 1), _cnntrain (stage 2) or _scst (SCST)
    models/MODEL[S]_epochNN_CIDEr5.1234.keras   the same file, named as imcap_keras did
    models/MODEL[S]_best.weights.h5        its weights, written when the stage ends
    models/MODEL[S]_last_TAG.keras         the last checkpoint (TAG: epochNN[_stepNNNNN])
    models/MODEL[S]_last_TAG_optimizer.h5  its optimizer and random-generator state
    models/MODEL_state.json                the training state (``TrainingState``)
    models/MODEL_STAGE_log.csv             one row per epoch, from the state (``EpochLog``)
    models/MODEL_scst_references.json      SCST's training references and their document
                                           frequencies (CIDEr-D), computed once
    logs/MODEL.log, logs/tensorboard/MODEL_STAGE/
    results/                               test.py's COCO result JSON, plot_curves.py's figure
    tmp/MODEL_features.h5                  the feature cache of stage 1 (--precompute_feats)

The state file is the run's only source of truth for ``--resume``: it is written after the
files it names, so it always points at a complete checkpoint.
"""

import dataclasses
import json
import os

from imcap.utils.fileio import DataError, write_json_atomic

STAGES = ("frozen", "finetune", "scst")
SUFFIXES = {"frozen": "", "finetune": "_cnntrain", "scst": "_scst"}  # of each stage's files
SAMPLED = ("reward", "baseline", "length")  # what an SCST epoch's record adds (its means)


def validation_value(record, metric):
    """An epoch record's (``StageState.history``) validation ``metric``: ``val_METRIC``, or
    ``METRIC`` in a state written before 2026-12-06."""
    return record.get(f"val_{metric}", record.get(metric))


@dataclasses.dataclass
class StageState:
    """Where one stage stands.

    Attributes:
        epochs_done: complete epochs (validated and checkpointed).
        steps_done: steps of the next epoch saved by a step checkpoint (0: none).
        epoch_loss: ``[loss sum, images, {name: sum}]`` of those steps, for the epoch's mean
            loss (and SCST's reward, baseline and length): ``callbacks.EpochMeans``.
        best, wait: the early-stopping metric's best value and the epochs since it improved.
        last_path, optimizer_path: the last checkpoint and its optimizer state.
        best_path: the ``_best.keras`` alias; best_epoch_path: the same file by epoch and score.
        history: one ``{"epoch", "loss", "val_METRIC"}`` per epoch (the mean training loss and
            the validation metric; self-critical training adds ``reward``, ``baseline`` and
            ``length``). States written before 2026-12-06 hold ``METRIC`` instead of
            ``val_METRIC``, and with ``-es_metric loss`` their ``loss`` is the validation loss.
        done: the stage finished (early stopping or its last epoch).
    """

    epochs_done: int = 0
    steps_done: int = 0
    epoch_loss: list | None = None
    best: float | None = None
    wait: int = 0
    last_path: str | None = None
    optimizer_path: str | None = None
    best_path: str | None = None
    best_epoch_path: str | None = None
    history: list = dataclasses.field(default_factory=list)
    done: bool = False

    @classmethod
    def from_dict(cls, values, path):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - {"previous_last"})  # an older run's field
        if unknown:
            raise DataError(f"training state {path}: unknown field {unknown[0]!r} in a stage "
                            f"(expected {', '.join(sorted(known))})")
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and not (k == "epoch_loss" and not self.steps_done)}


@dataclasses.dataclass
class TrainingState:
    """The stages of a run, in the order they ran: ``{stage name: StageState}``."""

    stages: dict = dataclasses.field(default_factory=dict)

    def stage(self, name):
        """The state of stage ``name`` (created, empty, when it has not started)."""
        return self.stages.setdefault(name, StageState())

    def last_checkpoint(self):
        """The last checkpoint any stage saved (what ``--resume`` goes on from), or None."""
        kept = [s.last_path for s in self.stages.values() if s.last_path]
        return kept[-1] if kept else None

    @classmethod
    def read(cls, path):
        try:
            with open(path) as f:
                values = json.load(f)
        except FileNotFoundError:
            raise DataError(f"no training state to resume from: {path} (run without --resume "
                            f"first)") from None
        except json.JSONDecodeError as e:
            raise DataError(f"training state {path} is malformed JSON: {e.msg}") from None
        stages = values.get("stages") if isinstance(values, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(s, dict) for s in stages.values()):
            raise DataError(f"training state {path}: field 'stages' must be an object of "
                            f"stages, as train.py writes it")
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise DataError(f"training state {path}: unknown stage {unknown[0]!r} (expected "
                            f"{' or '.join(STAGES)})")
        return cls({name: StageState.from_dict(s, path) for name, s in stages.items()})

    def write(self, path):
        """Atomically: a crash leaves the previous state or this one, never a mix."""
        write_json_atomic(path, self.to_dict())

    def to_dict(self):
        return {"stages": {name: s.to_dict() for name, s in self.stages.items()}}


class RunFolder:
    """Names every file of a run in ``folder`` for the model ``model_name``.

    ``output`` is where the run writes (``folder`` unless a multi-worker run's non-chief
    worker writes elsewhere); the data are always read from ``folder/data``.
    """

    def __init__(self, folder, model_name, output=None):
        self.folder, self.model_name = folder, model_name
        self.output = output or folder
        self.data = os.path.join(folder, "data")
        self.models = os.path.join(self.output, "models")
        self.results = os.path.join(self.output, "results")
        self.tmp = os.path.join(self.output, "tmp")
        self.logs = os.path.join(self.output, "logs")

    def output_folders(self):
        return [self.models, self.results, self.tmp, self.logs]

    def data_file(self, name):
        return os.path.join(self.data, name)

    def _model(self, suffix, stage=None):
        prefix = self.model_name + SUFFIXES.get(stage, "")
        return os.path.join(self.models, f"{prefix}_{suffix}")

    def best(self, stage="frozen"):
        """``MODEL_best.keras``, ``MODEL_cnntrain_best.keras`` for stage 2,
        ``MODEL_scst_best.keras`` for self-critical training."""
        return self._model("best.keras", stage)

    def best_weights(self, stage="frozen"):
        return self._model("best.weights.h5", stage)

    def best_of_epoch(self, stage, epoch, metric, value):
        """The best checkpoint named by its epoch (1-based) and score, as imcap_keras named it."""
        return self._model(f"epoch{epoch:02d}_{metric}{value:.4f}.keras", stage)

    def last(self, stage, epoch, step=None):
        """The last checkpoint and its optimizer state after ``epoch`` (1-based), or after
        ``step`` of it: ``(model path, optimizer path)``."""
        tag = f"epoch{epoch:02d}" + ("" if step is None else f"_step{step:05d}")
        return self._model(f"last_{tag}.keras", stage), \
            self._model(f"last_{tag}_optimizer.h5", stage)

    @property
    def state(self):
        return os.path.join(self.models, f"{self.model_name}_state.json")

    def csv_log(self, stage):
        return os.path.join(self.models, f"{self.model_name}_{stage}_log.csv")

    def tensorboard(self, stage):
        return os.path.join(self.logs, "tensorboard", f"{self.model_name}_{stage}")

    @property
    def scst_references(self):
        return os.path.join(self.models, f"{self.model_name}_scst_references.json")

    @property
    def log_file(self):
        return os.path.join(self.logs, f"{self.model_name}.log")

    @property
    def feature_cache(self):
        return os.path.join(self.tmp, f"{self.model_name}_features.h5")

    def result(self, checkpoint, split, method):
        """test.py's result JSON for ``checkpoint`` on ``split`` with ``method``."""
        stem = os.path.splitext(os.path.basename(checkpoint))[0]
        return os.path.join(self.results, f"{stem}_{split}_{method}.json")

    @property
    def curves(self):
        return os.path.join(self.results, f"{self.model_name}_curves.png")

    def read_state(self):
        return TrainingState.read(self.state)

    def kept_checkpoint(self):
        """The last checkpoint the state file on disk names, in words ("none yet")."""
        try:
            return self.read_state().last_checkpoint() or "none yet"
        except DataError:
            return "none yet"
