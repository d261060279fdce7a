"""`--model scratch[:SIZE]`: a small BERT and a WordPiece vocabulary trained on the training texts.

No download at all, so Chinese (and any other language) classification works offline. The tokenizer
splits CJK ideographs into one token each, as bert-base-chinese does.

The vocabulary is built by our own code, not by `tokenizers`' WordPieceTrainer: that trainer breaks ties
between equally frequent pairs (and orders the `##` characters) in hash-map order, which is seeded afresh in
every call, so the same texts gave a different vocabulary on every run, and with it different weights, a
resume that no longer matched its checkpoint, and DDP ranks with different embedding sizes. The algorithm is
the trainer's (byte-pair merges over words weighted by their counts, pieces after the first marked `##`),
with every tie broken by the strings themselves: the same texts give the same vocab.txt, byte for byte.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from bertclf.safe_write import atomic_output

# Sizes of the from-scratch encoders: layers, hidden size, attention heads. Feed-forward is 4x hidden.
SCRATCH_SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
}
DEFAULT_SCRATCH_SIZE = "mini"
VOCAB_SIZE = 16000
# Every character seen is kept, up to this many (the most frequent): fewer, and rare Chinese characters
# would become [UNK].
LIMIT_ALPHABET = VOCAB_SIZE
# A merge must occur at least this often (counting each word as often as it occurs) to become a token.
MIN_FREQUENCY = 2
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"
VOCAB_FILE = "vocab.txt"


def parse_scratch_name(name: str) -> str | None:
    """'scratch' -> 'mini', 'scratch:small' -> 'small', anything else -> None."""
    lowered = name.strip().lower()
    if lowered == "scratch":
        return DEFAULT_SCRATCH_SIZE
    if lowered.startswith("scratch:"):
        return lowered.split(":", 1)[1]
    return None


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Words as the BERT tokenizer splits them before WordPiece: cleaned, lower-cased, accents stripped,
    each CJK character and each punctuation mark a word of its own. The same normalizer and pre-tokenizer
    objects as `BertTokenizer` uses, so training and encoding split alike."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                            lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def wordpiece_vocab(counts: Counter[str], vocab_size: int = VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY,
                    limit_alphabet: int = LIMIT_ALPHABET) -> list[str]:
    """Special tokens, the characters, their `##` forms, then merged pieces in the order they were merged.
    Iteration never depends on hash order: sorted lists and a heap ordered by (count, pair strings)."""
    alphabet: Counter[str] = Counter()
    for word, count in counts.items():
        for char in word:
            alphabet[char] += count
    kept = set(sorted(alphabet, key=lambda char: (-alphabet[char], char))[:limit_alphabet])
    words = sorted(counts)
    # The trainer drops characters outside the alphabet from the words it merges; so do we.
    symbols = [[char for char in word if char in kept] for word in words]
    symbols = [[chars[0]] + [PREFIX + char for char in chars[1:]] if chars else [] for chars in symbols]
    continuing = sorted({piece for pieces in symbols for piece in pieces[1:]})
    vocab = list(SPECIAL_TOKENS) + sorted(kept) + continuing
    frequencies = [counts[word] for word in words]
    return _merge(vocab, symbols, frequencies, vocab_size, min_frequency)


def _merge(vocab: list[str], symbols: list[list[str]], frequencies: list[int], vocab_size: int,
           min_frequency: int) -> list[str]:
    """Byte-pair merges until `vocab_size` tokens or no pair occurs `min_frequency` times. The most frequent
    pair wins; a tie goes to the pair whose strings sort first."""
    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, (pieces, frequency) in enumerate(zip(symbols, frequencies, strict=True)):
        for pair in pairwise(pieces):
            pair_count[pair] += frequency
            where[pair].add(index)
    heap = [(-count, first, second) for (first, second), count in pair_count.items()]
    heapq.heapify(heap)
    known = set(vocab)
    while len(vocab) < vocab_size and heap:
        negative, first, second = heapq.heappop(heap)
        if pair_count.get((first, second), 0) != -negative:
            continue  # a stale entry: the pair's count changed since it was pushed
        if -negative < min_frequency:
            break
        token = first + second[len(PREFIX):]
        if token not in known:
            vocab.append(token)
            known.add(token)
        changed: set[tuple[str, str]] = set()
        for index in sorted(where.pop((first, second), ())):
            changed |= _merge_word(symbols, index, (first, second), token, frequencies[index], pair_count, where)
        # Pushing in any order gives the same pops: the heap orders entries totally.
        for pair in changed:
            if pair_count.get(pair, 0) > 0:
                heapq.heappush(heap, (-pair_count[pair], *pair))
    return vocab


def _merge_word(symbols: list[list[str]], index: int, pair: tuple[str, str], token: str, frequency: int,
                pair_count: dict, where: dict) -> set[tuple[str, str]]:
    """Merge `pair` left to right in one word; update the pair counts; return the pairs whose count changed."""
    pieces = symbols[index]
    merged: list[str] = []
    position = 0
    while position < len(pieces):
        if position + 1 < len(pieces) and (pieces[position], pieces[position + 1]) == pair:
            merged.append(token)
            position += 2
        else:
            merged.append(pieces[position])
            position += 1
    before, after = Counter(pairwise(pieces)), Counter(pairwise(merged))
    symbols[index] = merged
    changed = set()
    for key in before.keys() | after.keys():
        delta = after[key] - before[key]
        if delta:
            pair_count[key] += delta * frequency
            if pair_count[key] <= 0:
                del pair_count[key]
            changed.add(key)
        if after[key]:
            where[key].add(index)
    return changed


def build_scratch_vocab(texts: Iterable[str], directory: Path) -> Path:
    """Write `directory`/vocab.txt for `texts`, the same bytes for the same texts; returns its path.
    Written through bertclf.safe_write (a temporary file renamed into place), so a reader never sees half a
    vocabulary."""
    vocab = wordpiece_vocab(word_counts(texts))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / VOCAB_FILE
    with atomic_output(target, "w", newline="\n") as out:
        out.write("".join(token + "\n" for token in vocab))
    return target


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt (one token a line, ids in line order) as a token -> id dict."""
    from bertclf.errors import DataError

    try:
        tokens = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}).") from None
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab = {token: index for index, token in enumerate(tokens)}
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if len(vocab) != len(tokens) or missing:
        problem = f"lacks {', '.join(missing)}" if missing else "lists a token twice"
        raise DataError(f"{path}: the vocabulary {problem}.", hint="Rebuild it: train the run again.")
    return vocab


