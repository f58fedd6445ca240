"""The seed's two training stages, with early stopping on a caption metric and checkpoints.

Stage 1 trains the decoder for ``-nepochs`` epochs with the CNN frozen (BatchNormalization in
inference mode); stage 2 fine-tunes the CNN from ``-finetune_start_layer`` upward for
``-ftnepochs`` epochs at ``-ftlr``, starting from stage 1's best checkpoint, or from
``-model_file``. ``--cnntrain`` runs only the fine-tuning stage (from ``-model_file`` if given).

After every epoch the validation split is scored (``-es_metric`` on greedy captions with
``-es_prev_words gen``, on teacher-forced ones with ``gt``, or the loss) against the ground truth
that prepro_coco.py wrote; the best checkpoint (named with its epoch and score, as the seed did,
plus a ``_best.keras`` alias and ``_best.weights.h5``) and the last one are kept, then the state
(stage, epoch, best score, patience) is written, all atomically.
"""

import logging
import math
import os
import shutil

import keras
import numpy as np

from imcap import args as imcap_args
from imcap.coco_caption.scoring import load_ground_truth, score_captions
from imcap.models.captioner import Captioner
from imcap.models.decoding import GreedyDecoder
from imcap.models.encoder import set_trainable
from imcap.utils import checkpoints
from imcap.utils.coco_gt import gt_path
from imcap.utils.fileio import DataError
from imcap.utils.loader import CaptionData

log = logging.getLogger("imcap.train")
STAGES = ("frozen", "finetune")


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss); the message says what was kept."""


class EarlyStopping:
    """Patience on a metric: ``update`` says whether the value improved and whether to stop."""

    def __init__(self, patience, maximize, best=None, wait=0):
        self.patience, self.maximize, self.best, self.wait = patience, maximize, best, wait

    def update(self, value):
        improved = self.best is None or (value > self.best if self.maximize else value < self.best)
        if improved:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        return improved, self.wait >= self.patience

    def state(self):
        return {"best": self.best, "wait": self.wait}


def make_optimizer(args, learning_rate):
    """The seed's optimizers with value clipping (``-clip``) and Keras 1 decay (``-decay``)."""
    if args.decay > 0:
        learning_rate = keras.optimizers.schedules.InverseTimeDecay(learning_rate, 1, args.decay)
    common = {"learning_rate": learning_rate, "clipvalue": args.clip}
    if args.optim == "adam":
        return keras.optimizers.Adam(beta_1=args.alpha, beta_2=args.beta, **common)
    return {"SGD": keras.optimizers.SGD, "adadelta": keras.optimizers.Adadelta,
            "adagrad": keras.optimizers.Adagrad,
            "rmsprop": keras.optimizers.RMSprop}[args.optim](**common)


