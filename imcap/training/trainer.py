"""The training stages, with early stopping on a caption metric and checkpoints.

Stage 1 (``frozen``) trains the decoder with the CNN frozen (BatchNormalization in inference
mode); stage 2 (``finetune``) fine-tunes the CNN from ``finetune_start_layer`` upward at its own
learning rate; ``scst`` (self-critical training, ``imcap.training.scst``) trains the decoder on
its own sampled captions with CIDEr-D as the reward, the CNN frozen again. Each starts from the
best checkpoint of the stage before it, the first from ``start_from`` (or a new model).

After every epoch the validation split is scored (greedy captions, or teacher-forced ones, or
the loss) against the ground truth that prepro_coco.py wrote; the last checkpoint, the best one
when the score improved, and then the state are saved (``CheckpointStore``).

Before a stage trains, its output folders must be writable and hold room for two checkpoints
with their optimizer state; a write that fails later (a full disk) stops the run with one line
naming the file and the last complete checkpoint, from which ``--resume`` goes on.
"""

import logging
import math
import os
import time

import keras
import tensorflow as tf

from imcap.training import distribute
from imcap.training import scst as scst_module
from imcap.evaluation.scoring import load_ground_truth
from imcap.models.captioner import Captioner
from imcap.decoding import GreedyDecoder
from imcap.models.backbones import backbone
from imcap.models.encoder import set_trainable
from imcap.models.feature_standardization import feature_statistics
from imcap.models.preprocessing import preprocessor
from imcap.evaluation import captioning as validation
from imcap.training.callbacks import EarlyStopping, EpochMeans, EpochProgress, StepCheckpoint
from imcap.training.epoch_log import EpochLog
from imcap.training.run_folder import SAMPLED
from imcap.training.store import (CheckpointStore, TrainingError, check_checkpoint_space,
                                  remove_partial_files)
from imcap.models import saving
from imcap.data import features
from imcap.data.region_features import open_region_features
from imcap.data.coco_gt import gt_path
from imcap.utils.fileio import DataError, check_writable
from imcap.data.loader import CaptionData, reading_errors

log = logging.getLogger("imcap.train")

