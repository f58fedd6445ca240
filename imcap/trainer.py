"""The seed's two training stages, with early stopping on a caption metric and checkpoints.

Stage 1 trains the decoder for ``-nepochs`` epochs with the CNN frozen (BatchNormalization in
inference mode); stage 2 fine-tunes the CNN from ``-finetune_start_layer`` upward for
``-ftnepochs`` epochs at ``-ftlr``, starting from stage 1's best checkpoint, or from
``-model_file``. ``--cnntrain`` runs only the fine-tuning stage (from ``-model_file`` if given).

After every epoch the validation split is scored (``-es_metric`` on greedy captions with
``-es_prev_words gen``, on teacher-forced ones with ``gt``, or the loss) against the ground truth
that prepro_coco.py wrote; the best checkpoint (named with its epoch and score, as the seed did,
plus a ``_best.keras`` alias; ``_best.weights.h5`` when the stage ends) and the last one are
kept, then the state (stage, epoch, best score, patience) is written, all atomically.

Before a stage trains, its output folders must be writable and hold room for two checkpoints
with their optimizer state; a write that fails later (a full disk) stops the run with one line
naming the file and the last complete checkpoint, from which ``--resume`` goes on.
"""

import contextlib
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from imcap import args as imcap_args
from imcap import distribute, optimizers
from imcap.coco_caption.scoring import load_ground_truth, score_captions
from imcap.models.captioner import Captioner
from imcap.models.decoding import GreedyDecoder
from imcap.models.encoder import set_trainable
from imcap.models.feature_standardization import feature_statistics
from imcap.utils import checkpoints, features, fileio
from imcap.utils.coco_gt import gt_path
from imcap.utils.fileio import DataError, check_writable
from imcap.utils.loader import CaptionData

