"""Greedy, sampling and beam-search decoding: beam 1 = greedy, beam search beats greedy where
it should, the exhaustive optimum for a wide beam, and scores equal to the model's own."""

import itertools
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from imcap.models.captioner import Captioner
from imcap.models.config import CaptionerConfig
from imcap.decoding import BeamSearchDecoder, GreedyDecoder, SamplingDecoder, make_decoder
from imcap.decoding.base import repeated_trigrams
from imcap.data.vocabulary import Vocabulary
from tests.conftest import sharpen_logits

VOCAB = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]
START, END = 1, 7


def random_captioner(use_sentinel=True, seed=0):
    keras.utils.set_random_seed(seed)
    model = Captioner(CaptionerConfig(vocabulary=VOCAB, input_images=False, num_regions=6,
                                      feature_dim=10, emb_dim=8, z_dim=9, lstm_dim=7,
                                      dr_ratio=0.0, use_sentinel=use_sentinel))
    return sharpen_logits(model, seed, END)


def features(batch=12, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 6, 10)).astype("float32")


@pytest.mark.parametrize("sgate", [True, False])
def test_beam_1_equals_greedy_exactly(sgate):
    model = random_captioner(sgate)
    x = features()
    greedy = GreedyDecoder(model, 12).decode(x)
    beam = BeamSearchDecoder(model, 1, 12).decode(x)
    lengths = [(row != 0).sum() for row in greedy["words"]]
    assert len(set(lengths)) > 2  # captions of several lengths, some ended by <eos>
    np.testing.assert_array_equal(beam["words"], greedy["words"])
    assert (greedy["words"][:, 0] != END).all() and (greedy["words"][:, 0] != 0).all()
    # the same numbers, computed on differently shaped batches: equal to float32 rounding
    for key in ("alpha", "beta"):
        np.testing.assert_allclose(beam[key], greedy[key], atol=1e-6)
        assert (greedy[key][greedy["words"] == 0] == 0).all()  # nothing after <eos>
    np.testing.assert_allclose(beam["log_prob"], greedy["log_prob"], rtol=1e-6)


def test_decoded_scores_and_attention_equal_the_teacher_forced_model():
    """The log-probability a decoder reports is the full-sequence model's for those words."""
    model = random_captioner()
    x = features()
    for decoder in (GreedyDecoder(model, 12), BeamSearchDecoder(model, 3, 12)):
        out = decoder.decode(x)
        words = out["words"]
        inputs = np.concatenate([np.full((len(words), 1), START), words[:, :-1]], axis=1)
        logits = model({"features": x, "words": inputs[:, None]})[:, 0].numpy()
        log_probs = tf.nn.log_softmax(logits).numpy()
        for row, ids in enumerate(words):
            n = (ids != 0).sum()
            expected = log_probs[row, np.arange(n), ids[:n]].sum()
            assert out["log_prob"][row] == pytest.approx(expected, abs=1e-4)
        alpha_sum = out["alpha"].sum(-1) + out["beta"]
        for row, ids in enumerate(words):
            np.testing.assert_allclose(alpha_sum[row, :(ids != 0).sum()], 1.0, atol=1e-5)


class MarkovModel:
    """A fake captioner whose next-word distribution depends on the previous word only:
    ``table[previous]`` holds log-probabilities over the vocabulary (id 0 is padding)."""

    def __init__(self, table):
        table = np.log(np.asarray(table, dtype=np.float64) + 1e-30).astype(np.float32)
        self.table = tf.constant(table)
        # ids 1..V-1: <start>, words, and <eos> last (id V - 1)
        words = ["<start>"] + list("abcdefgh"[:len(table) - 3]) + ["<eos>"]
        self.config = SimpleNamespace(vocabulary=Vocabulary(words), num_regions=0,
                                      attention=False, use_sentinel=False, max_length=8)

    def encode(self, inputs, from_features=False):
        return {"inputs": tf.convert_to_tensor(inputs)}

    def initial_state(self, rows):
        return [tf.zeros((rows, 1))]

    def step_weights(self):
        return None

    def step(self, encoded, words, state, weights=None):
        return tf.gather(self.table, words), state, None, None