class Trainer:
    """Runs the stages of ``config`` (a ``TrainingConfig``) in ``run`` (a ``RunFolder``)."""

    def __init__(self, config, run, strategy=None):
        self.config, self.run_folder = config, run
        self.strategy = strategy or tf.distribute.get_strategy()
        for folder in run.output_folders():
            os.makedirs(folder, exist_ok=True)
            check_writable(folder)
        remove_partial_files(run.models)
        self.json_path = run.data_file(config.json_file)
        self.h5_path = run.data_file(config.h5file)
        # -features: precomputed region features instead of images (and of any CNN)
        self.features = open_region_features(config.features) if config.features else None
        self.train_data, self.val_data = (
            CaptionData(self.h5_path, self.json_path, split, with_images=self.features is None,
                        features=self.features) for split in ("train", "val"))
        self.ground_truth = load_ground_truth(gt_path(self.json_path, "val"))
        self.store = CheckpointStore(run, run.read_state() if config.resume else None)
        self._decoder = None
        self.position = None  # (stage, epoch, its EpochProgress) while a stage trains

    @property
    def state(self):
        return self.store.state

    # --- the stages, in order ---------------------------------------------------------------

    def run(self):
        """Trains every stage asked for; returns the final ``TrainingState``."""
        log.info("strategy %s: %d replica(s)", self.config.strategy,
                 self.strategy.num_replicas_in_sync)
        with self.strategy.scope():
            for stage in self.config.stages:
                if self.state.stage(stage).done:
                    log.info("stage %s already done (best %s)", stage,
                             self.state.stage(stage).best_path)
                    continue
                model, fit_model = self.stage_model(stage)
                self.train_stage(model, fit_model, stage)
        return self.state

    def stage_model(self, stage):
        """The captioner a stage starts (or resumes) from, and the compiled model fit() runs."""
        stage_state = self.state.stage(stage)
        if stage_state.last_path:
            log.info("resuming stage %s after epoch %d, step %d", stage,
                     stage_state.epochs_done, stage_state.steps_done)
            model = saving.load_model(stage_state.last_path, compile=False)
            saving.check_data_matches(model, self.train_data, stage_state.last_path)
            self.config.check_same_architecture(model.config, self.train_data.vocabulary,
                                                    stage_state.last_path)
            fit_model = self.prepare(model, stage)
            saving.restore_optimizer(fit_model.optimizer, fit_model.trainable_variables,
                                          stage_state.optimizer_path, model)
            return model, fit_model
        start = self.stage_start(stage)
        if start:
            log.info("stage %s starts from %s", stage, start)
            model = saving.load_model(start, compile=False)
            saving.check_data_matches(model, self.train_data, start)
        else:
            model = self.new_model()
        return model, self.prepare(model, stage)

    def stage_start(self, stage):
        """The checkpoint a stage starts from: the best of the stage before it in this run, or
        ``start_from`` (-model_file) for the first (None: a new model)."""
        stages = self.config.stages
        earlier = stages[:stages.index(stage)]
        return self.state.stage(earlier[-1]).best_path if earlier else self.config.start_from

    def train_stage(self, model, fit_model, stage):
        config, stage_state = self.config, self.state.stage(stage)
        check_checkpoint_space(self.run_folder.models, model, fit_model)
        train_data, val_data = self.stage_data(model, stage)
        epochs = config.stage_epochs(stage)
        stopper = EarlyStopping(config.patience, config.maximize, stage_state.best,
                                stage_state.wait)
        with EpochLog(self.run_folder.csv_log(stage), self.run_folder.tensorboard(stage),
                      config.metric) as epoch_log:
            steps_per_epoch = math.ceil(len(train_data) / config.batch_size)
            for epoch in range(stage_state.epochs_done, epochs):
                started = time.perf_counter()
                means, bad_step = self.train_epoch(model, fit_model, stage, epoch, train_data,
                                                   steps_per_epoch)
                loss = means["loss"]
                if not math.isfinite(loss):
                    at = f", step {bad_step}" if bad_step else ""
                    raise TrainingError(f"the loss became {loss} in stage {stage}, epoch "
                                        f"{epoch + 1}{at}; stopped, the last good checkpoint "
                                        f"is {stage_state.last_path or 'none yet'}")
                value = self.validate(model, fit_model, val_data)
                improved, stop = stopper.update(value)
                sampled = {k: means[k] for k in SAMPLED if k in means}
                log.info("stage %s epoch %d/%d: loss %.4f%s, val %s %.4f%s, %.0f s", stage,
                         epoch + 1, epochs, loss,
                         "".join(f", {k} {v:.4f}" for k, v in sampled.items()), config.metric,
                         value, " (best)" if improved else "", time.perf_counter() - started)
                self.store.save_epoch(
                    model, fit_model.optimizer, stage, epoch + 1, config.metric, value, improved,
                    best=stopper.best, wait=stopper.wait, epochs_done=epoch + 1, steps_done=0,
                    epoch_loss=None, history=stage_state.history + [
                        {"epoch": epoch + 1, "loss": loss, f"val_{config.metric}": value,
                         **sampled}])
                epoch_log.write(stage_state.history)  # after the state: what --resume knows
                if stop:
                    log.info("early stopping: no improvement for %d epochs", config.patience)
                    break
        self.store.save_best_weights(stage)
        stage_state.done = True
        self.store.write_state()
        self.position = None

    def train_epoch(self, model, fit_model, stage, epoch, train_data, steps):
        """One epoch (0-based ``epoch``), or what a step checkpoint left of it; returns its
        means of what ``fit`` logs (the loss; SCST's reward, baseline and sampled length), a
        resumed epoch's included, and the first step whose loss was not finite (None)."""
        config, stage_state = self.config, self.state.stage(stage)
        scst = stage == "scst"  # one row per image, with its id for the reward
        data = train_data.dataset(config.batch_size, preprocessor(model.config.cnn), training=True,
                                  seq_per_img=1 if scst else config.captions_per_image,
                                  seed=config.seed, epoch=epoch, with_ids=scst)
        steps_done = stage_state.steps_done
        epoch_loss = EpochMeans(len(train_data), config.batch_size, steps_done,
                                stage_state.epoch_loss)
        if steps_done:
            log.info("resuming epoch %d after step %d", epoch + 1, steps_done)
            data = data.skip(steps_done)  # the same order: the epoch's plan is seeded
        if not epoch_loss.images_left():  # killed after the epoch's last step was saved
            return epoch_loss.epoch_means({}), None
        every = StepCheckpoint(self.store, model, fit_model.optimizer, stage, epoch + 1,
                               epoch_loss, config.checkpoint_every)
        progress = EpochProgress(f"{stage} {epoch + 1}/{config.stage_epochs(stage)}", steps,
                                 steps_done)
        self.position = (stage, epoch + 1, progress)
        with reading_errors():  # a NaN feature: one line
            history = fit_model.fit(data, initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                                    shuffle=False,  # the loader shuffles, seeded by epoch
                                    callbacks=[keras.callbacks.TerminateOnNaN(), every,
                                               progress])
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        return epoch_loss.epoch_means(logs), every.bad_step

    # --- models -------------------------------------------------------------------------------

    def new_model(self):
        """A fresh captioner; with ``standardize``, its statistics come from the training
        split's cached features of its own encoder. The model's image size must be the data's
        (a checkpoint's own size is checked by ``saving.check_data_matches``)."""
        config = self.config.model_config(self.train_data.vocabulary)
        if self.features is not None:
            config = self.config.features_model_config(config, self.features)
        elif config.image_size != self.train_data.image_size:
            raise DataError(f"-imsize is {config.image_size} but {self.h5_path} holds "
                            f"{self.train_data.image_size} px images; pass -imsize "
                            f"{self.train_data.image_size} or rerun prepro_coco.py with --imsize "
                            f"{config.image_size}")
        model = Captioner(config)
        self.config.check_encoder(model.config.num_regions, model.config.feature_dim)
        if config.standardize != "none":
            source = self.features or self.feature_cache(model)
            model.standardize.set_statistics(*feature_statistics(
                features.read_split_features(source, self.train_data.image_ids),
                center=config.standardize == "position"))
        return model

    def feature_cache(self, model):
        return features.cache_features(model.encoder, model.config.cnn, self.h5_path,
                                       self.run_folder.feature_cache, json_path=self.json_path)

    def uses_cache(self, stage):
        """Whether ``stage`` trains from the feature cache: stage 1 and SCST (CNN frozen)."""
        return self.config.cache_features and stage in ("frozen", "scst")

    def prepare(self, model, stage):
        """Freezes or unfreezes the CNN for ``stage`` and compiles, with a fresh optimizer, the
        model that fit() runs: the captioner, or its decoder on cached features in stage 1
        with --precompute_feats. Returns that model."""
        finetune = stage == "finetune"
        start = self.config.finetune_start_layer
        if finetune and start is None:
            start = backbone(model.config.cnn).finetune_start_layer
        if model.encoder is not None:  # (none on precomputed features)
            set_trainable(model.encoder, start if finetune else None)
        cnn_variables = model.encoder.trainable_variables if model.encoder is not None else []
        optimizer = self.config.optimizer.make(self.config.stage_learning_rate(stage),
                                               cnn_variables)
        if stage == "scst":
            fit_model = self.self_critical(model)
            fit_model.compile(optimizer=optimizer)
        else:
            fit_model = model.features_model() if self.uses_cache(stage) else model
            fit_model.compile(optimizer=optimizer,
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        # the optimizer's slots (Adam's moments, accumulators) exist before the first step:
        # created inside it, they made TensorFlow trace the training step twice
        fit_model.optimizer.build(fit_model.trainable_variables)
        if self.config.strategy != "default":
            distribute.build_from_first_replica(fit_model)
        return fit_model

    def self_critical(self, model):
        """SCST's ``fit`` model around ``model``, rewarded by CIDEr-D against the training
        references (computed once into the run folder)."""
        scst = self.config.scst
        scorer = scst_module.reward_scorer(self.run_folder.scst_references, self.train_data)
        return scst_module.SelfCritical(
            model, scorer, scst.sample_n, scst.baseline, scst.max_length, self.config.seed,
            ban_unk=scst.ban_unk, remove_bad_endings=scst.remove_bad_endings)

    def stage_data(self, model, stage):
        """Train and val data of a stage: images, -features (padded to the model's regions),
        or the feature cache of ``model``'s CNN."""
        if self.features is None and not self.uses_cache(stage):
            return self.train_data, self.val_data
        source = self.features or self.feature_cache(model)
        return tuple(CaptionData.for_model(self.h5_path, self.json_path, split, model.config,
                                           source) for split in ("train", "val"))

    # --- validation ---------------------------------------------------------------------------

    def validate(self, model, fit_model, val_data):
        """The early-stopping value of ``model`` on the validation split."""
        config = self.config
        if config.metric == "loss":
            data = val_data.dataset(config.batch_size, preprocessor(model.config.cnn),
                                    training=False)
            return float(fit_model.evaluate(data.map(lambda x, y, w, ids: (x, y, w)), verbose=0))
        from_features = val_data.features_path is not None
        if self._decoder is None or self._decoder.model is not model \
                or self._decoder.from_features != from_features:
            self._decoder = GreedyDecoder(model, config.max_length, from_features)
        if config.teacher_forced:
            results = validation.teacher_forced_captions(fit_model, self._decoder, val_data,
                                                         config.batch_size)
        else:
            results, _, _ = validation.caption_split(self._decoder, val_data,
                                                     config.batch_size, progress=False)
        return validation.validation_score(self.ground_truth, results, config.metric)

    def interruption(self):
        """Where an interrupted run stopped and what ``--resume`` goes on from, in words."""
        kept = self.run_folder.kept_checkpoint()
        if self.position is None:
            return f"between stages; the last complete checkpoint is {kept}"
        stage, epoch, progress = self.position
        return (f"in stage {stage}, epoch {epoch}, after step {progress.step}; the last "
                f"complete checkpoint is {kept}")
