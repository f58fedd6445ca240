"""The pieces of an epoch that keep their own state: early stopping, the epoch's loss across a
resume, step checkpoints and the progress bar. None of them knows the trainer."""

import math

import keras
from tqdm import tqdm


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


class EpochMeans:
    """The epoch's mean training loss, and the means of what else ``fit`` logs (self-critical
    training's reward, baseline and sampled length), across a resume. Keras' running means
    are over the steps of one ``fit``, weighted by images per batch; a step checkpoint stores
    the sums and the image count so far (``[loss sum, images, {name: sum}]``), and the
    epoch's means combine them with the resumed ``fit``'s. (A state written before the other
    sums were kept holds ``[loss sum, images]``: its other means cover the resumed steps.)"""

    def __init__(self, images, batch_size, steps_done, stored=None):
        self.images, self.batch_size, self.steps_done = images, batch_size, steps_done
        stored = stored if stored and steps_done else [0.0, 0]
        self.sum, self.count = stored[0], stored[1]
        self.sums = dict(stored[2]) if len(stored) > 2 else {}

    def _images_through(self, step):
        return min(step * self.batch_size, self.images) - \
            min(self.steps_done * self.batch_size, self.images)

    def images_left(self):
        return max(0, self.images - self.steps_done * self.batch_size)

    def through(self, step, logs):
        """``[loss sum, images, {name: sum}]`` after ``step``, given this ``fit``'s running
        means ``logs`` (``loss`` among them)."""
        count = self._images_through(step)
        others = {name: self.sums.get(name, 0.0) + float(value) * count
                  for name, value in logs.items() if name != "loss"}
        return [self.sum + float(logs["loss"]) * count, self.count + count] + \
            ([others] if others else [])

    def epoch_means(self, logs):
        """``{name: the epoch's mean}``, given this ``fit``'s means ``logs`` over the rest of
        the epoch (empty when no step was left)."""
        count = self.images_left() if logs else 0
        total = self.count + count
        means = {}
        for name in {"loss", *self.sums, *logs}:
            done = self.sum if name == "loss" else self.sums.get(name)
            if done is None and self.count:  # an older state kept no sum of it
                means[name] = float(logs[name])
                continue
            part = float(logs[name]) * count if name in logs else 0.0
            means[name] = ((done or 0.0) + part) / total if total else float("nan")
        return means


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the last checkpoint every ``every`` steps of an epoch into ``store`` (a
    ``CheckpointStore``), with the epoch's loss so far, so that --resume loses at most that
    many steps (0: only at the end of each epoch). Never saves a diverged model: records the
    first step whose loss was not finite (``bad_step``)."""

    def __init__(self, store, model, optimizer, stage, epoch, epoch_loss, every):
        super().__init__()
        self.store, self.captioner, self.optimizer = store, model, optimizer
        self.stage, self.epoch, self.epoch_loss, self.every = stage, epoch, epoch_loss, every
        self.bad_step = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.epoch_loss.steps_done + batch + 1
        finite = not logs or math.isfinite(float(logs.get("loss", 0.0)))
        if not finite and self.bad_step is None:
            self.bad_step = step
        if not self.every or step % self.every or not finite:
            return  # TerminateOnNaN stops the epoch
        self.store.save_last(self.captioner, self.optimizer, self.stage, self.epoch, step,
                             steps_done=step,
                             epoch_loss=self.epoch_loss.through(step, logs))


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