def scratch_tokenizer(directory: Path):
    """The BERT tokenizer of a scratch vocabulary: `directory`/vocab.txt, else a saved tokenizer.json."""
    from transformers import BertTokenizer

    directory = Path(directory)
    if not (directory / VOCAB_FILE).is_file():
        return BertTokenizer.from_pretrained(str(directory), local_files_only=True)
    return BertTokenizer(vocab=read_vocab(directory / VOCAB_FILE), do_lower_case=True,
                         tokenize_chinese_chars=True)


def scratch_model_config(size: str, tokenizer, max_length: int, bigram_buckets: int = 0):
    """An untrained BERT's config of the given size for the tokenizer's vocabulary; with `bigram_buckets`, its
    embeddings add a hashed table of token pairs (bertclf.bigrams)."""
    from transformers import BertConfig

    from bertclf.bigrams import CONFIG_KEY as BIGRAMS_KEY
    from bertclf.bigrams import HASH_KEY, HASH_VERSION

    layers, hidden, heads = SCRATCH_SIZES[size]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(512, max_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    if bigram_buckets:
        setattr(config, BIGRAMS_KEY, bigram_buckets)
        setattr(config, HASH_KEY, HASH_VERSION)
    return config


def build_scratch(size: str, texts: list[str], max_length: int, workdir: Path):
    """Train a vocabulary on `texts` and build an untrained BERT of the given size; returns (tokenizer, config)."""
    build_scratch_vocab(texts, workdir)
    tokenizer = scratch_tokenizer(workdir)
    return tokenizer, scratch_model_config(size, tokenizer, max_length)
