"""What a training run is asked to do, as one typed value (train.py builds it from the flags).

The trainer reads this, never the parsed command line: the flags keep imcap_keras' names
(``-bs``, ``-pat``, ``--cnntrain``), the fields say what they mean.
"""

import dataclasses

from imcap.models.config import CaptionerConfig
from imcap.utils.fileio import DataError


# the model settings a resumed run must repeat: they shape the network and its training
ARCHITECTURE = ("cnn", "cnn_layer", "image_size", "emb_dim", "z_dim", "lstm_dim", "use_sentinel",
                "attention", "dropout_layers", "dr_ratio", "sent_dropout",
                "position_embedding", "standardize", "dtype_policy")

# their flags, where the names differ
FLAGS = {"image_size": "-imsize", "use_sentinel": "--sgate", "attention": "--lstm",
         "dropout_layers": "--dr", "position_embedding": "--position_embedding",
         "dtype_policy": "-dtype / --mixed_precision"}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """imcap_keras' optimizer: ``-optim`` with value clipping, Keras 1 decay and accumulation.

    Attributes:
        name: ``adam``, ``SGD``, ``adadelta``, ``adagrad`` or ``rmsprop``.
        beta_1, beta_2: Adam's (imcap_keras' ``-alpha`` and ``-beta``).
        clip: gradient clipping by value; decay: Keras 1 learning-rate decay per step.
        accumulation: steps whose gradients are summed into one update (``-accum``).
        cnn_multiplier: the CNN's updates scale by this (``--lrmults -lrmult_conv``), or None.
    """

    name: str = "adam"
    beta_1: float = 0.9
    beta_2: float = 0.999
    clip: float = 5.0
    decay: float = 0.0
    accumulation: int = 1
    cnn_multiplier: float | None = None

    def make(self, learning_rate, cnn_variables=()):
        """The Keras optimizer; ``cnn_variables`` learn at ``cnn_multiplier`` times the rate."""
        from imcap.training import optimizers

        multiplier = self.cnn_multiplier if cnn_variables else None
        return optimizers.make_optimizer(self.name, learning_rate, self.beta_1, self.beta_2,
                                         self.clip, self.decay, self.accumulation, multiplier,
                                         cnn_variables)


