"""Caption text processing of imcap_keras' (NeuralTalk2-style) ``prepro_coco.py``, under Python 3.

The rules, kept exactly so that the files written here equal imcap_keras' files:

* a caption is lower-cased, every ASCII punctuation character is deleted (no space is put in its
  place: ``"dog's"`` becomes ``"dogs"``), and it is split on white space;
* ``<start>`` and ``<eos>`` are added to every caption and count as ordinary words;
* a word is kept if it occurs strictly more than ``word_count_threshold`` times; every other word
  becomes ``UNK``, which is appended as the last vocabulary word, and only if some word needed it;
* vocabulary indices are 1-based, in the order in which words first occur over the (shuffled)
  captions; index 0 is padding;
* captions are clipped to ``max_length`` words, markers included (a clipped caption loses ``<eos>``).
"""

import string

import numpy as np

from imcap.utils.fileio import DataError

START = "<start>"
END = "<eos>"
UNK = "UNK"

_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokenize(caption):
    """Returns imcap_keras' token list for one raw caption, markers included."""
    words = str(caption).lower().translate(_DELETE_PUNCTUATION).strip().split()
    return [START] + words + [END]


class Vocabulary:
    """The words a captioner reads and writes: id 0 is padding, ids 1..V-1 are ``words`` in
    order (the JSON's ``ix_to_word``), ``<start>`` and ``<eos>`` among them.

    Attributes:
        words: the words of ids 1..V-1, a tuple.
        size: V, the number of ids (the words and the padding).
        start_id, end_id: the ids of ``<start>`` and ``<eos>``; unk_id: of ``UNK``, or None.
    """

    def __init__(self, words):
        words = tuple(words)
        if not words or not all(isinstance(w, str) for w in words):
            raise ValueError("vocabulary must be a non-empty list of words (ids 1..V-1).")
        for word in (START, END):
            if word not in words:
                raise ValueError(f"vocabulary must contain {word!r}, as prepro_coco.py writes "
                                 f"it.")
        self.words = words
        self._ids = {}
        for i, word in enumerate(words):
            self._ids.setdefault(word, i + 1)

    @classmethod
    def from_ix_to_word(cls, ix_to_word, source):
        """From the JSON's ``ix_to_word`` (``{"1": word, ...}``); ``source`` names the file
        in errors."""
        try:
            by_id = {int(ix): word for ix, word in ix_to_word.items()}
        except (TypeError, ValueError, AttributeError):
            raise DataError(f"vocabulary json {source}: 'ix_to_word' must map word ids to "
                            f"words") from None
        if sorted(by_id) != list(range(1, len(by_id) + 1)):
            raise DataError(f"vocabulary json {source}: 'ix_to_word' must number its words "
                            f"1..{len(by_id)} without gaps")
        try:
            return cls(by_id[i] for i in range(1, len(by_id) + 1))
        except ValueError as e:
            raise DataError(f"vocabulary json {source}: {e}") from None

    @property
    def size(self):
        return len(self.words) + 1

    @property
    def start_id(self):
        return self._ids[START]

    @property
    def end_id(self):
        return self._ids[END]

    @property
    def unk_id(self):
        return self._ids.get(UNK)

    def word_id(self, word):
        """The id of ``word``, or None when the vocabulary does not hold it."""
        return self._ids.get(word)

    def word(self, word_id):
        return self.words[word_id - 1]

    def ids_to_words(self, ids, keep_end=False):
        """The words of a row of ids, up to ``<eos>`` (kept with ``keep_end``) or padding."""
        words = []
        for word_id in ids:
            word_id = int(word_id)
            if word_id == self.end_id:
                if keep_end:
                    words.append(END)
                break
            if word_id == 0:
                break
            words.append(self.words[word_id - 1])
        return words

    def to_caption(self, ids):
        """The caption string of a row of ids (``ids_to_words`` joined by spaces)."""
        return " ".join(self.ids_to_words(ids))

    def first_difference(self, other):
        """The first id (1-based) whose word differs from ``other``'s, or None if equal."""
        if self == other:
            return None
        pairs = zip(self.words, other.words)
        return next((i + 1 for i, (a, b) in enumerate(pairs) if a != b),
                    min(len(self.words), len(other.words)) + 1)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.words == other.words

    def __hash__(self):
        return hash(self.words)

    def __len__(self):
        return len(self.words)

    def __repr__(self):
        return f"Vocabulary({len(self.words)} words)"


