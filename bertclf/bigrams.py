"""Character-bigram embeddings for scratch models of Chinese text.

A scratch vocabulary splits Chinese into single characters, and a small model trained for minutes learns little
of which characters go together: on zh_reviews TF-IDF on single characters reaches 0.807, on character bigrams
0.868, and a scratch BERT sits near the first. Here each position's input vector also gets a learnt vector for
the pair (this token, the next token), looked up in a hashed table (fastText's n-gram buckets), so the model
starts with the bigram features a linear model relies on and its layers learn the rest.

Measured (`bench/zh_offline.py`, fine-tuning defaults, test splits, seeds 42; 7, accuracy / macro-F1), with
bigrams against without: `scratch:tiny` with no pre-training, zh_reviews 0.848; 0.848 against 0.830; 0.835,
zh_shopping_cats 0.870 / 0.784; 0.867 / 0.805 against 0.837 / 0.743; 0.825 / 0.696; pre-trained 40 minutes by
`bertclf pretrain`, zh_reviews 0.835; 0.835 against 0.808; 0.808, zh_shopping_cats 0.872 / 0.855; 0.864 / 0.831
against 0.862 / 0.772; 0.854 / 0.769. Pre-training also goes further in the same steps: held-out masked-LM loss
3.27 against 3.56 (zh_reviews corpus, 3,000 steps).

The table size and the bucket hash are saved in config.json (`bigram_buckets`, `bigram_hash`), so train (from
a `pretrain` directory too), eval, predict, export and serve build the same model. A plain transformers
`from_pretrained` ignores the keys and the table: load such a run through bertclf, or use its ONNX export.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

CONFIG_KEY = "bigram_buckets"
TENSOR_NAME = "bert.embeddings.bigram_embeddings.weight"
# 6.4M numbers at hidden 128. The training texts of zh_reviews / zh_shopping_cats hold 102k / 107k distinct token
# pairs, 62% of them seen once (zh_reviews); pairs seen 5 times or more make 71% of its tokens. Rare pairs share
# rows; a frequent pair shares its row mostly with rare ones.
DEFAULT_BUCKETS = 50_000
# A prime above any scratch vocabulary's size: (a, b) -> a * MULTIPLIER + b is one-to-one (the pair's index).
MULTIPLIER = 1_000_003
# How the pair's index becomes a row, saved in config.json. Version 2: the index mixed by two rounds of
# xor-shift and multiplication modulo the prime 2^31 - 1 (MurmurHash3's finaliser, in 31 bits so no product leaves
# int64 and the ONNX graph needs only Mul, Div, Mod and BitwiseXor), then modulo the table size. Version 1, the
# first release (a config with a table but no `bigram_hash`, still read as it was trained), took the index modulo
# the table size: MULTIPLIER is 3 modulo 50,000, so (a, b) landed in row (3a + b) mod 50,000, and zh_reviews'
# 102k training pairs (a 7,557-token vocabulary) used 18,812 of the 50,000 rows; a larger table used the same
# rows. Version 2 uses 43,538 (a random assignment: 43,548). A single multiplication of the index modulo the prime
# (tried first) is still linear: the 40,000 pairs of 200 consecutive token ids filled 26k rows of a 50,000-row table
# and the same 26k of a 200,000-row one (tests/test_bigrams.py checks version 2 on that grid).
HASH_KEY = "bigram_hash"
HASH_VERSION = 2
LEGACY_HASH_VERSION = 1
HASH_VERSIONS = (LEGACY_HASH_VERSION, HASH_VERSION)
HASH_PRIME = 2_147_483_647  # 2^31 - 1: a value below it times a multiplier below it stays inside int64
HASH_MULTIPLIERS = (1_103_515_245, 21_638_832)


def config_value(config, key: str, default=None):
    """A field of a model config, given as the config object or as config.json's dict."""
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def buckets_of(config) -> int:
    """The bigram table's size from a model config (object or config.json's dict); 0: no bigram table."""
    value = config_value(config, CONFIG_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def hash_version_of(config) -> int | None:
    """The bucket hash a config names (1 where it has a table and no `bigram_hash`); None: not a known version."""
    value = config_value(config, HASH_KEY, LEGACY_HASH_VERSION)
    return value if value in HASH_VERSIONS and not isinstance(value, bool) else None


def auto_bigram_buckets(texts: list[str], requested: int | None = None) -> int:
    """The table size for a scratch model of these texts: `--bigram-buckets` where given (0: no table), else
    DEFAULT_BUCKETS for mostly-Chinese text (where single-character tokens leave the pairs unlearnt), 0 otherwise
    (English WordPiece tokens are words already, and bigrams were not measured there)."""
    if requested is not None:
        return requested
    from bertclf.data import cjk_share
    from bertclf.model import CJK_THRESHOLD

    return DEFAULT_BUCKETS if cjk_share(texts) >= CJK_THRESHOLD else 0


def bigram_ids(input_ids, buckets: int, pad_id: int, version: int = HASH_VERSION):
    """Each position's bucket for (its token, the next token); the last position pairs with padding, so a text
    gets the same buckets whether or not its batch pads it."""
    import torch.nn.functional as F

    following = F.pad(input_ids[:, 1:], (0, 1), value=pad_id)
    index = input_ids * MULTIPLIER + following
    if version == LEGACY_HASH_VERSION:
        return index % buckets
    mixed = index % HASH_PRIME
    mixed = mixed ^ (mixed // 2**16)  # a right shift; floor division exports to ONNX for signed integers
    for multiplier, shift in zip(HASH_MULTIPLIERS, (13, 16), strict=True):
        mixed = mixed * multiplier % HASH_PRIME
        mixed = mixed ^ (mixed // 2**shift)
    return mixed % buckets


@functools.cache
def with_bigrams(model_class):
    """`model_class` (a transformers BERT model with a `.bert` encoder) whose embeddings add the bigram table
    when its config names one; built on first use (importing transformers at module level would slow every
    command's start), one class per parent."""

    class WithBigrams(model_class):
        def __init__(self, config, *args, **kwargs):
            if not buckets_of(config):
                super().__init__(config, *args, **kwargs)
                return
            # BertModel builds its embeddings from modeling_bert's global BertEmbeddings: swapped for the bigram
            # class while this model is built, so the table is made inside BertModel and initialised by
            # post_init with every other weight (and handled like them by from_pretrained), not bolted on after.
            with _bigram_embeddings_built():
                super().__init__(config, *args, **kwargs)

    # Named like the parent, so config.json's "architectures" stays a class transformers knows.
    WithBigrams.__name__ = WithBigrams.__qualname__ = model_class.__name__
    return WithBigrams


@contextmanager
def _bigram_embeddings_built():
    from transformers.models.bert import modeling_bert

    plain = modeling_bert.BertEmbeddings
    modeling_bert.BertEmbeddings = _embeddings_class()
    try:
        yield
    finally:
        modeling_bert.BertEmbeddings = plain


@functools.cache
def _embeddings_class():
    from torch import nn
    from transformers.models.bert.modeling_bert import BertEmbeddings

    class BigramBertEmbeddings(BertEmbeddings):
        """BertEmbeddings whose token vectors are word embedding + bigram embedding."""

        def __init__(self, config):
            super().__init__(config)
            self.bigram_buckets = buckets_of(config)
            self.bigram_pad_id = int(config.pad_token_id or 0)
            self.bigram_hash = hash_version_of(config)
            self.bigram_embeddings = nn.Embedding(self.bigram_buckets, config.hidden_size)

        def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, **kwargs):
            if input_ids is not None and inputs_embeds is None:
                buckets = bigram_ids(input_ids, self.bigram_buckets, self.bigram_pad_id, self.bigram_hash)
                inputs_embeds = self.word_embeddings(input_ids) + self.bigram_embeddings(buckets)
            return super().forward(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds, **kwargs)

    return BigramBertEmbeddings
