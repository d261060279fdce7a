"""Texts to model inputs: truncation strategies, real BERT sentence pairs, overlapping windows for long texts."""

import numpy as np
import pytest

from bertclf.encoding import Encoded, EncodingSpec, encode, encode_cached, pair_budgets, pool_windows, window_starts


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(tiny_model_dir))


def _text_of(tokenizer, n_words: int, offset: int = 0) -> tuple[str, list[int]]:
    """A text of n_words vocabulary words, one token each, and its token ids."""
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 3][offset:offset + n_words]
    assert len(words) == n_words
    text = " ".join(words)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == n_words
    return text, ids


def test_truncation_strategies_keep_the_right_tokens(tokenizer):
    text, ids = _text_of(tokenizer, 20)
    head, tail, both = (encode(tokenizer, [text], EncodingSpec(10, strategy)) for strategy in ("head", "tail",
                                                                                               "head+tail"))
    assert head.truncated == tail.truncated == both.truncated == 1
    assert head.input_ids[0][1:-1] == ids[:8]
    assert tail.input_ids[0][1:-1] == ids[-8:]
    assert both.input_ids[0][1:-1] == ids[:2] + ids[-6:]
    assert head.input_ids[0][0] == tokenizer.cls_token_id and head.input_ids[0][-1] == tokenizer.sep_token_id


def test_pairs_are_encoded_exactly_as_bert_pairs(tokenizer):
    a, _ = _text_of(tokenizer, 5)
    b, _ = _text_of(tokenizer, 7, offset=10)
    ours = encode(tokenizer, [a], EncodingSpec(64), pairs=[b])
    reference = tokenizer(a, b)  # [CLS] a [SEP] b [SEP], token types 0 then 1
    assert ours.input_ids[0] == reference["input_ids"]
    assert ours.token_type_ids[0] == reference["token_type_ids"]
    assert ours.token_type_ids[0].count(1) == 7 + 1 and ours.truncated == 0


def test_pair_truncation_takes_from_the_longer_side_first(tokenizer):
    long_text, long_ids = _text_of(tokenizer, 30)
    short_text, short_ids = _text_of(tokenizer, 4, offset=40)
    encoded = encode(tokenizer, [long_text, long_text], EncodingSpec(20, "head"), pairs=[short_text, long_text])
    # 17 tokens of room: the short side keeps all 4, the long side gets 13.
    first = encoded.input_ids[0]
    assert first == [tokenizer.cls_token_id, *long_ids[:13], tokenizer.sep_token_id, *short_ids, tokenizer.sep_token_id]
    # Both long: an even split (8 and 9).
    assert encoded.token_type_ids[1].count(0) - 2 == 8 and encoded.token_type_ids[1].count(1) - 1 == 9
    assert encoded.truncated == 2
    assert pair_budgets(4, 30, 17) == (4, 13) and pair_budgets(30, 4, 17) == (13, 4)
    assert pair_budgets(3, 4, 17) == (3, 4)


def test_chunks_cover_every_token_with_overlapping_full_windows(tokenizer):
    text, ids = _text_of(tokenizer, 50)
    short, short_ids = _text_of(tokenizer, 5, offset=60)
    encoded = encode(tokenizer, [short, text], EncodingSpec(12, long_text="chunks", stride=4))
    assert encoded.n_texts == 2 and encoded.truncated == 1
    assert encoded.text_index[0] == 0 and set(encoded.text_index[1:]) == {1}
    assert encoded.input_ids[0][1:-1] == short_ids
    windows = [seq[1:-1] for seq in encoded.input_ids[1:]]
    assert all(len(w) == 10 for w in windows)  # every window is full, the last one ends at the last token
    starts = window_starts(50, 10, 4)
    assert starts == [0, 6, 12, 18, 24, 30, 36, 40]
    assert [ids[s:s + 10] for s in starts] == windows
    assert windows[0][-4:] == windows[1][:4]  # consecutive windows share `stride` tokens
    covered = {i for s in starts for i in range(s, s + 10)}
    assert covered == set(range(50))


def test_window_probabilities_are_averaged_per_text():
    encoded = Encoded([[1], [2], [3], [4]], None, [0, 1, 1, 2], n_texts=3, truncated=1)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    np.testing.assert_allclose(pool_windows(probs, encoded), [[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])


def test_cached_encoding_equals_a_fresh_one_for_pairs_and_chunks(tokenizer, tmp_path):
    texts = [_text_of(tokenizer, n, offset=n)[0] for n in (3, 25, 9)]
    pairs = [_text_of(tokenizer, 4, offset=70)[0]] * 3
    spec = EncodingSpec(16, long_text="chunks", stride=4)
    fresh = encode(tokenizer, texts, spec, pairs)
    first = encode_cached(tokenizer, texts, spec, tmp_path, pairs)
    again = encode_cached(tokenizer, texts, spec, tmp_path, pairs)  # read from the .npz file
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 1
    for encoded in (first, again):
        assert encoded.input_ids == fresh.input_ids and encoded.token_type_ids == fresh.token_type_ids
        assert encoded.text_index == fresh.text_index and encoded.truncated == fresh.truncated
    assert len(fresh) > 3 and all(types.count(1) == 5 for types in fresh.token_type_ids)
