"""The masked-language-model pieces of `bertclf pretrain`: packing, masking, the model and its held-out score.

- Packing: texts are tokenized once and laid end to end, each followed by [SEP], and cut into sequences of
  `max_length` ([CLS] first, [SEP] last), RoBERTa's FULL-SENTENCES packing: short reviews fill a sequence
  instead of padding it, so nearly every token trained on is text.
- Masking: transformers' DataCollatorForLanguageModeling (15% of tokens; of those 80% [MASK], 10% a random
  token, 10% unchanged), applied in the training step rather than in the DataLoader, so that a resumed run
  draws exactly the masks of the uninterrupted one (the loop restores the RNG state before the step).
  Whole-word masking uses the collator's own rule (a word is a run of tokens whose character offsets touch);
  the offsets given to it are built from word boundaries: jieba's for Chinese (without a segmenter every
  Chinese sentence would be one "word"), WordPiece's `##` pieces for everything else.
- The model: BertForMaskedLM that applies its vocabulary-sized output layer only to the masked positions.
  On a small BERT that layer costs more than the encoder (hidden 256, vocabulary 10k: 2.6M multiply-adds a
  token against 3.1M for four layers), and only the 15% masked positions have a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM as _HFBertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

IGNORE = -100  # label of a position without a loss


class BertForMaskedLM(_HFBertForMaskedLM):
    """transformers' BertForMaskedLM whose output layer runs on the masked positions only (when labels are
    given). Same weights, same checkpoint: named like its parent so the saved config.json says BertForMaskedLM
    and any transformers code loads the directory unchanged. Returns the masked positions' logits, flattened."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if labels is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, **kwargs)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        picked = labels != IGNORE
        logits = self.cls(hidden[picked])
        targets = labels[picked]
        # A batch with no masked token (possible for a very short last batch) still takes part in the step.
        loss = F.cross_entropy(logits.float(), targets) if targets.numel() else hidden.sum() * 0.0
        return MaskedLMOutput(loss=loss, logits=logits)


# -- Packing ---------------------------------------------------------------------------------------------------


@dataclass
class Packed:
    """Packed sequences; `new_word[i][j]` says whether token j of sequence i starts a word (whole-word masking)."""

    sequences: list[list[int]]
    new_word: list[list[bool]] | None = None

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> list[int]:
        return [len(sequence) for sequence in self.sequences]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


def pack(token_ids: list[list[int]], max_length: int, cls_id: int, sep_id: int,
         new_word: list[list[bool]] | None = None) -> Packed:
    """Texts end to end, each followed by [SEP], cut into [CLS] ... [SEP] sequences of at most max_length. A
    text longer than a sequence continues in the next one; nothing is dropped (the last sequence is short)."""
    body = max_length - 2
    stream: list[int] = []
    starts: list[bool] = []
    for index, ids in enumerate(token_ids):
        stream.extend(ids)
        stream.append(sep_id)
        if new_word is not None:
            starts.extend(new_word[index])
            starts.append(True)
    sequences = [[cls_id, *stream[i : i + body], sep_id] for i in range(0, len(stream), body)]
    if new_word is None:
        return Packed(sequences)
    flags = [[True, *starts[i : i + body], True] for i in range(0, len(stream), body)]
    return Packed(sequences, flags)


def tokenize_for_packing(tokenizer, texts: list[str], whole_words: bool) -> tuple[list[list[int]], list | None]:
    """Token ids of each text (no special tokens) and, for whole-word masking, which tokens start a word."""
    if not whole_words:
        return tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"], None
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False,
                        return_offsets_mapping=True)
    segmenter = _jieba()
    new_word = []
    for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"], strict=True):
        word_starts = {start for _, start, _ in segmenter.tokenize(text)}
        pieces = tokenizer.convert_ids_to_tokens(ids)
        new_word.append([not piece.startswith("##") and start in word_starts
                         for piece, (start, _) in zip(pieces, offsets, strict=True)])
    return encoded["input_ids"], new_word


def _jieba():
    """jieba, quiet (it logs its dictionary loading to stderr)."""
    from bertclf.errors import UsageError

    try:
        import jieba
    except ImportError:
        raise UsageError("--whole-word-mask needs the jieba word segmenter, which is not installed.",
                         hint="pip install 'bertclf[zh]'  (or: pip install jieba)") from None
    import logging

    jieba.setLogLevel(logging.WARNING)
    return jieba


def fake_offsets(new_word: list[bool]) -> list[tuple[int, int]]:
    """Character offsets in which tokens of one word touch and words are one character apart: the form in
    which DataCollatorForLanguageModeling's whole-word masking reads word boundaries."""
    offsets, position = [], 0
    for starts in new_word:
        if starts:
            position += 1
        offsets.append((position, position + 1))
        position += 1
    return offsets