log = logging.getLogger("imcap.train")
STAGES = ("frozen", "finetune")


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a full disk); the message says what was kept."""


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


def make_optimizer(args, learning_rate, cnn_variables=()):
    """The seed's optimizer (``-optim``) with value clipping (``-clip``), Keras 1 decay
    (``-decay``) and ``-accum``; with ``--lrmults``, ``cnn_variables`` learn at ``-lrmult_conv``
    times the learning rate."""
    multiplier = args.lrmult_conv if args.lrmults and cnn_variables else None
    return optimizers.make_optimizer(args.optim, learning_rate, args.alpha, args.beta, args.clip,
                                     args.decay, args.accum, multiplier, cnn_variables)


class Trainer:
    """Runs the stages for parsed ``args`` (see ``imcap.args``)."""

    def __init__(self, args, strategy=None):
        self.args = args
        self.strategy = strategy or tf.distribute.get_strategy()
        folder = output_folder(args, self.strategy)
        self.paths = {name: os.path.join(folder, name)
                      for name in ("models", "results", "tmp", "logs")}
        self.paths["data"] = os.path.join(args.data_folder, "data")
        for name, path in self.paths.items():
            os.makedirs(path, exist_ok=True)
            if name != "data":
                check_writable(path)
        remove_partial_files(self.paths["models"])
        self.json_path = os.path.join(self.paths["data"], args.json_file)
        self.h5_path = os.path.join(self.paths["data"], args.h5file)
        self.train_data = CaptionData(self.h5_path, self.json_path, "train")
        self.val_data = CaptionData(self.h5_path, self.json_path, "val")
        self.ground_truth = load_ground_truth(gt_path(self.json_path, "val"))
        self.state_path = self.model_path("state.json")
        self.cache_path = os.path.join(self.paths["tmp"], f"{args.model_name}_features.h5")
        self._decoder = None
        self.position = None  # (stage, epoch, its EpochProgress) while a stage trains

    def model_path(self, suffix, stage=None):
        prefix = self.args.model_name + ("_cnntrain" if stage == "finetune" else "")
        return os.path.join(self.paths["models"], f"{prefix}_{suffix}")

    # --- models ----------------------------------------------------------------------------

    def new_model(self):
        """A fresh captioner; with -standardize, its statistics come from the training split's
        cached features (the same encoder weights are kept). ``-imsize`` must be the data's
        (a checkpoint's own size is checked by ``checkpoints.check_data_matches``)."""
        if self.args.imsize != self.train_data.image_size:
            raise DataError(f"-imsize is {self.args.imsize} but {self.h5_path} holds "
                            f"{self.train_data.image_size} px images; pass -imsize "
                            f"{self.train_data.image_size} or rerun prepro_coco.py with --imsize "
                            f"{self.args.imsize}")
        config = imcap_args.model_config(self.args, self.train_data.vocabulary)
        model = Captioner(config)
        imcap_args.check_encoder_shape(self.args, model.config.num_regions,
                                       model.config.feature_dim)
        if self.args.standardize == "none":
            return model
        cache = self.feature_cache(model)
        scale, center = feature_statistics(
            features.read_split_features(cache, self.train_data.positions),
            center=self.args.standardize == "position")
        standardized = Captioner(model.config.replace(
            feature_scale=scale.tolist(), feature_center=None if center is None
            else center.tolist()), load_encoder_weights=False)
        standardized.encoder.set_weights(model.encoder.get_weights())
        return standardized

    # the flags a resumed run must repeat: they shape the network and its training
    ARCHITECTURE = ("cnn", "cnn_layer", "image_size", "emb_dim", "z_dim", "lstm_dim", "sgate",
                    "attention", "dropout_layers", "dr_ratio", "sent_dropout",
                    "position_embedding", "dtype_policy")

    def check_same_architecture(self, model, path):
        """--resume with flags describing another network is refused, naming the first flag
        that differs (the checkpoint would silently win otherwise)."""
        wanted = imcap_args.model_config(self.args, self.train_data.vocabulary)
        for name in self.ARCHITECTURE:
            stored, given = getattr(model.config, name), getattr(wanted, name)
            if stored != given:
                raise DataError(f"--resume: checkpoint {path} has {name} {stored!r} but the "
                                f"flags give {given!r}; repeat the flags of the interrupted run")

    def feature_cache(self, model):
        return features.cache_features(model.encoder, self.args.cnn, self.h5_path,
                                       self.cache_path)

    def uses_cache(self, stage):
        return self.args.precompute_feats and stage == "frozen"

    def prepare(self, model, stage):
        """Freezes or unfreezes the CNN for ``stage`` and compiles, with a fresh optimizer, the
        model that fit() runs: the captioner, or its decoder on cached features in stage 1
        with --precompute_feats. Returns that model."""
        finetune = stage == "finetune"
        set_trainable(model.encoder, self.args.finetune_start_layer if finetune else None)
        fit_model = model.features_model() if self.uses_cache(stage) else model
        cnn_variables = model.encoder.trainable_variables if model.encoder is not None else []
        fit_model.compile(optimizer=make_optimizer(self.args, self.args.ftlr if finetune
                                                   else self.args.lr, cnn_variables),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if self.args.strategy != "default":
            distribute.build_from_first_replica(fit_model)
        return fit_model

    def stage_data(self, model, stage):
        """Train and val data of a stage: images, or the feature cache of ``model``'s CNN."""
        if not self.uses_cache(stage):
            return self.train_data, self.val_data
        cache = self.feature_cache(model)
        return (CaptionData(self.h5_path, self.json_path, "train", features_path=cache),
                CaptionData(self.h5_path, self.json_path, "val", features_path=cache))

    # --- validation -----------------------------------------------------------------------

    def validate(self, model, fit_model, val_data):
        """The early-stopping value of ``model`` on the validation split."""
        args = self.args
        if args.es_metric == "loss":
            data = val_data.dataset(args.bs, args.cnn, training=False)
            return float(fit_model.evaluate(data.map(lambda x, y, w, ids: (x, y, w)), verbose=0))
        captions = self.val_captions(model, fit_model, val_data)
        overall, _ = score_captions(self.ground_truth, captions, [args.es_metric])
        return overall[args.es_metric]

    def val_captions(self, model, fit_model, val_data):
        """``{image_id: caption}`` for the validation split (greedy, or teacher-forced)."""
        from_features = val_data.features_path is not None
        if self._decoder is None or self._decoder.model is not model \
                or self._decoder.from_features != from_features:
            self._decoder = GreedyDecoder(model, self.args.seqlen, from_features)
        decoder = self._decoder
        captions = {}
        for x, _, _, ids in val_data.dataset(self.args.bs, self.args.cnn, training=False):
            if self.args.es_prev_words == "gen":
                words = decoder(x["features" if from_features else "images"])
            else:
                words = np.argmax(fit_model(x, training=False)[:, 0], axis=-1)
            for image_id, caption in zip(ids.numpy(), decoder.to_captions(words)):
                captions[int(image_id)] = caption
        return captions

    # --- the stages -----------------------------------------------------------------------

    def interruption(self):
        """Where an interrupted run stopped and what ``--resume`` goes on from, in words."""
        kept = _kept_checkpoint(self.state_path)
        if self.position is None:
            return f"between stages; the last complete checkpoint is {kept}"
        stage, epoch, progress = self.position
        step = progress.step
        return (f"in stage {stage}, epoch {epoch}, after step {step}; the last complete "
                f"checkpoint is {kept}")

    def run(self):
        """Trains every stage asked for; returns the final training state."""
        args = self.args
        stages = ["finetune"] if args.cnn_train else ["frozen"] + (["finetune"]
                                                                    if args.ftnepochs else [])
        state = checkpoints.read_state(self.state_path) if args.resume else {"stages": {}}
        log.info("strategy %s: %d replica(s)", args.strategy, self.strategy.num_replicas_in_sync)
        with self.strategy.scope():
            for stage in stages:
                self.run_stage(stage, state)
        return state

    def run_stage(self, stage, state):
        stage_state = state["stages"].get(stage, {})
        if stage_state.get("done"):
            log.info("stage %s already done (best %s)", stage, stage_state.get("best_path"))
            return
        model, fit_model = self.stage_model(stage, stage_state, state)
        self.train_stage(model, fit_model, stage, stage_state, state)

    def stage_model(self, stage, stage_state, state):
        """The captioner a stage starts (or resumes) from, and the compiled model fit() runs."""
        if stage_state.get("last_path"):
            log.info("resuming stage %s after epoch %d, step %d", stage,
                     stage_state.get("epochs_done", 0), stage_state.get("steps_done", 0))
            model = checkpoints.load_model(stage_state["last_path"], compile=False)
            checkpoints.check_data_matches(model, self.train_data, stage_state["last_path"])
            self.check_same_architecture(model, stage_state["last_path"])
            fit_model = self.prepare(model, stage)
            checkpoints.restore_optimizer(fit_model.optimizer, fit_model.trainable_variables,
                                          stage_state["optimizer_path"], model)
            return model, fit_model
        start = self.args.model_file
        if stage == "finetune" and not start:
            start = state["stages"].get("frozen", {}).get("best_path")
        if start:
            log.info("stage %s starts from %s", stage, start)
            model = checkpoints.load_model(start, compile=False)
            checkpoints.check_data_matches(model, self.train_data, start)
        else:
            model = self.new_model()
        return model, self.prepare(model, stage)

    def train_stage(self, model, fit_model, stage, stage_state, state):
        args = self.args
        check_checkpoint_space(self.paths["models"], model, fit_model)
        train_data, val_data = self.stage_data(model, stage)
        epochs = args.ftnepochs if stage == "finetune" else args.nepochs
        maximize = args.es_metric != "loss"
        stopper = EarlyStopping(args.pat, maximize, stage_state.get("best"),
                                stage_state.get("wait", 0))
        csv = keras.callbacks.CSVLogger(self.model_path(f"{stage}_log.csv"), append=True)
        board = keras.callbacks.TensorBoard(os.path.join(self.paths["logs"], "tensorboard",
                                                         f"{args.model_name}_{stage}"))
        steps_per_epoch = math.ceil(len(train_data) / args.bs)
        for epoch in range(stage_state.get("epochs_done", 0), epochs):
            started = time.perf_counter()
            data = train_data.dataset(args.bs, args.cnn, training=True,
                                      seq_per_img=args.seq_per_img, seed=args.seed, epoch=epoch)
            steps_done = stage_state.get("steps_done", 0)
            loss_so_far = EpochLoss(len(train_data), args.bs, steps_done,
                                    stage_state.get("epoch_loss"))
            if steps_done:
                log.info("resuming epoch %d after step %d", epoch + 1, steps_done)
                data = data.skip(steps_done)  # the same order: the epoch's plan is seeded
            every = StepCheckpoint(self, model, fit_model.optimizer, stage, epoch, steps_done,
                                   stage_state, state, loss_so_far)
            progress = EpochProgress(f"{stage} {epoch + 1}/{epochs}", steps_per_epoch,
                                     steps_done)
            self.position = (stage, epoch + 1, progress)
            if loss_so_far.images_left():
                history = fit_model.fit(data, initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                                        shuffle=False,  # the loader shuffles, seeded by epoch
                                        callbacks=[keras.callbacks.TerminateOnNaN(), csv, board,
                                                   every, progress])
                loss = loss_so_far.epoch_mean(history.history["loss"][-1])
            else:  # killed after the epoch's last step was saved: only validation is left
                loss = loss_so_far.epoch_mean(None)
            if not math.isfinite(loss):
                kept = stage_state.get("last_path", "none yet")
                at = f", step {every.bad_step}" if every.bad_step else ""
                raise TrainingError(f"the loss became {loss} in stage {stage}, epoch {epoch + 1}"
                                    f"{at}; stopped, the last good checkpoint is {kept}")
            value = self.validate(model, fit_model, val_data)
            improved, stop = stopper.update(value)
            log.info("stage %s epoch %d/%d: loss %.4f, val %s %.4f%s, %.0f s", stage, epoch + 1,
                     epochs, loss, args.es_metric, value, " (best)" if improved else "",
                     time.perf_counter() - started)
            self.save(model, fit_model.optimizer, stage, epoch, value, improved, stage_state)
            stage_state.pop("epoch_loss", None)
            stage_state.update(stopper.state(), epochs_done=epoch + 1, steps_done=0,
                               history=stage_state.get("history", []) + [
                                   {"epoch": epoch + 1, "loss": loss, args.es_metric: value}])
            state["stages"][stage] = stage_state
            self.write_state(state)
            self.remove_previous_last(stage_state)
            if stop:
                log.info("early stopping: no improvement for %d epochs", args.pat)
                break
        with self.writing(self.model_path("best.weights.h5", stage)):
            self.save_best_weights(stage, stage_state)
        stage_state["done"] = True
        self.write_state(state)
        self.position = None

    def save_last(self, model, optimizer, stage, tag, stage_state):
        """Writes the last checkpoint and optimizer state, named by ``tag`` (epoch, step). Only
        the state file, written after them, says which pair is current: a crash at any point
        leaves the state pointing at a complete, matching pair."""
        last = self.model_path(f"last_{tag}.keras", stage)
        optimizer_path = self.model_path(f"last_{tag}_optimizer.h5", stage)
        with self.writing(last):
            checkpoints.save_model(model, last)
        with self.writing(optimizer_path):
            checkpoints.save_optimizer(optimizer, optimizer_path, model)
        stage_state["previous_last"] = [stage_state.get("last_path"),
                                        stage_state.get("optimizer_path")]
        stage_state.update(last_path=last, optimizer_path=optimizer_path)

    def save(self, model, optimizer, stage, epoch, value, improved, stage_state):
        """Writes this epoch's checkpoints: the last one, and the best ones if ``improved``."""
        self.save_last(model, optimizer, stage, f"epoch{epoch + 1:02d}", stage_state)
        if not improved:
            return
        metric = self.args.es_metric
        best = self.model_path(f"epoch{epoch + 1:02d}_{metric}{value:.4f}.keras", stage)
        alias = self.model_path("best.keras", stage)
        with self.writing(best):
            link_atomically(stage_state["last_path"], best)
            link_atomically(best, alias)
        previous = stage_state.get("best_epoch_path")
        if previous and previous != best and os.path.exists(previous):
            os.remove(previous)
        stage_state.update(best_path=alias, best_epoch_path=best)

    def save_best_weights(self, stage, stage_state):
        """``MODEL_best.weights.h5``, the best checkpoint's weights only, written once when the
        stage ends rather than at every improvement (~45 MB each)."""
        if stage_state.get("best_path"):
            best = checkpoints.load_model(stage_state["best_path"], compile=False)
            checkpoints.save_weights(best, self.model_path("best.weights.h5", stage))

    def write_state(self, state):
        with self.writing(self.state_path):
            checkpoints.write_state(self.state_path, state)

    @contextlib.contextmanager
    def writing(self, path):
        """A failed write (a full disk) becomes a ``TrainingError`` naming ``path`` and the
        checkpoint ``--resume`` goes on from (the one the state file names)."""
        try:
            yield
        except OSError as e:
            kept = _kept_checkpoint(self.state_path)
            raise TrainingError(f"cannot write {path}: {e.strerror or e}; the last complete "
                                f"checkpoint is {kept}: make room, then run again with "
                                f"--resume") from None

    @staticmethod
    def remove_previous_last(stage_state):
        """Deletes the previous epoch's last checkpoint once the state points past it."""
        for path in stage_state.pop("previous_last", []):
            if path and path not in (stage_state["last_path"], stage_state["optimizer_path"]) \
                    and os.path.exists(path):
                os.remove(path)


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the last checkpoint every ``-ckpt_every`` steps within an epoch, so that --resume
    loses at most that many steps (0: only at the end of each epoch)."""

    def __init__(self, trainer, model, optimizer, stage, epoch, steps_done, stage_state, state,
                 loss_so_far):
        super().__init__()
        self.trainer, self.captioner, self.optimizer = trainer, model, optimizer
        self.stage, self.epoch, self.steps_done = stage, epoch, steps_done
        self.stage_state, self.state = stage_state, state
        self.loss_so_far = loss_so_far
        self.every = trainer.args.ckpt_every
        self.bad_step = None  # the first step (of the epoch) whose loss was not finite

    def on_train_batch_end(self, batch, logs=None):
        step = self.steps_done + batch + 1
        finite = not logs or math.isfinite(float(logs.get("loss", 0.0)))
        if not finite and self.bad_step is None:
            self.bad_step = step
        if not self.every or step % self.every or not finite:
            return  # never checkpoint a diverged model; TerminateOnNaN stops the epoch
        self.trainer.save_last(self.captioner, self.optimizer, self.stage,
                               f"epoch{self.epoch + 1:02d}_step{step:05d}", self.stage_state)
        self.stage_state["steps_done"] = step
        self.stage_state["epoch_loss"] = self.loss_so_far.through(step, float(logs["loss"]))
        self.state["stages"][self.stage] = self.stage_state
        self.trainer.write_state(self.state)
        self.trainer.remove_previous_last(self.stage_state)


class EpochProgress(keras.callbacks.Callback):
    """A progress bar over an epoch's steps (on a terminal; nothing in a log file), with the
    running loss; ``step`` is the epoch's last finished step."""

    def __init__(self, description, steps, steps_done):
        super().__init__()
        self.description, self.steps, self.steps_done = description, steps, steps_done
        self.step, self.bar = steps_done, None

    def on_train_begin(self, logs=None):
        self.bar = tqdm(total=self.steps, initial=self.steps_done, desc=self.description,
                        unit="step", leave=False, disable=None, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.steps_done + batch + 1
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()


class EpochLoss:
    """The epoch's mean training loss across a resume. Keras' running ``loss`` is a mean over
    the steps of one ``fit`` weighted by images per batch; a step checkpoint stores the sum and
    the image count so far, and the epoch's mean combines them with the resumed ``fit``'s."""

    def __init__(self, images, batch_size, steps_done, stored=None):
        self.images, self.batch_size, self.steps_done = images, batch_size, steps_done
        self.sum, self.count = stored if stored and steps_done else (0.0, 0)

    def _images_through(self, step):
        return min(step * self.batch_size, self.images) - \
            min(self.steps_done * self.batch_size, self.images)

    def images_left(self):
        return max(0, self.images - self.steps_done * self.batch_size)

    def through(self, step, running_mean):
        """``[sum, images]`` after ``step``, given the running mean of this ``fit``."""
        count = self._images_through(step)
        return [self.sum + running_mean * count, self.count + count]

    def epoch_mean(self, running_mean):
        """The epoch's mean, given the mean of this ``fit`` over the rest of the epoch."""
        count = self.images_left()
        total = self.sum + (running_mean * count if count else 0.0)
        return total / (self.count + count) if self.count + count else float("nan")


def link_atomically(source, target):
    """``target`` becomes the file ``source`` (a hard link: checkpoints are ~100 MB, and files
    here are replaced, never rewritten in place; a copy where links are not supported)."""
    temporary = target + ".partial"
    if os.path.exists(temporary):
        os.remove(temporary)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _kept_checkpoint(state_path):
    """The last checkpoint that the state file on disk names (what --resume goes on from)."""
    try:
        stages = checkpoints.read_state(state_path)["stages"]
    except (DataError, KeyError, TypeError):
        return "none yet"
    kept = [stage["last_path"] for stage in stages.values() if stage.get("last_path")]
    return kept[-1] if kept else "none yet"


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


def output_folder(args, strategy):
    """Where a run writes: ``-data_folder``, or ``-data_folder/tmp/worker_N`` on the workers of
    a multi-worker run that are not the chief (their checkpoints equal the chief's)."""
    worker = distribute.worker_index(strategy)
    if worker is None:
        return args.data_folder
    return os.path.join(args.data_folder, "tmp", f"worker_{worker}")


def check_inputs(args):
    """Fails early, with the file named, when the preprocessed data is missing."""
    for name in (args.json_file, args.h5file):
        path = os.path.join(args.data_folder, "data", name)
        if not os.path.isfile(path):
            raise DataError(f"preprocessed data not found: {path} (run prepro_coco.py with "
                            f"--output_json/--output_h5 there, or set -data_folder)")
