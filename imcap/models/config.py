"""The one typed description of a captioner, stored inside every checkpoint."""

import dataclasses

from imcap.data.vocabulary import Vocabulary
from imcap.models.backbones import BACKBONES

# kept free of Keras imports, so that command-line help and config checks start fast
CNN_NAMES = tuple(BACKBONES)  # backbones.py imports no Keras either
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
STANDARDIZE = ("none", "channel", "position")
MODEL_VERSION = 2  # 2: imcap_keras' final model (issue 14); 1: before, an earlier revision's


@dataclasses.dataclass
class CaptionerConfig:
    """Everything needed to rebuild a captioner; ``Captioner(config)`` builds it.

    The vocabulary comes from the preprocessed JSON (``ix_to_word``), so the output size is never
    a flag to keep in sync: it is ``vocabulary.size`` (the words and id 0, the padding).

    Attributes:
        vocabulary: a ``Vocabulary`` (a list of the words of ids 1..V-1 is turned into one;
            stored as that list).
        max_length: caption length of the training data, markers included (decoding limit).
        input_images: the model takes images and runs the CNN (``True``) or takes precomputed
            region features (``False``, stage 1 from a feature cache).
        cnn, cnn_weights, cnn_layer, image_size: the encoder (see ``build_encoder``).
        num_regions, feature_dim: K and D of the region features (filled in from the encoder
            when ``input_images``; required otherwise).
        variable_regions: each image has its own number of real regions (e.g. bottom-up boxes):
            its features come padded to K rows with a count ``num_regions`` (a third model
            input); v_g and the attention use the real regions only. Needs precomputed features
            (``input_images=False``), and neither a position embedding nor per-position
            standardisation (a region set has no positions).
        features_source: where the precomputed features it was trained on came from (the
            ``-features`` path), for the record; None for a captioner trained on images.
        emb_dim, z_dim, lstm_dim: imcap_keras' ``-emb_dim``, ``-z_dim``, ``-lstm_dim``.
        dr_ratio: the LSTM's recurrent dropout, one mask per gate (imcap_keras'
            ``-dr_ratio``, always on; its input dropout never took effect), and the rate of
            ``dropout_layers``.
        dropout_layers: imcap_keras' ``--dr``: dropout at rate ``dr_ratio`` after the image
            projections, the word embedding, the LSTM input, inside the attention and after the
            output MLP.
        use_sentinel: adaptive attention with the visual sentinel (imcap_keras' ``--sgate``).
        attention: spatial attention (``False`` is imcap_keras' ``--lstm`` baseline).
        sent_dropout: fraction of training captions whose sentinel is switched off.
        position_embedding: add a learned position embedding to the region features.
        standardize: ``none`` (raw features), ``channel`` (each channel scaled by its spread)
            or ``position`` (each position's mean removed first): ``FeatureStandardization``,
            whose statistics (of the training split) are weights.
        dtype_policy: ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
        model_version: 2, imcap_keras' final model; a checkpoint without it was saved by an
            earlier imcap (version 1: tanh ``zh_embed``, relu ``zs_embed``, ``--dr`` before the
            output MLP and not on the LSTM input, LSTM input dropout, one recurrent mask) and
            is refused rather than silently computed another way.
    """

    vocabulary: Vocabulary
    max_length: int = 18
    input_images: bool = True
    cnn: str = "resnet"
    cnn_weights: str = "imagenet"
    cnn_layer: str = None
    image_size: int = 256
    num_regions: int = None
    feature_dim: int = None
    variable_regions: bool = False
    features_source: str = None
    emb_dim: int = 512
    z_dim: int = 512
    lstm_dim: int = 512
    dr_ratio: float = 0.5
    dropout_layers: bool = False
    use_sentinel: bool = False
    attention: bool = True
    sent_dropout: float = 0.0
    position_embedding: bool = False
    standardize: str = "none"
    dtype_policy: str = "float32"
    model_version: int = MODEL_VERSION

    def __post_init__(self):
        if self.model_version != MODEL_VERSION:
            raise ValueError(
                f"the model was saved by an earlier imcap (model version {self.model_version}, "
                f"this one computes version {MODEL_VERSION}): its zh_embed (tanh) and zs_embed "
                f"(relu) are linear now, and its LSTM and --dr dropouts moved to where "
                f"imcap_keras HEAD has them; train it again")
        if not isinstance(self.vocabulary, Vocabulary):
            self.vocabulary = Vocabulary(self.vocabulary or ())
        if self.cnn not in CNN_NAMES:
            raise ValueError(f"cnn must be one of {', '.join(CNN_NAMES)}, got {self.cnn!r}.")
        if self.standardize not in STANDARDIZE:
            raise ValueError(f"standardize must be one of {', '.join(STANDARDIZE)}, got "
                             f"{self.standardize!r}.")
        if self.dtype_policy not in DTYPE_POLICIES:
            raise ValueError(f"dtype_policy must be one of {', '.join(DTYPE_POLICIES)}, "
                             f"got {self.dtype_policy!r}.")
        for name in ("emb_dim", "z_dim", "lstm_dim", "max_length", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("dr_ratio", "sent_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.sent_dropout and not (self.use_sentinel and self.attention):
            raise ValueError("sent_dropout needs the sentinel: use_sentinel (--sgate), and not "
                             "the --lstm baseline.")
        if not self.input_images and not (self.num_regions and self.feature_dim):
            raise ValueError("a captioner on precomputed features needs num_regions and "
                             "feature_dim.")
        if self.variable_regions:
            self._check_variable_regions()

    def _check_variable_regions(self):
        if self.input_images:
            raise ValueError("variable_regions=True needs precomputed region features, got "
                             "input_images=True.")
        if self.position_embedding:
            raise ValueError("variable_regions=True cannot go with position_embedding=True: "
                             "a set of regions has no positions.")
        if self.standardize == "position":
            raise ValueError("variable_regions=True cannot go with standardize='position': "
                             "a set of regions has no positions.")

    def to_dict(self):
        """Plain values (the vocabulary as its list of words), for the checkpoint's JSON."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dict(values, vocabulary=list(self.vocabulary.words))

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        legacy_statistics(values)
        if "sgate" in values:  # its name until the flag and the layers' name were one
            values["use_sentinel"] = values.pop("sgate")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown captioner config fields: {', '.join(unknown)}.")
        return cls(**{"model_version": 1, **values})  # configs before version 2 had none

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def legacy_statistics(values):
    """Takes the feature statistics out of a config dict saved before they were weights
    (``feature_scale``, ``feature_center``), sets ``standardize`` from them, and returns them as
    ``(scale, center or None)``, or None when ``values`` has none."""
    if "feature_scale" not in values and "feature_center" not in values:
        return None
    scale, center = values.pop("feature_scale", None), values.pop("feature_center", None)
    if scale is None:
        return None
    values["standardize"] = "channel" if center is None else "position"
    return scale, center
