"""CIDEr-D for self-critical rewards equals pycocoevalcap's Cider per image when both use the
same references and document frequencies."""

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from imcap.evaluation.cider_reward import CiderD, ngram_counts

REFERENCES = {
    1: ["a red square above a blue circle", "a red square and a blue circle",
        "there is a red square over a blue circle"],
    2: ["a green triangle", "a small green triangle on the left", "one green triangle"],
    3: ["two yellow circles next to a red square", "a red square and two yellow circles"],
    4: ["a blue square", "a blue square in the middle"],
}
CANDIDATES = {
    1: "a red square above a blue circle",  # one of its references
    2: "a a a a green green green triangle triangle",  # repeated n-grams, clipped
    3: "red",  # far shorter than its references
    4: "zebra giraffe elephant " * 10,  # no overlap, and far longer
}


def test_scores_equal_pycocoevalcap_per_image():
    ids = sorted(REFERENCES)
    _, expected = Cider().compute_score(REFERENCES, {i: [CANDIDATES[i]] for i in ids})
    got = CiderD(REFERENCES).scores(ids, [CANDIDATES[i] for i in ids])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert got[3] == 0.0 and got[0] > got[2] > 0  # no overlap scores nothing


def test_other_captions_of_the_same_images_also_match():
    rng = np.random.default_rng(0)
    words = sorted({w for caps in REFERENCES.values() for c in caps for w in c.split()})
    ids = sorted(REFERENCES)
    scorer = CiderD(REFERENCES)
    for _ in range(20):
        captions = [" ".join(rng.choice(words, rng.integers(1, 14))) for _ in ids]
        _, expected = Cider().compute_score(REFERENCES, {i: [c] for i, c in zip(ids, captions)})
        np.testing.assert_allclose(scorer.scores(ids, captions), expected, rtol=0, atol=1e-9)


def test_document_frequencies_come_from_the_corpus_not_the_batch():
    """The reward of an image does not depend on which other images share the batch."""
    scorer = CiderD(REFERENCES)
    alone = scorer.scores([2], [CANDIDATES[2]])
    together = scorer.scores([1, 2], [CANDIDATES[1], CANDIDATES[2]])
    assert alone[0] == together[1]
    assert scorer.document_frequency[("a",)] == 4 and scorer.document_frequency[("green",)] == 1


def test_ngrams_and_errors():
    assert ngram_counts("a a b")[("a",)] == 2 and ngram_counts("a a b")[("a", "a", "b")] == 1
    with pytest.raises(KeyError, match="image 9 has no references"):
        CiderD(REFERENCES).score(9, "a")
    with pytest.raises(ValueError, match="at least one image"):
        CiderD({})