def count_words(token_lists):
    """Counts words over token lists; the dict keeps first-occurrence order."""
    counts = {}
    for tokens in token_lists:
        for word in tokens:
            counts[word] = counts.get(word, 0) + 1
    return counts


def build_vocab(counts, word_count_threshold):
    """Returns the vocabulary list (index ``i`` is word id ``i + 1``) for word ``counts``.

    Words are kept when ``count > word_count_threshold``, in first-occurrence order; ``UNK`` is
    appended when at least one word fell under the threshold.
    """
    vocab = [word for word, count in counts.items() if count > word_count_threshold]
    if len(vocab) < len(counts):
        vocab.append(UNK)
    return vocab


def apply_unk(tokens, counts, word_count_threshold):
    """Replaces every word at or under the threshold by ``UNK``."""
    return [w if counts.get(w, 0) > word_count_threshold else UNK for w in tokens]


def encode_captions(captions_per_image, word_to_ix, max_length):
    """Encodes captions into the NeuralTalk2 arrays.

    Args:
        captions_per_image: one list of final token lists (``UNK`` applied) per image.
        word_to_ix: 1-based word ids.
        max_length: the number of words kept per caption, markers included.

    Returns:
        ``labels`` (M, max_length) uint32 zero-padded, ``label_start_ix`` and ``label_end_ix``
        (N,) uint32 1-based inclusive pointers into ``labels``, ``label_length`` (M,) uint32.
    """
    num_images = len(captions_per_image)
    num_captions = sum(len(captions) for captions in captions_per_image)
    labels = np.zeros((num_captions, max_length), dtype="uint32")
    label_length = np.zeros(num_captions, dtype="uint32")
    label_start_ix = np.zeros(num_images, dtype="uint32")
    label_end_ix = np.zeros(num_images, dtype="uint32")
    row = 0
    for i, captions in enumerate(captions_per_image):
        label_start_ix[i] = row + 1
        for tokens in captions:
            clipped = tokens[:max_length]
            labels[row, : len(clipped)] = [word_to_ix[w] for w in clipped]
            label_length[row] = len(clipped)
            row += 1
        label_end_ix[i] = row
    return labels, label_start_ix, label_end_ix, label_length


def vocab_report(counts, word_count_threshold, token_lists):
    """Returns imcap_keras' printed statistics as lines of text.

    Top words, total words, words under the threshold, vocabulary size, the UNK rate and the
    caption length distribution (markers included), with imcap_keras' wording.
    """
    lines = ["top words and their counts:"]
    ranked = sorted(((count, word) for word, count in counts.items()), reverse=True)
    lines += [str(pair) for pair in ranked[:20]]
    total_words = sum(counts.values())
    bad_words = [w for w, n in counts.items() if n <= word_count_threshold]
    bad_count = sum(counts[w] for w in bad_words)
    num_kept = len(counts) - len(bad_words)
    lines.append(f"total words: {total_words}")
    lines.append("number of bad words: %d/%d = %.2f%%"
                 % (len(bad_words), len(counts), len(bad_words) * 100.0 / max(len(counts), 1)))
    lines.append(f"number of words in vocab would be {num_kept}")
    lines.append("number of UNKs: %d/%d = %.2f%%"
                 % (bad_count, total_words, bad_count * 100.0 / max(total_words, 1)))
    lengths = {}
    for tokens in token_lists:
        lengths[len(tokens)] = lengths.get(len(tokens), 0) + 1
    max_len = max(lengths, default=0)
    lines.append(f"max length sentence in raw data: {max_len}")
    lines.append("sentence length distribution (count, number of words):")
    total = max(sum(lengths.values()), 1)
    for n in range(max_len + 1):
        lines.append("%2d: %10d   %f%%" % (n, lengths.get(n, 0), lengths.get(n, 0) * 100.0 / total))
    return lines
