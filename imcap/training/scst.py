"""Self-critical sequence training (Rennie et al., CVPR 2017): the third stage, which optimises
the test metric, CIDEr-D, with REINFORCE.

Per batch of B images, in one ``train_step`` (so ``fit`` brings checkpoints, accumulation,
mixed precision, distribution and logs as for the other stages):

1. the model samples ``sample_n`` captions per image at temperature 1 (the decoders' sampler,
   in the graph, without dropout: the policy is the model as decoding runs it), seeded by
   ``(seed, optimizer step, replica)`` so that a resumed run draws what an uninterrupted one
   draws, and the replicas of a distribution strategy draw apart (``sample_call``);
2. each caption's reward r is its CIDEr-D against its image's training references
   (``CiderD``, Python, through ``tf.numpy_function``); the baseline b is the mean reward of
   the image's other samples (``mean``, Luo 2020) or the reward of its greedy caption
   (``greedy``, Rennie et al.);
3. the loss is ``-mean over captions of (r - b) * sum_t log p(w_t)``, the sum over the sampled
   words up to and including ``<eos>``, with log p from the teacher-forced model on the sampled
   words (the same numbers as the step-by-step sampler's, at once).

The CNN is frozen (BatchNormalization in inference mode) as in stage 1.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from imcap.decoding import GreedyDecoder, SamplingDecoder
from imcap.evaluation.cider_reward import CiderD
from imcap.training.run_folder import SAMPLED
from imcap.utils.fileio import DataError, write_json_atomic

BASELINES = ("mean", "greedy")


def training_references(data):
    """``{image_id: [caption, ...]}``: every caption of every image of ``data`` (a
    ``CaptionData``) as the words prepro_coco.py kept (its tokens, ``UNK`` for rare words, at
    most ``-max_length``), as self-critical.pytorch's reward reads its label HDF5."""
    vocabulary, start_id = data.vocabulary, data.vocabulary.start_id
    references = {}
    for image_id, first, count in zip(data.image_ids.tolist(), data.label_start.tolist(),
                                      data.label_count.tolist()):
        captions = []
        for row in data.labels[first:first + count]:
            row = row[1:] if len(row) and row[0] == start_id else row
            captions.append(" ".join(vocabulary.ids_to_words(row)))
        references[image_id] = captions
    return references


def reward_scorer(path, data):
    """The CIDEr-D scorer of ``data``'s references, with their document frequencies: read from
    ``path`` (a JSON this function wrote), or computed once and written there."""
    if os.path.exists(path):
        try:
            with open(path) as f:
                stored = json.load(f)
            references = {int(i): c for i, c in stored["references"].items()}
            frequencies = {tuple(g.split(" ")): n for g, n in stored["document_frequency"]}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise DataError(f"SCST references {path}: malformed; expected the JSON train.py "
                            f"writes ('references', 'document_frequency'); delete it to "
                            f"recompute") from None
        missing = set(data.image_ids.tolist()) - set(references)
        if missing:
            raise DataError(f"SCST references {path}: image {min(missing)} of the training "
                            f"split is missing; delete the file to recompute it")
        return CiderD(references, document_frequency=frequencies)
    scorer = CiderD(training_references(data))
    write_json_atomic(path, {
        "references": {str(i): c for i, c in scorer.captions.items()},
        "document_frequency": sorted([" ".join(g), n]
                                     for g, n in scorer.document_frequency.items())})
    return scorer


def sequence_log_probs(captioner, features, words, num_regions=None):
    """(B, n): the log-probability of each of n captions per image, the sum over its words up to
    and including ``<eos>`` (teacher-forced, no dropout). ``words`` (B, n, L) word ids without
    ``<start>``, 0 after ``<eos>``; ``features`` (B, K, D) region features."""
    shape = tf.shape(words)
    start = tf.fill((shape[0], shape[1], 1), tf.constant(captioner.config.vocabulary.start_id,
                                                         words.dtype))
    previous = tf.concat([start, words[:, :, :-1]], axis=2)
    logits = captioner.features_logits(features, previous, num_regions)  # (B, n, L, V)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    picked = tf.gather(log_probs, words, batch_dims=3)
    return tf.reduce_sum(tf.where(words > 0, picked, tf.zeros_like(picked)), axis=-1)


def scst_loss(captioner, features, words, advantages, num_regions=None):
    """``-mean((r - b) * log p(caption))`` over the B x n captions; ``advantages`` (B, n)."""
    log_probs = sequence_log_probs(captioner, features, words, num_regions)
    return -tf.reduce_mean(tf.cast(advantages, tf.float32) * log_probs)