@dataclasses.dataclass(frozen=True)
class ScstConfig:
    """Self-critical training, the third stage (``imcap.training.scst``).

    Attributes:
        epochs: at most this many epochs (``-scst_epochs``; 0: no such stage).
        learning_rate: ``-scst_lr``; sample_n: captions sampled per image; baseline: ``mean``
            (of the image's other samples) or ``greedy``; max_length: of a sampled caption,
            both markers included.
        ban_unk, remove_bad_endings: the decoding options, for the samples and the baseline.
    """

    epochs: int = 0
    learning_rate: float = 5e-5
    sample_n: int = 5
    baseline: str = "mean"
    max_length: int = 18
    ban_unk: bool = False
    remove_bad_endings: bool = False

    def __post_init__(self):
        if self.baseline == "mean" and self.sample_n < 2:
            raise ValueError(f"-scst_sample_n {self.sample_n} with -scst_baseline mean: the "
                             f"baseline is the mean of the image's other samples, so at least "
                             f"2 are needed (or use -scst_baseline greedy)")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """A training run.

    Attributes:
        folder: the run folder (``-data_folder``); json_file, h5file: prepro_coco.py's output
            in its ``data/``; model_name: the prefix of every file the run writes.
        model: the captioner's settings from the flags, as ``CaptionerConfig`` fields without
            the vocabulary (``model_config`` adds the data's).
        expected_vocab_size, expected_channels, expected_grid: imcap_keras' check flags
            (``-vocab_size``, ``-nfilters``, ``-convsize``): None, or what the data and the
            encoder must give.
        stages: in order, some of ``frozen`` (stage 1), ``finetune`` (stage 2, alone with
            --cnntrain) and ``scst`` (self-critical training, ``-scst_epochs``); each starts
            from the best checkpoint of the one before, the first from ``start_from``.
        epochs, finetune_epochs: at most this many epochs per stage.
        learning_rate, finetune_learning_rate: of stage 1 and stage 2.
        optimizer: ``OptimizerConfig``.
        finetune_start_layer: stage 2 trains the CNN from this layer upward (None: the
            backbone's own, ``imcap.models.backbones``).
        start_from: a checkpoint the first stage starts from (``-model_file``), or None.
        resume: go on from the state file.
        batch_size, captions_per_image: images per batch and captions drawn per image.
        cache_features: stage 1 trains on the feature cache (``--precompute_feats``).
        features: precomputed region features to train on instead of images (``-features``:
            a features file or folder, ``imcap.data.region_features``); there is no CNN, so
            only stage 1 runs.
        checkpoint_every: also checkpoint every this many steps (0: per epoch only).
        metric: the early-stopping metric (``loss`` or a caption metric); patience: epochs
            without improvement before a stage stops.
        teacher_forced: validate on teacher-forced captions (``-es_prev_words gt``) rather than
            greedy ones; max_length: the validation captions' length limit.
        seed: of the weights, dropout and the order of the training captions.
        strategy: ``default``, ``mirrored`` or ``multiworker``.
        scst: ``ScstConfig``.
    """

    folder: str
    json_file: str
    h5file: str
    model_name: str = "model"
    model: dict = dataclasses.field(default_factory=dict)
    expected_vocab_size: int | None = None
    expected_channels: int | None = None
    expected_grid: int | None = None
    stages: tuple = ("frozen", "finetune")
    epochs: int = 20
    finetune_epochs: int = 30
    learning_rate: float = 5e-4
    finetune_learning_rate: float = 1e-5
    optimizer: OptimizerConfig = OptimizerConfig()
    finetune_start_layer: int | None = None
    start_from: str | None = None
    resume: bool = False
    batch_size: int = 32
    captions_per_image: int = 1
    cache_features: bool = False
    features: str | None = None
    checkpoint_every: int = 0
    metric: str = "CIDEr"
    patience: int = 5
    teacher_forced: bool = False
    max_length: int = 18
    seed: int = 123
    strategy: str = "default"
    scst: ScstConfig = ScstConfig()

    def model_config(self, vocabulary):
        """The ``CaptionerConfig`` of a new model for ``vocabulary`` (the JSON's words).

        Raises:
            ValueError: ``expected_vocab_size`` disagrees with the data.
        """
        config = CaptionerConfig(vocabulary=vocabulary, **self.model)
        if self.expected_vocab_size is not None \
                and self.expected_vocab_size != config.vocabulary.size:
            raise ValueError(f"-vocab_size {self.expected_vocab_size} does not match the "
                             f"preprocessed JSON, which has {config.vocabulary.size} (words + "
                             f"padding); leave it out.")
        return config

    @staticmethod
    def features_model_config(config, features):
        """``config`` made a captioner on precomputed ``features`` (a ``RegionFeatures``): no
        CNN, their number of regions and channels, and whether the number varies."""
        variable = {"variable_regions": True} if features.variable else {}
        return config.replace(input_images=False, cnn_weights="none",
                              num_regions=features.max_regions, feature_dim=features.dim,
                              features_source=features.describe()["features"], **variable)

    def check_same_architecture(self, stored, vocabulary, path):
        """--resume with flags describing another network than the checkpoint's (its
        ``CaptionerConfig`` ``stored``, from ``path``) is refused, naming the first flag that
        differs (the checkpoint would silently win otherwise)."""
        wanted = self.model_config(vocabulary)
        for name in ARCHITECTURE:
            have, given = getattr(stored, name), getattr(wanted, name)
            if have != given:
                flag = FLAGS.get(name, f"-{name}")
                raise DataError(f"--resume: checkpoint {path} has {name} {have!r} ({flag}) but "
                                f"the flags give {given!r}; repeat the flags of the interrupted "
                                f"run")

    def check_encoder(self, num_regions, feature_dim):
        """``-nfilters`` and ``-convsize``, if given, must match the encoder's grid."""
        if self.expected_channels is not None and self.expected_channels != feature_dim:
            raise ValueError(f"-nfilters {self.expected_channels} does not match the encoder, "
                             f"which gives {feature_dim} channels; leave it out.")
        side = int(round(num_regions ** 0.5))
        if self.expected_grid is not None and self.expected_grid ** 2 != num_regions:
            raise ValueError(f"-convsize {self.expected_grid} does not match the encoder, whose "
                             f"grid is {side}x{side} ({num_regions} regions); leave it out.")

    def stage_epochs(self, stage):
        return {"finetune": self.finetune_epochs, "scst": self.scst.epochs}.get(stage,
                                                                                  self.epochs)

    def stage_learning_rate(self, stage):
        return {"finetune": self.finetune_learning_rate,
                "scst": self.scst.learning_rate}.get(stage, self.learning_rate)

    @property
    def maximize(self):
        """Whether the early-stopping metric improves upwards (every metric but the loss)."""
        return self.metric != "loss"
