"""CIDEr-D as coco-caption computes it, for self-critical training's reward: the references'
document frequencies come from a fixed corpus (the training split), computed once, and each
candidate is scored against its image's references without Java and without re-counting them.

coco-caption's ``CiderScorer`` (pycocoevalcap/cider/cider_scorer.py), which this follows term by
term: n-grams n = 1..4 of whitespace-separated tokens; a text's vector holds, per n-gram, its
count times ``log(N) - log(max(1, df))`` (N the number of reference documents, df the number
of documents (images) whose references hold the n-gram); the similarity of a candidate and one
reference is, per n, ``sum min(v_c, v_r) * v_r / (|v_c| |v_r|)`` (0 when a norm is 0) times
``exp(-(l_c - l_r)^2 / (2 sigma^2))``, sigma 6, where a text's length l is its number of
*bigrams* (coco-caption's ``if n == 1: length += term_freq``, kept); an image's score is the
mean over n and over its references, times 10.
"""

import collections
import math

import numpy as np


def ngram_counts(text, n=4):
    """Counts of the 1..n-grams of a whitespace-tokenised ``text``."""
    words = text.split()
    counts = collections.Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


class CiderD:
    """CIDEr-D against fixed references and their document frequencies.

    Args:
        references: ``{image_id: [caption, ...]}``, captions as tokenised text (lowercase words
            separated by spaces, as pycocoevalcap's PTB tokenizer leaves them). Its images are
            the corpus of the document frequencies.
        n: the longest n-gram (4).
        sigma: the length penalty's spread (6).
        document_frequency: ``{n-gram tuple: images}`` of ``references`` stored by an
            earlier ``CiderD`` (``document_frequency`` attribute), or None to count them.
    """

    def __init__(self, references, n=4, sigma=6.0, document_frequency=None):
        if not references:
            raise ValueError("CiderD needs references for at least one image, got none.")
        self.n, self.sigma = n, float(sigma)
        self.captions = references
        counted = {image_id: [ngram_counts(c, n) for c in captions]
                   for image_id, captions in references.items()}
        if document_frequency is None:
            document_frequency = collections.Counter()
            for refs in counted.values():
                document_frequency.update({g for ref in refs for g in ref})
        self.document_frequency = collections.Counter(document_frequency)
        self.log_documents = math.log(float(len(counted)))
        # each reference as (tf-idf vector per n, norms, length), computed once
        self.references = {image_id: [self._vector(ref) for ref in refs]
                           for image_id, refs in counted.items()}

    def _vector(self, counts):
        # plain floats, not NumPy: these run per caption, where NumPy's per-call cost dominates
        vector = [{} for _ in range(self.n)]
        norms = [0.0] * self.n
        length = 0
        df, log_documents = self.document_frequency, self.log_documents
        for gram, count in counts.items():
            order = len(gram) - 1
            weight = float(count) * (log_documents - math.log(max(1.0, float(df.get(gram, 0)))))
            vector[order][gram] = weight
            norms[order] += weight * weight
            if order == 1:  # coco-caption counts bigrams as the length
                length += count
        return vector, [math.sqrt(x) for x in norms], length

    def _similarity(self, candidate, reference):
        (vec_c, norm_c, len_c), (vec_r, norm_r, len_r) = candidate, reference
        penalty = math.exp(-(float(len_c - len_r) ** 2) / (2 * self.sigma ** 2))
        values = []
        for order in range(self.n):
            ref, value = vec_r[order], 0.0
            for gram, weight in vec_c[order].items():
                ref_weight = ref.get(gram, 0.0)
                value += min(weight, ref_weight) * ref_weight
            if norm_c[order] != 0 and norm_r[order] != 0:
                value /= norm_c[order] * norm_r[order]
            values.append(value * penalty)
        return values

    def score(self, image_id, caption):
        """CIDEr-D of ``caption`` (tokenised text) for ``image_id``'s references."""
        refs = self.references.get(image_id)
        if refs is None:
            raise KeyError(f"image {image_id} has no references in this CiderD")
        candidate = self._vector(ngram_counts(caption, self.n))
        total = [0.0] * self.n
        for reference in refs:
            for order, value in enumerate(self._similarity(candidate, reference)):
                total[order] += value
        return sum(total) / self.n / len(refs) * 10.0

    def scores(self, image_ids, captions):
        """(B,) float64: ``score`` of each caption for the image at the same position."""
        return np.array([self.score(i, c) for i, c in zip(image_ids, captions)])