# ids: 1 <start>, 2 a, 3 b, 4 c, 5 <eos>. Greedy: a (0.6), then c (0.3), then <eos> (1.0):
# 0.18. The best caption is "b <eos>": 0.4 x 0.9 = 0.36.
TRAP = [[0, 0, 0, 0, 0, 0],
        [0, 0, 0.6, 0.4, 0, 0],          # after <start>
        [0, 0, 0.25, 0.2, 0.3, 0.25],    # after a
        [0, 0, 0.05, 0.05, 0, 0.9],      # after b
        [0, 0, 0, 0, 0, 1.0],            # after c
        [0, 0, 0.2, 0.2, 0.2, 0.4]]      # after <eos> (never used)


def test_beam_search_finds_a_better_caption_than_greedy():
    model = MarkovModel(TRAP)
    x = np.zeros((2, 1), np.float32)
    greedy = GreedyDecoder(model, 6).decode(x)
    beam = BeamSearchDecoder(model, 3, 6).decode(x)
    assert greedy["words"][0].tolist() == [2, 4, 5, 0, 0]
    assert beam["words"][0].tolist() == [3, 5, 0, 0, 0]
    assert np.exp(greedy["log_prob"][0]) == pytest.approx(0.18, rel=1e-5)
    assert np.exp(beam["log_prob"][0]) == pytest.approx(0.36, rel=1e-5)
    assert BeamSearchDecoder(model, 3, 6).to_captions(beam["words"]) == ["b", "b"]


def exhaustive_best(table, steps, length_penalty=0.0):
    """The best caption of a MarkovModel by trying every word sequence (the first of ties)."""
    log_table = np.log(np.asarray(table) + 1e-30)
    end, best = len(table) - 1, (-np.inf, None)
    for length in range(1, steps + 1):
        for words in itertools.product(range(2, len(table)), repeat=length):
            if end in words[:-1] or (words[-1] != end and length < steps) or words[0] == end:
                continue  # a caption has a word, ends with <eos> or is cut at the maximum length
            previous = (1,) + words[:-1]
            score = sum(log_table[p, w] for p, w in zip(previous, words))
            normalized = score / length ** length_penalty if length_penalty else score
            if normalized > best[0] + 1e-9:
                best = (normalized, list(words))
    return best[1]


def caption_score(table, words, length_penalty=0.0):
    log_table = np.log(np.asarray(table) + 1e-30)
    score = sum(log_table[p, w] for p, w in zip([1] + words[:-1], words))
    return score / len(words) ** length_penalty


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_a_wide_beam_finds_the_exhaustive_optimum(length_penalty):
    """81 beams hold every prefix of 3 words x 4 steps: the search is exhaustive."""
    rng = np.random.default_rng(5)
    for trial in range(4):
        table = rng.dirichlet(np.full(6, 0.5), size=6)
        table[:, :2] = 0  # never padding or <start>
        table /= table.sum(1, keepdims=True)
        model = MarkovModel(table)
        out = BeamSearchDecoder(model, 81, 6, length_penalty=length_penalty).decode(
            np.zeros((1, 1), np.float32))
        words = [int(w) for w in out["words"][0] if w]
        best = exhaustive_best(table, 5, length_penalty)
        # the optimum's score (Markov captions can tie: a b a and a a b score the same)
        assert caption_score(table, words, length_penalty) == pytest.approx(
            caption_score(table, best, length_penalty), abs=1e-5), trial
        assert out["log_prob"][0] == pytest.approx(caption_score(table, words), abs=1e-4)


