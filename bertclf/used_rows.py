"""Fine-tune only the rows of the word-embedding matrix that the training data uses.

A pretrained vocabulary is far larger than what one training file uses: MiniLM has 30,522 tokens and its
word-embedding matrix is half of its 22.7M parameters. Trained densely, the matrix costs every optimizer step
the same work whatever the batch holds: the backward pass allocates and zeroes a gradient the size of the
matrix to fill a few hundred rows, and fused AdamW then reads and writes the weights, the gradient and both
moment buffers of all 30,522 rows. On a small batch of short texts that is a large part of the step.

A row whose token is in no training text gets a zero gradient on every step, so dense AdamW leaves it where it
is (both moments stay zero) except for weight decay's tiny pull toward zero, and the rows that are used move
exactly as they would in the dense matrix (AdamW treats every element on its own; the zero rows add nothing to
the gradient norm that clipping reads). So training only the used rows follows the dense run's trajectory on
every text of the training file, and differs from it only in not decaying the unused rows (at lr 5e-5 and weight
decay 0.01, by 5e-7 of their size a step at most).

`UsedRowsEmbedding` takes the place of `bert.embeddings.word_embeddings` for the training loop: the used rows
are a parameter of their own, the rest a frozen buffer; a token outside the used set (a validation text's)
reads the frozen row. Its state dict is the full matrix under the plain module's key (`...weight`), so the
saved model, checkpoints and `--resume` see an ordinary BERT.
"""

from __future__ import annotations

import functools

# Below this share of the vocabulary unused, the swap saves too little to be worth a second code path (a scratch
# vocabulary is built from the training texts themselves: every row is used).
MIN_UNUSED_SHARE = 0.1


def used_token_ids(input_ids: list[list[int]], special_ids: list[int]) -> list[int]:
    """The sorted token ids that can appear in a training batch: those of the encoded texts, and the special
    tokens (padding among them)."""
    used: set[int] = set(special_ids)
    for ids in input_ids:
        used.update(ids)
    return sorted(used)


def train_used_rows_only(model, input_ids: list[list[int]], special_ids: list[int], processes: int) -> dict:
    """Swap the model's word embeddings for a `UsedRowsEmbedding` over the training data's tokens, before the
    optimizer is built. Returns the manifest's record: rows trained, of how many.

    Single-process runs only: DDP would broadcast the frozen rows (a buffer) from the first process before every
    step, and FSDP or DeepSpeed shard the weights by their parameters' names and shapes."""
    from torch import nn

    embedding = model.get_input_embeddings()
    vocabulary = embedding.num_embeddings
    if processes > 1 or type(embedding) is not nn.Embedding:
        return {"trained": vocabulary, "of": vocabulary}
    used = [i for i in used_token_ids(input_ids, special_ids) if 0 <= i < vocabulary]
    if len(used) > (1 - MIN_UNUSED_SHARE) * vocabulary:
        return {"trained": vocabulary, "of": vocabulary}
    model.set_input_embeddings(_module_class()(embedding, used))
    return {"trained": len(used), "of": vocabulary}


def parameter_count(model) -> int:
    """The model's parameters, the frozen embedding rows of a `UsedRowsEmbedding` included."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, _module_class()):
            count += module.frozen.numel() - module.rows.numel()
    return count


@functools.cache
def _module_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class UsedRowsEmbedding(nn.Module):
        """An nn.Embedding whose used rows train and whose other rows stay frozen (module docstring)."""

        def __init__(self, embedding: nn.Embedding, used: list[int]):
            super().__init__()
            weight = embedding.weight.detach()
            self.num_embeddings, self.embedding_dim = weight.shape
            self.padding_idx = embedding.padding_idx
            used_ids = torch.tensor(used, dtype=torch.long, device=weight.device)
            self.register_buffer("used_ids", used_ids, persistent=False)
            row_of = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=weight.device)
            row_of[used_ids] = torch.arange(len(used), device=weight.device)
            self.register_buffer("row_of", row_of, persistent=False)
            self.register_buffer("frozen", weight, persistent=False)  # the old parameter's storage, not a copy
            self.rows = nn.Parameter(weight[used_ids].clone())
            # The padding token's row gets no gradient, as in nn.Embedding(padding_idx=...).
            padding_row = -1 if self.padding_idx is None else int(row_of[self.padding_idx])
            self.padding_row = padding_row if padding_row >= 0 else None

        @property
        def weight(self):
            """The full matrix as it stands (a copy: assigning to it changes nothing)."""
            return self.merged()

        def merged(self):
            full = self.frozen.clone()
            full[self.used_ids] = self.rows.detach().to(full.dtype)
            return full

        def forward(self, input_ids):
            rows = self.row_of[input_ids]
            trained = F.embedding(rows.clamp(min=0), self.rows, padding_idx=self.padding_row)
            # No branch on whether every token is a used one: that would wait on the device every step.
            return torch.where((rows >= 0).unsqueeze(-1), trained, F.embedding(input_ids, self.frozen))

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            destination[prefix + "weight"] = self.merged()

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            key = prefix + "weight"
            if key not in state_dict:
                missing_keys.append(key)
                return
            weight = state_dict[key]
            if tuple(weight.shape) != tuple(self.frozen.shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)}, "
                                  f"the model's is {tuple(self.frozen.shape)}")
                return
            with torch.no_grad():
                self.frozen.copy_(weight)
                self.rows.copy_(self.frozen[self.used_ids])

        def extra_repr(self) -> str:
            return f"{self.num_embeddings}, {self.embedding_dim}, training {len(self.used_ids)} rows"

    return UsedRowsEmbedding


def __getattr__(name: str):
    # The class is built on first use so that importing this module does not import torch (start-up time).
    if name == "UsedRowsEmbedding":
        return _module_class()
    raise AttributeError(name)
