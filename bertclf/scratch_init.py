"""How a from-scratch BERT starts masked-language-model pre-training, so that it learns from context at all.

With transformers' default start (every weight N(0, 0.02), the output layer tied to the word embeddings) and
AdamW at 1e-3, a small BERT pre-trained on Chinese reviews predicted every [MASK] as the most frequent character
for 3,000 steps (40 minutes): its attention stayed uniform. Two things keep it there (bench/mlm_probe.py and the
experiments in the README's "Models without huggingface.co"):

1. Attending to a neighbour pays only once the values carry what the neighbour is, and the values learn that only
   once something attends to the neighbour: a saddle. With attention forced onto the two neighbours (an attention
   mask), the same model predicts [MASK]ed characters at the bigram rate within 300 steps.
2. Adam moves every weight by about the learning rate a step, so embeddings of size 0.02 are redrawn within 20
   steps: an attention pattern built into the start from the position embeddings is gone after 25 steps.

So a scratch model starts with heads that already look at fixed neighbours (`attend_to_neighbours`), its
embeddings learn at a small fraction of the rate (EMBEDDING_LR_SCALE) and its output layer is a matrix of its
own (`scratch_model_for_pretraining`), so that the slowly moving embeddings do not also hold back the output.
The saved model is a plain BertForMaskedLM; fine-tuning it (train --model DIR) uses the encoder only.
"""

from __future__ import annotations

import math

# Rate of the embeddings (words, positions, segments) relative to the rest. With 1/30 an embedding of size 0.02
# moves by about its size in 600 steps instead of 20.
EMBEDDING_LR_SCALE = 0.03
# Frequencies of the position sinusoids: geometric between a period of about 200 tokens and 2 tokens.
# Evenly spaced frequencies would be periodic together and attend as much to a token 64 places away.
LOWEST_FREQUENCY, HIGHEST_FREQUENCY = 0.03, math.pi
# Queries at twice the keys' size: about 90% of each head's attention on its neighbour at the start (95% with 2
# heads of 64 in a hidden state of 128, 89% with 4 in 256; 70% and 52% at the same size).
QUERY_SCALE = 2.0


def scratch_model_for_pretraining(config):
    """A masked-LM BERT of `config` that starts as this module says: its own output layer, heads on neighbours,
    and a bigram table (if the config names one) of zeros, so the start is the plain character model's."""
    import torch

    from bertclf.bigrams import with_bigrams
    from bertclf.mlm import BertForMaskedLM

    config.tie_word_embeddings = False
    model = with_bigrams(BertForMaskedLM)(config)
    bigrams = getattr(model.bert.embeddings, "bigram_embeddings", None)
    if bigrams is not None:
        torch.nn.init.zeros_(bigrams.weight)
    # Untied, transformers' output layer adds decoder.bias and leaves predictions.bias unused (saved, never
    # trained); frozen, so that DistributedDataParallel does not wait for its gradient.
    model.cls.predictions.bias.requires_grad_(False)
    attend_to_neighbours(model)
    return model


def head_offsets(heads: int) -> list[int]:
    """The neighbour each head starts looking at: -1, +1, -2, +2, ..."""
    return [(h // 2 + 1) * (-1 if h % 2 == 0 else 1) for h in range(heads)]


def attend_to_neighbours(model) -> None:
    """Start every attention head looking at one neighbour (offsets from `head_offsets`).

    Positions get sinusoids p_i = [sin(w i), cos(w i)] in the first head_dim dimensions of the hidden state and
    the words the rest, each at the size of the initialiser; a head's query is its key rotated by its offset o,
    so query_i . key_j = sum over w of cos(w (i + o - j)), largest at j = i + o (about 90% of the attention at
    the start with QUERY_SCALE)."""
    import torch

    config = model.config
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = hidden // heads
    embeddings = model.bert.embeddings
    freqs = torch.exp(torch.linspace(math.log(LOWEST_FREQUENCY), math.log(HIGHEST_FREQUENCY), head_dim // 2))
    positions = torch.arange(embeddings.position_embeddings.num_embeddings, dtype=torch.float32)[:, None]
    size = config.initializer_range * math.sqrt(2)  # a sinusoid of amplitude a has root mean square a / sqrt(2)
    with torch.no_grad():
        table = torch.zeros_like(embeddings.position_embeddings.weight)
        table[:, 0:head_dim:2] = torch.sin(positions * freqs) * size
        table[:, 1:head_dim:2] = torch.cos(positions * freqs) * size
        embeddings.position_embeddings.weight.copy_(table)
        embeddings.word_embeddings.weight[:, :head_dim] = 0.0  # nothing but positions in the heads' view
        embeddings.token_type_embeddings.weight[:, :head_dim] = 0.0
        query = torch.zeros(hidden, hidden)
        key = torch.zeros(hidden, hidden)
        for h, offset in enumerate(head_offsets(heads)):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            query[rows, :head_dim] = _rotation(freqs, offset) * QUERY_SCALE
            key[rows, :head_dim] = torch.eye(head_dim)
        for layer in model.bert.encoder.layer:
            attention = layer.attention.self
            attention.query.weight.copy_(query)
            attention.key.weight.copy_(key)
            attention.query.bias.zero_()
            attention.key.bias.zero_()


def _rotation(freqs, offset: int):
    """The matrix that maps [sin(w i), cos(w i)] (interleaved, one pair per frequency) to the pair at i + offset,
    so that query i = position i + offset matches key i + offset best:
    sin(w(i + o)) = cos(w o) sin(w i) + sin(w o) cos(w i);  cos(w(i + o)) = -sin(w o) sin(w i) + cos(w o) cos(w i)."""
    import torch

    c, s = torch.cos(freqs * offset), torch.sin(freqs * offset)
    n = 2 * len(freqs)
    rotation = torch.zeros(n, n)
    rotation[0::2, 0::2] = torch.diag(c)
    rotation[0::2, 1::2] = torch.diag(s)
    rotation[1::2, 0::2] = torch.diag(-s)
    rotation[1::2, 1::2] = torch.diag(c)
    return rotation


def embedding_parameters(model) -> set[int]:
    """ids of the embedding tables' parameters (the optimizer gives them EMBEDDING_LR_SCALE of the rate). The
    bigram table (bertclf.bigrams) is not among them: it starts at zero and holds no attention pattern to keep."""
    embeddings = model.bert.embeddings
    bigrams = getattr(embeddings, "bigram_embeddings", None)
    skipped = {id(bigrams.weight)} if bigrams is not None else set()
    return {id(p) for p in embeddings.parameters()} - skipped