# -- Batches and masking ---------------------------------------------------------------------------------------


class PackedDataset(torch.utils.data.Dataset):
    def __init__(self, packed: Packed):
        self.packed = packed

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, index: int) -> dict:
        item: dict[str, Any] = {"input_ids": self.packed.sequences[index]}
        if self.packed.new_word is not None:
            item["offset_mapping"] = fake_offsets(self.packed.new_word[index])
        return item


def pad_batch(pad_id: int):
    """DataLoader collate function: pads to the batch's longest sequence; marks [CLS]/[SEP]/padding as special
    (never masked). Masks are drawn later, in the training step."""

    def collate(items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        special = torch.ones((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            attention[row, :n] = 1
            special[row, 1 : n - 1] = 0
        batch = {"input_ids": ids, "attention_mask": attention, "special_tokens_mask": special}
        if "offset_mapping" in items[0]:
            offsets = torch.zeros((len(items), width, 2), dtype=torch.long)
            for row, item in enumerate(items):
                offsets[row, : len(item["offset_mapping"])] = torch.tensor(item["offset_mapping"])
            batch["offset_mapping"] = offsets
        return batch

    return collate


class Masker:
    """Draws masks for a padded batch with DataCollatorForLanguageModeling's rule. seed=None draws from torch's
    global RNG (training: restored exactly on resume); a seed gives a generator of its own (the held-out set,
    masked once)."""

    def __init__(self, tokenizer, probability: float, whole_words: bool, seed: int | None = None):
        from transformers import DataCollatorForLanguageModeling

        # With whole words transformers replaces every chosen token by [MASK] (no random or kept tokens); say so
        # up front rather than have it warn.
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability,
                                                        whole_word_mask=whole_words, seed=seed,
                                                        mask_replace_prob=1.0 if whole_words else 0.8,
                                                        random_replace_prob=0.0 if whole_words else 0.1)
        if seed is not None:
            self.collator.create_rng("pt")

    def __call__(self, batch: dict) -> dict:
        special = batch.pop("special_tokens_mask")
        offsets = batch.pop("offset_mapping", None)
        inputs, labels = self.collator.torch_mask_tokens(batch["input_ids"].clone(), special_tokens_mask=special,
                                                         offset_mapping=offsets)
        return {"input_ids": inputs, "attention_mask": batch["attention_mask"], "labels": labels}


def masked_batches(packed: Packed, tokenizer, probability: float, whole_words: bool, seed: int,
                   batch_size: int) -> list[dict]:
    """The held-out set in batches, masked once with a fixed seed, so every evaluation scores the same task."""
    masker = Masker(tokenizer, probability, whole_words, seed=seed)
    collate = pad_batch(tokenizer.pad_token_id)
    dataset = PackedDataset(packed)
    return [masker(collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]))
            for start in range(0, len(dataset), batch_size)]


def evaluate_masked_lm(model, batches: list[dict], device, mask_token_id: int) -> dict[str, float]:
    """Loss (mean cross-entropy per masked token), perplexity and top-1 accuracy on the held-out batches.

    `masked_accuracy` counts every token chosen for prediction, the 10% left unchanged among them, which a model
    learns to copy long before it learns anything from the context; `mask_accuracy` counts only the tokens
    replaced by [MASK], the ones that must be guessed from their neighbours. A model stuck at the unigram rate
    there has learned nothing of its context (issue 17: 0.05 under a 0.149 masked_accuracy)."""
    import math

    was_training = model.training
    model.eval()
    total_loss, total_correct, total_tokens = 0.0, 0, 0
    mask_correct, mask_tokens = 0, 0
    with torch.no_grad():
        for batch in batches:
            batch = {key: value.to(device) for key, value in batch.items()}
            outputs = model(**batch)
            picked = batch["labels"] != IGNORE
            targets = batch["labels"][picked]
            if not targets.numel():
                continue
            total_loss += F.cross_entropy(outputs.logits.float(), targets, reduction="sum").item()
            correct = outputs.logits.argmax(-1) == targets
            total_correct += int(correct.sum())
            total_tokens += int(targets.numel())
            replaced = batch["input_ids"][picked] == mask_token_id  # same order as the logits' rows
            mask_correct += int(correct[replaced].sum())
            mask_tokens += int(replaced.sum())
    if was_training:
        model.train()
    loss = total_loss / max(total_tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "masked_accuracy": total_correct / max(total_tokens, 1), "masked_tokens": total_tokens,
            "mask_accuracy": mask_correct / max(mask_tokens, 1)}