def test_length_normalisation_prefers_the_longer_caption():
    # "b <eos>" 0.5 x 0.5 = 0.25 is the most likely caption; per word, "a c c ..." is better
    table = [[0, 0, 0, 0, 0, 0],
             [0, 0, 0.5, 0.5, 0, 0],
             [0, 0, 0, 0.1, 0.9, 0],
             [0, 0, 0.4, 0.1, 0, 0.5],
             [0, 0, 0, 0, 0.6, 0.4],
             [0, 0, 0.2, 0.2, 0.2, 0.4]]
    model = MarkovModel(table)
    x = np.zeros((1, 1), np.float32)
    plain = BeamSearchDecoder(model, 2, 6).decode(x)["words"][0]
    normalized = BeamSearchDecoder(model, 2, 6, length_penalty=1.0).decode(x)["words"][0]
    assert plain.tolist() == [3, 5, 0, 0, 0] == exhaustive_best(table, 5) + [0, 0, 0]
    assert normalized.tolist() == exhaustive_best(table, 5, 1.0) == [2, 4, 4, 4, 4]


def test_suppressed_eos_runs_every_step():
    model = random_captioner()
    for decoder in (GreedyDecoder(model, 9, suppress_eos=True),
                    BeamSearchDecoder(model, 3, 9, suppress_eos=True)):
        words = decoder(features())
        assert words.shape == (12, 8) and (words != 0).all() and (words != END).all()
        assert (words != START).all()


def test_sampling_is_seeded_and_cold_sampling_is_greedy():
    model = random_captioner()
    x = features()
    greedy = GreedyDecoder(model, 12)(x)
    np.testing.assert_array_equal(SamplingDecoder(model, 12, temperature=1e-4)(x), greedy)
    first = SamplingDecoder(model, 12, temperature=1.0, seed=3)(x)
    np.testing.assert_array_equal(SamplingDecoder(model, 12, temperature=1.0, seed=3)(x), first)
    assert not np.array_equal(SamplingDecoder(model, 12, temperature=1.0, seed=4)(x), first)
    assert isinstance(make_decoder(model, temperature=0.7), SamplingDecoder)
    assert type(make_decoder(model, temperature=-1)) is GreedyDecoder
    with pytest.raises(ValueError, match="temperature must be positive"):
        SamplingDecoder(model, 12, temperature=0.0)
    assert not np.array_equal(first, greedy)


@pytest.mark.parametrize("decoder", ["greedy", "sampling"])
def test_repeat_decodes_each_image_encoded_once_as_the_repeated_batch(decoder):
    """``graph(x, repeat=n)`` (SCST's n samples per image, each image encoded once) gives what
    decoding ``tf.repeat(x, n)`` gives: the same words (sampling: the same draws), and the
    same log-probabilities, attention and sentinel weights to float32 rounding."""
    model = random_captioner()
    x = tf.constant(features(batch=4))
    make = {"greedy": lambda: GreedyDecoder(model, 12),
            "sampling": lambda: SamplingDecoder(model, 12, temperature=1.0, seed=5)}[decoder]
    repeated = tf.function(lambda: make().graph(x, call=2, repeat=3))()
    expected = tf.function(lambda: make().graph(tf.repeat(x, 3, axis=0), call=2))()
    assert repeated["words"].shape == (12, 11)
    np.testing.assert_array_equal(repeated["words"].numpy(), expected["words"].numpy())
    if decoder == "sampling":  # three different draws of the first image
        assert len({tuple(row) for row in repeated["words"].numpy()[:3]}) > 1
    for key in ("log_prob", "alpha", "beta"):
        np.testing.assert_allclose(repeated[key].numpy(), expected[key].numpy(), atol=1e-6)


def test_bad_decoder_settings():
    model = random_captioner()
    with pytest.raises(ValueError, match="beam size must be at least 1"):
        BeamSearchDecoder(model, 0)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        GreedyDecoder(model, 1)


