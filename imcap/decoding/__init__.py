"""Decoding captions with the captioner's step function: greedy, sampling and beam search,
each one compiled function over a batch of images, starting from ``<start>`` (imcap_keras fed
word 0).

Every decoder runs at most ``max_length - 1`` steps (the caption length of the training data
includes ``<start>``; ``-seqlen``), never emits padding or ``<start>``, stops early once every
caption has ended, and returns per word the attention over the regions (alpha) and the sentinel
weight (beta) of the chosen path. ``suppress_eos`` forbids ``<eos>`` (benchmarks use it to run
every step). A caption has at least one word: ``<eos>`` cannot come first. A captioner with
``variable_regions`` takes the count of real regions too: ``decode(features, num_regions=...)``.
"""


from imcap.decoding.base import Decoder
from imcap.decoding.beam_search import BeamSearchDecoder
from imcap.decoding.greedy import GreedyDecoder, SamplingDecoder

__all__ = ["BeamSearchDecoder", "Decoder", "GreedyDecoder", "SamplingDecoder", "make_decoder"]


def make_decoder(model, beam_size=1, temperature=None, max_length=None, length_penalty=0.0,
                 seed=0, from_features=False, suppress_eos=False, ban_unk=False,
                 remove_bad_endings=False, block_trigrams=False):
    """Sampling (``temperature`` > 0), beam search (``beam_size`` > 1) or greedy decoding;
    ``ban_unk``, ``remove_bad_endings`` and ``block_trigrams`` as ``Decoder`` takes them."""
    options = {"ban_unk": ban_unk, "remove_bad_endings": remove_bad_endings,
               "block_trigrams": block_trigrams}
    if temperature is not None and temperature > 0:
        return SamplingDecoder(model, max_length, from_features, suppress_eos,
                               temperature=temperature, seed=seed, **options)
    if beam_size > 1:
        return BeamSearchDecoder(model, beam_size, max_length, from_features, suppress_eos,
                                 length_penalty=length_penalty, **options)
    return GreedyDecoder(model, max_length, from_features, suppress_eos, **options)
