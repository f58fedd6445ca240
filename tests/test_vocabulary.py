"""The Vocabulary value: ids, words and captions as prepro_coco.py numbers them."""

import pytest

from imcap.data import vocabulary as vocab
from imcap.utils.fileio import DataError
from imcap.data.vocabulary import Vocabulary

WORDS = ["<start>", "a", "red", "circle", "<eos>", "UNK"]


def test_ids_are_one_based_and_zero_is_padding():
    vocabulary = Vocabulary(WORDS)
    assert (vocabulary.size, len(vocabulary)) == (7, 6)
    assert (vocabulary.start_id, vocabulary.end_id, vocabulary.unk_id) == (1, 5, 6)
    assert vocabulary.word(3) == "red" and vocabulary.words == tuple(WORDS)
    assert Vocabulary(WORDS[:5]).unk_id is None


def test_ids_to_words_stop_at_the_end_or_the_padding():
    vocabulary = Vocabulary(WORDS)
    assert vocabulary.ids_to_words([2, 3, 4, 5, 2]) == ["a", "red", "circle"]
    assert vocabulary.ids_to_words([2, 3, 4, 5, 2], keep_end=True) == \
        ["a", "red", "circle", "<eos>"]
    assert vocabulary.ids_to_words([2, 6, 0, 3]) == ["a", "UNK"]
    assert vocabulary.to_caption([2, 3, 4, 0]) == "a red circle"
    assert vocabulary.to_caption([5]) == ""


def test_it_reads_the_jsons_ix_to_word_as_prepro_coco_writes_it():
    ix_to_word = {str(i + 1): w for i, w in enumerate(WORDS)}
    assert Vocabulary.from_ix_to_word(ix_to_word, "v.json") == Vocabulary(WORDS)
    assert Vocabulary(WORDS) != Vocabulary(WORDS[::-1]) and Vocabulary(WORDS) != WORDS
    built = vocab.build_vocab(vocab.count_words([vocab.tokenize("A red circle.")] * 2), 1)
    assert Vocabulary(built).ids_to_words([2, 3, 4, 5, 2]) == ["a", "red", "circle"]


@pytest.mark.parametrize("ix_to_word, message", [
    ({"1": "<start>", "3": "<eos>"}, "must number its words 1..2 without gaps"),
    ({"x": "<start>"}, "must map word ids to words"),
    ({"1": "a", "2": "<eos>"}, "must contain '<start>'"),
])
def test_a_bad_ix_to_word_names_the_file(ix_to_word, message):
    with pytest.raises(DataError, match=f"vocabulary json v.json: .*{message}"):
        Vocabulary.from_ix_to_word(ix_to_word, "v.json")


def test_the_first_different_word_is_found():
    a = Vocabulary(WORDS)
    assert a.first_difference(Vocabulary(WORDS)) is None
    assert a.first_difference(Vocabulary(WORDS[:2] + ["blue"] + WORDS[3:])) == 3
    assert a.first_difference(Vocabulary(WORDS[:5])) == 6  # one word shorter


def test_bad_word_lists_are_refused():
    for words in ([], ["<start>", 3, "<eos>"], ["a", "<eos>"]):
        with pytest.raises(ValueError):
            Vocabulary(words)