def test_a_trained_tiny_model_captions_what_it_was_taught():
    """Trained with teacher forcing to say one caption per kind of image, the model's greedy
    and beam-search captions are those captions (and beta stays a probability)."""
    vocabulary = ["<start>", "a", "red", "blue", "circle", "square", "<eos>", "UNK"]
    taught = {0: "a red circle", 1: "a blue square", 2: "a red square"}
    ids = {w: i + 1 for i, w in enumerate(vocabulary)}
    keras.utils.set_random_seed(0)
    model = Captioner(CaptionerConfig(vocabulary=vocabulary, input_images=False, num_regions=4,
                                      feature_dim=6, emb_dim=16, z_dim=16, lstm_dim=16,
                                      dr_ratio=0.0, use_sentinel=True, max_length=6))
    rng = np.random.default_rng(0)
    kinds = rng.integers(0, 3, size=96)
    x = rng.normal(scale=0.1, size=(96, 4, 6)).astype("float32")
    x[np.arange(96), kinds, kinds] += 2.0  # the kind shows in one region and channel
    words = np.zeros((96, 1, 5), "int32")
    for n, kind in enumerate(kinds):
        tokens = ["<start>"] + taught[kind].split() + ["<eos>"]
        words[n, 0, :len(tokens)] = [ids[t] for t in tokens]
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit({"features": x, "words": words[..., :-1]}, words[..., 1:],
              sample_weight=(words[..., 1:] > 0).astype("float32"), batch_size=32, epochs=40,
              verbose=0)
    expected = [taught[k] for k in kinds[:12]]
    for decoder in (GreedyDecoder(model), BeamSearchDecoder(model, 3)):
        out = decoder.decode(x[:12])
        assert decoder.to_captions(out["words"]) == expected
        assert ((out["beta"] >= 0) & (out["beta"] <= 1)).all()


@pytest.mark.slow
def test_the_default_encoder_decodes_from_images_more_than_once():
    """Issue 13: ResNet-50 from images at 224 px, 8 images (the smallest size found to fail):
    the second call of the same greedy decoder raised AlreadyExistsError, because Grappler's
    memory optimizer turned the LSTM step's x W + h U + c into a TemporaryVariable that the
    loop's exit leaked. 192 px at 8 images, or 128 px at 16, never failed."""
    keras.utils.set_random_seed(0)
    model = Captioner(CaptionerConfig(vocabulary=VOCAB, cnn_weights="none", image_size=224,
                                      use_sentinel=True, dr_ratio=0.0))
    decoder = GreedyDecoder(model)
    images = np.random.default_rng(0).uniform(-100, 100, (8, 224, 224, 3)).astype("float32")
    first = decoder.decode(images)
    second = decoder.decode(images[::-1])
    third = decoder.decode(images)
    np.testing.assert_array_equal(second["words"], first["words"][::-1])
    np.testing.assert_array_equal(third["words"], first["words"])


def ends_badly(words):
    """Whether a row of word ids ends with 'a' right before <eos>."""
    row = [int(w) for w in words if w]
    return END in row and row.index(END) > 0 and row[row.index(END) - 1] == VOCAB.index("a") + 1


@pytest.mark.parametrize("beam_size, temperature", [(1, None), (3, None), (1, 1.0)],
                         ids=["greedy", "beam3", "sampling"])
def test_ban_unk_and_remove_bad_endings(beam_size, temperature):
    """-ban_unk: no UNK; -remove_bad_endings: no caption ends 'a <eos>'. The model is made to
    like UNK and 'a' (sampling then ends captions with 'a'), so the options remove something."""
    model = random_captioner(seed=3)
    bias = model.get_layer("logits").bias
    value = bias.numpy()
    value[VOCAB.index("UNK") + 1] += 0.5
    value[VOCAB.index("a") + 1] += 1.0
    value[END] += 1.0
    bias.assign(value)
    x = features(batch=24, seed=1)
    unk = VOCAB.index("UNK") + 1
    plain = make_decoder(model, beam_size, temperature, seed=5, from_features=True)(x)
    assert (plain == unk).any()
    if temperature:
        assert any(ends_badly(row) for row in plain)
    decoder = make_decoder(model, beam_size, temperature, seed=5, from_features=True,
                           ban_unk=True, remove_bad_endings=True)
    banned = decoder(x)
    assert not (banned == unk).any()
    assert not any(ends_badly(row) for row in banned)
    assert (banned[:, 0] != 0).all()  # still a word first
    # the step every decoder takes: no <eos> right after 'a', after other words as before
    encoded = model.encode(x[:2], from_features=True)
    state = model.initial_state(2)
    after = {word: decoder._step(encoded, tf.constant([VOCAB.index(word) + 1] * 2), state,
                                 tf.constant(1))[0].numpy()[:, END] for word in ("a", "red")}
    assert np.isneginf(after["a"]).all() and np.isfinite(after["red"]).all()