def sample_call(step):
    """The sampler's call count for optimizer ``step`` on this replica: ``step`` on one device
    (what a run on one device always drew); ``step x replicas + replica`` under a strategy, so
    that the replicas, whose shares of the batch have the same shape, do not all draw the same
    random numbers for their rows."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return step
    context = tf.distribute.get_replica_context()  # None outside a replica's step
    replica = 0 if context is None else context.replica_id_in_sync_group
    return tf.cast(step, tf.int64) * replicas + tf.cast(replica, tf.int64)


class SelfCritical(keras.Model):
    """What ``fit`` trains in the SCST stage: the ``captioner``'s decoder, by REINFORCE.

    Takes the batches stage 1 takes, with the image ids last (``CaptionData.dataset(...,
    with_ids=True)``): ``({"images" or "features"[, "num_regions"], "words"}, y, weight, ids)``;
    the captions in it are not used. Logs ``loss``, ``reward`` (mean sampled CIDEr-D),
    ``baseline`` and ``length`` (mean sampled words, ``<eos>`` not counted).

    Args:
        captioner: the ``Captioner`` (its CNN frozen by the caller).
        scorer: a ``CiderD`` holding every training image's references.
        sample_n: captions sampled per image; baseline: ``mean`` (needs ``sample_n`` >= 2) or
            ``greedy``; max_length: of the sampled captions with both markers.
        seed: of the samples; decoding: the decoders' options (``ban_unk``,
            ``remove_bad_endings``, ``block_trigrams``) for sampling and the greedy baseline.
    """

    def __init__(self, captioner, scorer, sample_n=5, baseline="mean", max_length=None,
                 seed=0, **decoding):
        if baseline not in BASELINES:
            raise ValueError(f"-scst_baseline must be one of {', '.join(BASELINES)}, got "
                             f"{baseline!r}")
        if sample_n < 1 or (baseline == "mean" and sample_n < 2):
            raise ValueError(f"-scst_sample_n must be at least 2 with the mean baseline (the "
                             f"other samples' mean), or 1 with -scst_baseline greedy; got "
                             f"{sample_n}")
        super().__init__(name="self_critical", dtype=captioner.dtype_policy)
        self.captioner, self.scorer = captioner, scorer
        self.sample_n, self.baseline_kind, self.seed = sample_n, baseline, seed
        self.sampler = SamplingDecoder(captioner, max_length, from_features=True, seed=seed,
                                       **decoding)
        self.greedy = GreedyDecoder(captioner, max_length, from_features=True, **decoding) \
            if baseline == "greedy" else None
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss",) + SAMPLED}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _rewards(self, image_ids, words):
        captions = self.sampler.to_captions(words)
        return self.scorer.scores(image_ids.tolist(), captions).astype(np.float32)

    def rewards(self, image_ids, words):
        """(N,) float32 CIDEr-D of word-id rows (N, L) for ``image_ids`` (N,), in the graph."""
        values = tf.numpy_function(self._rewards, [image_ids, words], tf.float32)
        values.set_shape(image_ids.shape)
        return values

    def features(self, x):
        """The batch's region features (B, K, D) and region counts (B,) or None."""
        if "features" in x:
            features = x["features"]
        else:
            features = self.captioner.encoder(x["images"], training=False)
        return features, x.get("num_regions")

    def sample(self, features, num_regions, image_ids):
        """The sampled words (B, n, L), their rewards and baselines (B, n)."""
        n = self.sample_n
        batch = tf.shape(features)[0]
        step = self.optimizer.iterations if self.optimizer is not None else 0
        # (B n, L): each image encoded once, its n samples drawn from copies of the encoding
        words = self.sampler.graph(features, num_regions, call=sample_call(step),
                                   repeat=n)["words"]
        rewards = tf.reshape(self.rewards(tf.repeat(image_ids, n), words), (batch, n))
        if self.greedy is None:  # the mean of the image's other samples
            baselines = (tf.reduce_sum(rewards, 1, keepdims=True) - rewards) / (n - 1)
        else:
            greedy = self.greedy.graph(features, num_regions)["words"]
            baselines = tf.repeat(self.rewards(image_ids, greedy)[:, None], n, axis=1)
        return tf.reshape(words, (batch, n, -1)), rewards, baselines

    def test_step(self, data):
        """The teacher-forced cross-entropy of the batch's captions, as stage 1's ``evaluate``
        gives it (``-es_metric loss``)."""
        x, y, weights = data[:3]
        features, num_regions = self.features(x)
        logits = self.captioner.features_logits(features, x["words"], num_regions)
        # a Keras loss comes divided by the replicas (their gradients are summed); the
        # validation loss is this replica's mean, as stage 1's evaluate reports it
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = self.cross_entropy(y, logits, sample_weight=weights) * replicas
        self.trackers["loss"].update_state(loss, sample_weight=tf.shape(y)[0])
        return {"loss": self.trackers["loss"].result()}

    def train_step(self, data):
        x, image_ids = data[0], data[-1]
        features, num_regions = self.features(x)
        words, rewards, baselines = self.sample(features, num_regions, image_ids)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            loss = scst_loss(self.captioner, features, words, rewards - baselines, num_regions)
            # fit() sums the replicas' gradients: each replica's share of the mean
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        images = tf.shape(features)[0]
        lengths = tf.reduce_sum(tf.cast(words > 0, tf.float32), -1) - tf.cast(
            tf.reduce_any(tf.equal(words, self.captioner.config.vocabulary.end_id), -1),
            tf.float32)
        for name, value in (("loss", loss), ("reward", tf.reduce_mean(rewards)),
                            ("baseline", tf.reduce_mean(baselines)),
                            ("length", tf.reduce_mean(lengths))):
            self.trackers[name].update_state(value, sample_weight=images)
        return {name: tracker.result() for name, tracker in self.trackers.items()}
