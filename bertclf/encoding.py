"""Texts to token ids, the same way in train, eval and predict, and the batching around them.

One `EncodingSpec` (stored in the run manifest) says how: the token budget, which tokens of a long text
to keep (head, tail, head+tail), or to split long texts into overlapping windows (`chunks`) whose
predictions are averaged per text. A second text (`--text-pair-column`) makes a real BERT pair:
`[CLS] a [SEP] b [SEP]` with token type 0 for a and 1 for b.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class EncodingSpec:
    """How texts become model inputs. `stride` is the number of tokens consecutive windows share."""

    max_length: int = 128
    truncation: str = "head+tail"
    long_text: str = "truncate"
    stride: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Encoded:
    """Model inputs for n_texts texts. With chunks a text may give several sequences (windows):
    text_index says which text each sequence belongs to, in order."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None  # None: all zero (single texts)
    text_index: list[int]
    n_texts: int
    truncated: int  # texts cut to fit (truncate) or split into several windows (chunks)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def per_sequence(self, values: list) -> list:
        """Per-text values (labels) repeated for each of the text's sequences."""
        return [values[i] for i in self.text_index]


def cut(ids: list[int], keep: int, truncation: str) -> list[int]:
    """Keep `keep` tokens by the strategy: head keeps the first, tail the last, head+tail a quarter from the
    start and the rest from the end (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?")."""
    if len(ids) <= keep:
        return ids
    if truncation == "head":
        return ids[:keep]
    if truncation == "tail":
        return ids[len(ids) - keep:]
    head = keep // 4
    return ids[:head] + ids[len(ids) - (keep - head):]


