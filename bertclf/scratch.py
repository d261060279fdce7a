"""`--model scratch[:SIZE]`: a small BERT and a WordPiece vocabulary trained on the training texts.

No download at all, so Chinese (and any other language) classification works offline. The tokenizer
splits CJK ideographs into one token each, as bert-base-chinese does.
"""

from __future__ import annotations

from pathlib import Path

# Sizes of the from-scratch encoders: layers, hidden size, attention heads. Feed-forward is 4x hidden.
SCRATCH_SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
}
DEFAULT_SCRATCH_SIZE = "mini"
VOCAB_SIZE = 16000
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_scratch_name(name: str) -> str | None:
    """'scratch' -> 'mini', 'scratch:small' -> 'small', anything else -> None."""
    lowered = name.strip().lower()
    if lowered == "scratch":
        return DEFAULT_SCRATCH_SIZE
    if lowered.startswith("scratch:"):
        return lowered.split(":", 1)[1]
    return None


def build_scratch(size: str, texts: list[str], max_length: int, workdir: Path):
    """Train a vocabulary on `texts` and build an untrained BERT of the given size; returns (tokenizer, config)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertTokenizer

    layers, hidden, heads = SCRATCH_SIZES[size]
    wordpiece = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                       lowercase=True)
    # limit_alphabet must exceed the number of distinct characters, or rare Chinese characters become [UNK].
    wordpiece.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2, limit_alphabet=VOCAB_SIZE,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False)
    workdir.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(workdir))
    tokenizer = BertTokenizer(vocab=str(workdir / "vocab.txt"), do_lower_case=True, tokenize_chinese_chars=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max(512, max_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, config