class Trainer:
    """Runs the stages for parsed ``args`` (see ``imcap.args``)."""

    def __init__(self, args):
        self.args = args
        folder = args.data_folder
        self.paths = {name: os.path.join(folder, name)
                      for name in ("data", "models", "results", "tmp", "logs")}
        for path in self.paths.values():
            os.makedirs(path, exist_ok=True)
        self.json_path = os.path.join(self.paths["data"], args.json_file)
        self.h5_path = os.path.join(self.paths["data"], args.h5file)
        self.train_data = CaptionData(self.h5_path, self.json_path, "train")
        self.val_data = CaptionData(self.h5_path, self.json_path, "val")
        self.ground_truth = load_ground_truth(gt_path(self.json_path, "val"))
        self.state_path = self.model_path("state.json")

    def model_path(self, suffix, stage=None):
        prefix = self.args.model_name + ("_cnntrain" if stage == "finetune" else "")
        return os.path.join(self.paths["models"], f"{prefix}_{suffix}")

    # --- models ----------------------------------------------------------------------------

    def new_model(self):
        config = imcap_args.model_config(self.args, self.train_data.vocabulary)
        model = Captioner(config)
        imcap_args.check_encoder_shape(self.args, model.config.num_regions,
                                       model.config.feature_dim)
        return model

    def prepare(self, model, stage):
        """Freezes or unfreezes the CNN for ``stage`` and compiles with a fresh optimizer."""
        finetune = stage == "finetune"
        set_trainable(model.encoder, self.args.finetune_start_layer if finetune else None)
        model.compile(optimizer=make_optimizer(self.args, self.args.ftlr if finetune
                                               else self.args.lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    # --- validation -----------------------------------------------------------------------

    def validate(self, model):
        """The early-stopping value of ``model`` on the validation split."""
        args = self.args
        if args.es_metric == "loss":
            data = self.val_data.dataset(args.bs, args.cnn, training=False)
            return float(model.evaluate(data.map(lambda x, y, w, ids: (x, y, w)), verbose=0))
        captions = self.val_captions(model)
        overall, _ = score_captions(self.ground_truth, captions, [args.es_metric])
        return overall[args.es_metric]

    def val_captions(self, model):
        """``{image_id: caption}`` for the validation split (greedy, or teacher-forced)."""
        if getattr(self, "_decoder", None) is None or self._decoder.model is not model:
            self._decoder = GreedyDecoder(model, self.args.seqlen)
        decoder = self._decoder
        captions = {}
        for x, _, _, ids in self.val_data.dataset(self.args.bs, self.args.cnn, training=False):
            if self.args.es_prev_words == "gen":
                words = decoder(x["images"])
            else:
                words = np.argmax(model(x, training=False)[:, 0], axis=-1)
            for image_id, caption in zip(ids.numpy(), decoder.to_captions(words)):
                captions[int(image_id)] = caption
        return captions

    # --- the stages -----------------------------------------------------------------------

    def run(self):
        """Trains every stage asked for; returns the final training state."""
        args = self.args
        stages = ["finetune"] if args.cnn_train else ["frozen"] + (["finetune"]
                                                                    if args.ftnepochs else [])
        state = checkpoints.read_state(self.state_path) if args.resume else {"stages": {}}
        for stage in stages:
            stage_state = state["stages"].get(stage, {})
            if stage_state.get("done"):
                log.info("stage %s already done (best %s)", stage, stage_state.get("best_path"))
                continue
            model = self.stage_model(stage, stage_state, state)
            self.train_stage(model, stage, stage_state, state)
        return state

    def stage_model(self, stage, stage_state, state):
        """The model a stage starts (or resumes) from."""
        if stage_state.get("epochs_done"):
            log.info("resuming stage %s after epoch %d", stage, stage_state["epochs_done"])
            model = self.prepare(checkpoints.load_model(stage_state["last_path"], compile=False),
                                 stage)
            checkpoints.restore_optimizer(model.optimizer, model.trainable_variables,
                                          stage_state["optimizer_path"])
            return model
        if stage == "finetune":
            start = self.args.model_file or state["stages"].get("frozen", {}).get("best_path")
            if start:
                log.info("fine-tuning from %s", start)
                return self.prepare(checkpoints.load_model(start, compile=False), stage)
        if self.args.model_file and stage == "frozen":
            return self.prepare(checkpoints.load_model(self.args.model_file, compile=False), stage)
        return self.prepare(self.new_model(), stage)

    def train_stage(self, model, stage, stage_state, state):
        args = self.args
        epochs = args.ftnepochs if stage == "finetune" else args.nepochs
        maximize = args.es_metric != "loss"
        stopper = EarlyStopping(args.pat, maximize, stage_state.get("best"),
                                stage_state.get("wait", 0))
        csv = keras.callbacks.CSVLogger(self.model_path(f"{stage}_log.csv"), append=True)
        for epoch in range(stage_state.get("epochs_done", 0), epochs):
            data = self.train_data.dataset(args.bs, args.cnn, training=True,
                                           seq_per_img=args.seq_per_img, seed=args.seed,
                                           epoch=epoch)
            history = model.fit(data, initial_epoch=epoch, epochs=epoch + 1, verbose=2,
                                shuffle=False,  # the loader shuffles, seeded by epoch
                                callbacks=[keras.callbacks.TerminateOnNaN(), csv])
            loss = history.history["loss"][-1]
            if not math.isfinite(loss):
                kept = stage_state.get("last_path", "none yet")
                raise TrainingError(f"the loss became {loss} in stage {stage}, epoch {epoch + 1}; "
                                    f"stopped, the last good checkpoint is {kept}")
            value = self.validate(model)
            improved, stop = stopper.update(value)
            log.info("stage %s epoch %d: loss %.4f, val %s %.4f%s", stage, epoch + 1, loss,
                     args.es_metric, value, " (best)" if improved else "")
            self.save(model, stage, epoch, value, improved, stage_state)
            stage_state.update(stopper.state(), epochs_done=epoch + 1,
                               history=stage_state.get("history", []) + [
                                   {"epoch": epoch + 1, "loss": loss, args.es_metric: value}])
            state["stages"][stage] = stage_state
            checkpoints.write_state(self.state_path, state)
            self.remove_previous_last(stage_state)
            if stop:
                log.info("early stopping: no improvement for %d epochs", args.pat)
                break
        stage_state["done"] = True
        checkpoints.write_state(self.state_path, state)

    def save(self, model, stage, epoch, value, improved, stage_state):
        """Writes this epoch's checkpoints. The last checkpoint and optimizer state are named by
        epoch and only the state file, written after them, says which is current: a crash at
        any point leaves the state pointing at a complete, matching pair."""
        last = self.model_path(f"last_epoch{epoch + 1:02d}.keras", stage)
        optimizer_path = self.model_path(f"last_epoch{epoch + 1:02d}_optimizer.npz", stage)
        checkpoints.save_model(model, last)
        checkpoints.save_optimizer(model.optimizer, optimizer_path)
        stage_state["previous_last"] = [stage_state.get("last_path"),
                                        stage_state.get("optimizer_path")]
        stage_state.update(last_path=last, optimizer_path=optimizer_path)
        if not improved:
            return
        metric = self.args.es_metric
        best = self.model_path(f"epoch{epoch + 1:02d}_{metric}{value:.4f}.keras", stage)
        shutil.copyfile(last, best + ".partial")
        os.replace(best + ".partial", best)
        alias = self.model_path("best.keras", stage)
        shutil.copyfile(best, alias + ".partial")
        os.replace(alias + ".partial", alias)
        checkpoints.save_weights(model, self.model_path("best.weights.h5", stage))
        previous = stage_state.get("best_epoch_path")
        if previous and previous != best and os.path.exists(previous):
            os.remove(previous)
        stage_state.update(best_path=alias, best_epoch_path=best)


    @staticmethod
    def remove_previous_last(stage_state):
        """Deletes the previous epoch's last checkpoint once the state points past it."""
        for path in stage_state.pop("previous_last", []):
            if path and path not in (stage_state["last_path"], stage_state["optimizer_path"]) \
                    and os.path.exists(path):
                os.remove(path)


def check_inputs(args):
    """Fails early, with the file named, when the preprocessed data is missing."""
    for name in (args.json_file, args.h5file):
        path = os.path.join(args.data_folder, "data", name)
        if not os.path.isfile(path):
            raise DataError(f"preprocessed data not found: {path} (run prepro_coco.py with "
                            f"--output_json/--output_h5 there, or set -data_folder)")