def trigrams(row):
    words = [int(w) for w in row if w]
    words = words[:words.index(END)] if END in words else words
    return [tuple(words[i:i + 3]) for i in range(len(words) - 2)]


def test_repeated_trigrams_equal_a_python_count():
    """The words banned at step t are exactly those completing a trigram already present in
    the words of steps 0..t-1 (random histories over 4 words, so repeats are common)."""
    rng = np.random.default_rng(0)
    history = rng.integers(1, 5, size=(64, 9)).astype("int32")
    for t in range(9):
        got = repeated_trigrams(tf.constant(history), tf.constant(t), 6).numpy()
        for row, banned in zip(history, got):
            seen = {tuple(row[i:i + 3]) for i in range(t - 2)}
            expected = {w for w in range(6) if t >= 2 and (row[t - 2], row[t - 1], w) in seen}
            assert set(np.flatnonzero(banned)) == expected, (row, t)


@pytest.mark.parametrize("beam_size, temperature", [(1, None), (3, None), (1, 1.0)],
                         ids=["greedy", "beam3", "sampling"])
def test_block_trigrams_leaves_no_caption_repeating_a_trigram(beam_size, temperature):
    """A model made to like 'a' and 'red' and never to end repeats trigrams in every decoder;
    --block_trigrams removes every repeat, and changes nothing before the first one."""
    model = random_captioner(seed=4)
    bias = model.get_layer("logits").bias
    value = bias.numpy()
    value[VOCAB.index("a") + 1] += 2.0
    value[VOCAB.index("red") + 1] += 2.0
    bias.assign(value)
    x = features(batch=12, seed=2)
    options = dict(seed=5, from_features=True, suppress_eos=True)
    plain = make_decoder(model, beam_size, temperature, **options)(x)
    assert all(len(trigrams(row)) > len(set(trigrams(row))) for row in plain)
    blocked = make_decoder(model, beam_size, temperature, block_trigrams=True, **options)(x)
    for row in blocked:
        assert len(trigrams(row)) == len(set(trigrams(row))) > 0, row
    if beam_size == 1 and temperature is None:  # greedy: the same words up to the first repeat
        for a, b in zip(plain, blocked):
            seen, first = set(), len(a)
            for i, gram in enumerate(trigrams(a)):
                if gram in seen:
                    first = i + 2
                    break
                seen.add(gram)
            np.testing.assert_array_equal(a[:first], b[:first])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batches_of_any_size_share_one_trace(beam_size):
    """A split's batches (here 5, 5 and a last one of 2) are decoded by one traced graph,
    which gives each batch what a decoder used for that batch alone gives."""
    model = random_captioner()
    x = features()
    decoder = make_decoder(model, beam_size, max_length=12)
    outputs = [decoder.decode(batch) for batch in (x[:5], x[5:10], x[10:])]
    assert decoder._decode.experimental_get_tracing_count() == 1
    alone = make_decoder(model, beam_size, max_length=12).decode(x[10:])
    np.testing.assert_array_equal(outputs[-1]["words"], alone["words"])
    np.testing.assert_allclose(outputs[-1]["log_prob"], alone["log_prob"], rtol=1e-6)
