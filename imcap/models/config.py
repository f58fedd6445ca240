"""The one typed description of a captioner, stored inside every checkpoint."""

import dataclasses

# kept free of Keras imports, so that command-line help and config checks start fast
CNN_NAMES = ("resnet", "vgg16", "vgg19")
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
MODEL_VERSION = 2  # 2: the seed's final model (issue 14); 1: before, an earlier revision's


@dataclasses.dataclass
class CaptionerConfig:
    """Everything needed to rebuild a captioner; ``Captioner(config)`` builds it.

    The vocabulary comes from the preprocessed JSON (``ix_to_word``), so the output size is never
    a flag to keep in sync: ``vocab_size`` is ``len(vocabulary) + 1`` (id 0 is padding).

    Attributes:
        vocabulary: words of ids 1..V-1, in id order (``<start>``, ``<eos>``, ``UNK`` included).
        max_length: caption length of the training data, markers included (decoding limit).
        input_images: the model takes images and runs the CNN (``True``) or takes precomputed
            region features (``False``, stage 1 from a feature cache).
        cnn, cnn_weights, cnn_layer, image_size: the encoder (see ``build_encoder``).
        num_regions, feature_dim: K and D of the region features (filled in from the encoder
            when ``input_images``; required otherwise).
        emb_dim, z_dim, lstm_dim: the seed's ``-emb_dim``, ``-z_dim``, ``-lstm_dim``.
        dr_ratio: the LSTM's recurrent dropout, one mask per gate (the seed's ``-dr_ratio``, always
            on; its input dropout never took effect), and the rate of ``dropout_layers``.
        dropout_layers: the seed's ``--dr``: dropout at rate ``dr_ratio`` after the image
            projections, the word embedding, the LSTM input, inside the attention and after the
            output MLP.
        sgate: adaptive attention with the visual sentinel (``--sgate``).
        attention: spatial attention (``False`` is the seed's ``--lstm`` baseline).
        sent_dropout: fraction of training captions whose sentinel is switched off.
        position_embedding: add a learned position embedding to the region features.
        feature_scale, feature_center: standardisation statistics of the training split
            (``FeatureStandardization``); None to use raw features.
        dtype_policy: ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
        model_version: 2, the seed's final model; a checkpoint without it was saved by an
            earlier imcap (version 1: tanh ``zh_embed``, relu ``zs_embed``, ``--dr`` before the
            output MLP and not on the LSTM input, LSTM input dropout, one recurrent mask) and
            is refused rather than silently computed another way.
    """

    vocabulary: list
    max_length: int = 18
    input_images: bool = True
    cnn: str = "resnet"
    cnn_weights: str = "imagenet"
    cnn_layer: str = None
    image_size: int = 256
    num_regions: int = None
    feature_dim: int = None
    emb_dim: int = 512
    z_dim: int = 512
    lstm_dim: int = 512
    dr_ratio: float = 0.5
    dropout_layers: bool = False
    sgate: bool = False
    attention: bool = True
    sent_dropout: float = 0.0
    position_embedding: bool = False
    feature_scale: list = None
    feature_center: list = None
    dtype_policy: str = "float32"
    model_version: int = MODEL_VERSION

    def __post_init__(self):
        if self.model_version != MODEL_VERSION:
            raise ValueError(
                f"the model was saved by an earlier imcap (model version {self.model_version}, "
                f"this one computes version {MODEL_VERSION}): its zh_embed (tanh) and zs_embed "
                f"(relu) are linear now, and its LSTM and --dr dropouts moved to where "
                f"imcap_keras HEAD has them; train it again")
        if not self.vocabulary or not all(isinstance(w, str) for w in self.vocabulary):
            raise ValueError("vocabulary must be a non-empty list of words (ids 1..V-1).")
        self.vocabulary = list(self.vocabulary)
        for word in ("<start>", "<eos>"):
            if word not in self.vocabulary:
                raise ValueError(f"vocabulary must contain {word!r}, as prepro_coco.py writes it.")
        if self.cnn not in CNN_NAMES:
            raise ValueError(f"cnn must be one of {', '.join(CNN_NAMES)}, got {self.cnn!r}.")
        if self.dtype_policy not in DTYPE_POLICIES:
            raise ValueError(f"dtype_policy must be one of {', '.join(DTYPE_POLICIES)}, "
                             f"got {self.dtype_policy!r}.")
        for name in ("emb_dim", "z_dim", "lstm_dim", "max_length", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("dr_ratio", "sent_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.sent_dropout and not (self.sgate and self.attention):
            raise ValueError("sent_dropout needs the sentinel: set sgate (and not the --lstm "
                             "baseline).")
        if not self.input_images and not (self.num_regions and self.feature_dim):
            raise ValueError("a captioner on precomputed features needs num_regions and "
                             "feature_dim.")

    @property
    def vocab_size(self):
        return len(self.vocabulary) + 1

    @property
    def start_id(self):
        return self.vocabulary.index("<start>") + 1

    @property
    def end_id(self):
        return self.vocabulary.index("<eos>") + 1

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown captioner config fields: {', '.join(unknown)}.")
        return cls(**{"model_version": 1, **values})  # configs before version 2 had none

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