def pair_budgets(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each side of a pair, taking from the longer side first (transformers' longest_first):
    the shorter side keeps up to half the budget, the longer side the rest."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if len_a <= len_b:
        keep_a = min(len_a, budget // 2)
        return keep_a, budget - keep_a
    keep_b = min(len_b, budget // 2)
    return budget - keep_b, keep_b


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` tokens covering n_tokens, consecutive windows sharing `stride`
    tokens; the last window ends at the last token, so every window is full."""
    if n_tokens <= size:
        return [0]
    step = max(1, size - stride)
    return [*range(0, n_tokens - size, step), n_tokens - size]


def _sequences(a: list[int], b: list[int] | None, spec: EncodingSpec, cls_id: int,
               sep_id: int) -> tuple[list[tuple[list[int], list[int] | None]], bool]:
    """The (input_ids, token_type_ids) sequences of one example, and whether it was cut or split."""
    budget = spec.max_length - (2 if b is None else 3)  # room left by [CLS] and one or two [SEP]

    def assemble(a_part: list[int], b_part: list[int] | None):
        if b_part is None:
            return [cls_id, *a_part, sep_id], None
        ids = [cls_id, *a_part, sep_id, *b_part, sep_id]
        return ids, [0] * (len(a_part) + 2) + [1] * (len(b_part) + 1)

    if spec.long_text == "chunks":
        # Windows slide over the first text; a second text (say, a question) is repeated in every
        # window, cut to at most half the budget.
        b_kept = None if b is None else cut(b, min(len(b), budget // 2), spec.truncation)
        size = budget - (len(b_kept) if b_kept is not None else 0)
        starts = window_starts(len(a), size, spec.stride)
        was_cut = len(starts) > 1 or (b_kept is not None and len(b_kept) < len(b))
        return [assemble(a[s : s + size], b_kept) for s in starts], was_cut
    if b is None:
        return [assemble(cut(a, budget, spec.truncation), None)], len(a) > budget
    keep_a, keep_b = pair_budgets(len(a), len(b), budget)
    return [assemble(cut(a, keep_a, spec.truncation), cut(b, keep_b, spec.truncation))], \
        keep_a < len(a) or keep_b < len(b)


def encode(tokenizer, texts: list[str], spec: EncodingSpec, pairs: list[str] | None = None,
           batch_size: int = 1000) -> Encoded:
    """Tokenize without padding (batches are padded to their own longest sequence later), then cut, pair
    or window each text as the spec says."""
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError("texts and pairs differ in length")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    input_ids: list[list[int]] = []
    token_types: list[list[int]] | None = [] if pairs is not None else None
    text_index: list[int] = []
    truncated = 0
    for start in range(0, len(texts), batch_size):
        a_pieces = _token_ids(tokenizer, texts[start : start + batch_size])
        b_pieces = _token_ids(tokenizer, pairs[start : start + batch_size]) if pairs is not None \
            else [None] * len(a_pieces)
        for offset, (a, b) in enumerate(zip(a_pieces, b_pieces, strict=True)):
            sequences, was_cut = _sequences(a, b, spec, cls_id, sep_id)
            truncated += was_cut
            for ids, types in sequences:
                input_ids.append(ids)
                if token_types is not None:
                    token_types.append(types)
                text_index.append(start + offset)
    return Encoded(input_ids, token_types, text_index, len(texts), truncated)


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


# --max-length auto: the first of these that holds AUTO_COVERAGE of the training texts whole. On zh_reviews (18% of
# reviews over 128 tokens, 2% over 256) scratch:tiny scored test accuracy 0.818 / 0.821 (seeds 42 / 7) at 128 and
# 0.830 / 0.835 at 256 (bench/zh_offline.py); zh_shopping_cats, shorter texts, was unchanged.
AUTO_LENGTHS = (128, 256, 512)
AUTO_COVERAGE = 0.95


def auto_max_length(tokenizer, texts: list[str], pairs: list[str] | None, limit: int) -> int:
    """The shortest of AUTO_LENGTHS that holds AUTO_COVERAGE of the examples whole (encoded with no cut, so [CLS],
    [SEP] and a pair's second text count), the longest if none does; never above `limit` (what the model can take).
    Batches are padded to their own longest text, so a longer limit costs only where texts are long."""
    whole = encode(tokenizer, texts, EncodingSpec(max_length=10**9), pairs)
    return min(length_covering(whole.lengths), limit)


def length_covering(lengths: list[int]) -> int:
    """The shortest of AUTO_LENGTHS that holds AUTO_COVERAGE of these sequence lengths, else the longest."""
    if not lengths:
        return AUTO_LENGTHS[0]
    covered = int(np.quantile(np.asarray(lengths), AUTO_COVERAGE, method="higher"))
    return next((length for length in AUTO_LENGTHS if covered <= length), AUTO_LENGTHS[-1])


def encode_cached(tokenizer, texts: list[str], spec: EncodingSpec, cache_dir: Path,
                  pairs: list[str] | None = None) -> Encoded:
    """`encode`, stored under cache_dir keyed by the vocabulary, the texts and the spec. In a distributed run
    the main process encodes first (accelerate's main_process_first) and the others read its file."""
    digest = hashlib.sha256()
    digest.update(json.dumps([sorted(tokenizer.get_vocab().items()), spec.to_dict(), pairs is not None,
                              getattr(tokenizer, "do_lower_case", None)]).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\x00")
    for text in pairs or ():
        digest.update(text.encode("utf-8") + b"\x01")
    path = cache_dir / f"tokens-{digest.hexdigest()[:32]}.npz"
    if path.is_file():
        saved = np.load(path, allow_pickle=False)
        bounds = saved["offsets"].tolist()

        def split(flat: np.ndarray) -> list[list[int]]:
            values = flat.tolist()
            return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

        return Encoded(split(saved["ids"]), split(saved["types"]) if "types" in saved else None,
                       saved["text_index"].tolist(), len(texts), int(saved["truncated"]))
    encoded = encode(tokenizer, texts, spec, pairs)
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": np.fromiter((i for ids in encoded.input_ids for i in ids), dtype=np.int64),
              "offsets": np.cumsum([0, *encoded.lengths]), "text_index": np.asarray(encoded.text_index, np.int64),
              "truncated": encoded.truncated}
    if encoded.token_type_ids is not None:
        arrays["types"] = np.fromiter((t for types in encoded.token_type_ids for t in types), dtype=np.int8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return encoded


def pool_windows(values: np.ndarray, encoded: Encoded) -> np.ndarray:
    """Per-sequence rows (probabilities) to per-text rows: the mean over each text's windows."""
    if len(encoded) == encoded.n_texts:  # one sequence per text, in order
        return values
    index = np.asarray(encoded.text_index, dtype=np.int64)
    sums = np.zeros((encoded.n_texts, values.shape[1]), dtype=np.float64)
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=encoded.n_texts)
    return sums / counts[:, None]


class EncodedDataset:
    """Map-style dataset of encoded sequences (and their targets), as dicts the padding collator takes."""

    def __init__(self, encoded: Encoded, targets: list | None = None):
        self.encoded = encoded
        self.targets = targets  # one per sequence: a label id, or a multi-hot list for multi-label

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict:
        ids = self.encoded.input_ids[index]
        types = self.encoded.token_type_ids[index] if self.encoded.token_type_ids is not None else [0] * len(ids)
        item = {"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": types}
        if self.targets is not None:
            item["labels"] = self.targets[index]
        return item


class LengthGroupedSampler:
    """Shuffled training order in which each batch holds texts of similar length, so padding stays small.

    Indices are shuffled, cut into groups of `batches_per_group` batches, sorted by length inside each
    group, and the resulting batches shuffled again. Texts of equal length stay in shuffled order (the
    sort is stable), so batches are made up differently every epoch even when one group holds the whole
    data set. (A random factor on the lengths, AllenNLP's padding_noise, would add variety but doubles the
    padding at 10%.)

    Sorting does not make batches single-label. With batches of 32, the mean total-variation distance
    between a batch's label shares and the data set's is 0.23 (random batches) and 0.25 (groups of 32)
    on en_wordnet_verbs, 0.08 and 0.11 on zh_reviews, while padding drops from 59% to 7% and from 53% to
    3% (groups of 8: 20% and 11%). Test accuracy with groups of 32 against 8: MiniLM on en_wordnet_verbs
    0.645 / 0.640, scratch on zh_reviews 0.812 / 0.815, scratch:tiny 0.809 / 0.808. (Groups were 8
    batches until a from-scratch zh_reviews model never learned under transformers' LengthGroupedSampler,
    blamed then on its 50-batch groups; the figures above clear the group size. Unlike this sampler,
    transformers' does not shuffle the batches: each group runs from its longest to its shortest.)
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, batches_per_group: int = 32):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.group_size = batch_size * batches_per_group
        # Set by the training loop. Deliberately no set_epoch() method: accelerate calls set_epoch with its
        # own per-DataLoader iteration count, which restarts at 0 after a resume.
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.group_size):
            group = sorted(order[start : start + self.group_size], key=lambda i: -self.lengths[i])
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        # Full batches first in random order, a short last batch (if any) at the end: every batch but
        # one has batch_size texts, as DataLoader would cut them.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        permutation = torch.randperm(len(full), generator=generator).tolist()
        for batch in [full[i] for i in permutation] + short:
            yield from batch


def padding_collator(tokenizer):
    """Pads each batch to its own longest sequence (dynamic padding), not to max_length."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")
