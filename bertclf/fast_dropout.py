"""Dropout for CPU training whose random masks cost little: drawn by numpy's PCG64, not torch's generator.

Why: torch's CPU generator (a Mersenne Twister, one thread, so that results do not depend on the thread count)
fills about 60-100 million values a second. A BERT layer drops out its attention probabilities and two hidden
states, so a training step draws several random values per activation, and on 2 cores that was the largest
single cost after the matmuls: `aten::bernoulli_` took 17.5% of a bf16 MiniLM training step's CPU time, more
than all attention matmuls together (torch.profiler, en_wordnet_verbs, batch 32). It also forces the attention
off the fused kernel: torch's CPU flash attention refuses a dropout probability above 0.

Here each dropout call takes one 62-bit seed from torch's default generator and has numpy's PCG64 draw the
mask, 16 bits per element, four elements per 64-bit word: some 20 times faster than `bernoulli_`. The seed comes
from torch's generator, so `--seed` still fixes every mask, a resumed run (its checkpoint restores torch's
generator) draws the masks the uninterrupted run drew, and nothing about the run's reproducibility changes.
The masks are Bernoulli with the model's dropout probability rounded to 1/65,536 (0.1 -> 0.1000061), and kept
values are scaled by the exact inverse of the keep probability, so activations keep their expectation.

What is replaced, on the CPU only (CUDA's generator is fast; there the modules run torch's own dropout):
- every `nn.Dropout` module (embeddings, attention output, feed-forward output, classifier) by `FastDropout`;
- the attention, through transformers' attention interface: while training with dropout, attention runs
  as `eager_attention_forward` does (scores, softmax, dropout, values) with our mask; in evaluation (no
  dropout) it is transformers' own sdpa attention, the same computation, bit for bit, as the untouched model.

`config.json` never records the replacement (transformers does not save the attention implementation), so a
saved model loads as a plain BERT. Not used with `--compile`: inductor generates its own random numbers.
"""

from __future__ import annotations

import math

# The attention implementation's name in transformers' attention and mask registries.
ATTENTION = "bertclf_sdpa_fast_dropout"
_BITS = 16
_RANGE = 1 << _BITS


def _draw(count: int, p: float):
    """`count` uniform 16-bit numbers seeded from torch's generator, the threshold below which one drops, and the
    scale that makes kept values keep their expectation."""
    import numpy as np
    import torch

    seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's generator: --seed and resume govern the masks
    words = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((count + 3) // 4)
    threshold = round(p * _RANGE)
    return words.view(np.uint16)[:count], threshold, _RANGE / (_RANGE - threshold)


def keep_mask(shape, p: float):
    """A boolean tensor of `shape`, True with probability 1 - p (p rounded to 1/65,536), and the scale that
    makes kept values keep their expectation: 1 / that probability."""
    import torch

    draws, threshold, scale = _draw(math.prod(shape), p)
    return torch.from_numpy(draws >= threshold).view(shape), scale


def scaled_keep_mask(shape, p: float):
    """`keep_mask`'s mask (the same draws for the same generator state) as float32: the scale where kept, 0
    where dropped, so one multiplication drops and rescales. numpy writes the comparison straight into float32:
    torch multiplies a float tensor by a bool one 2.6 times slower than by a float one (6.3M elements: 5.0
    against 1.9 ms), and converting bool to float in torch costs more than the numpy comparison."""
    import numpy as np
    import torch

    draws, threshold, scale = _draw(math.prod(shape), p)
    mask = np.empty(draws.shape, dtype=np.float32)
    np.greater_equal(draws, threshold, out=mask, casting="unsafe")
    mask *= np.float32(scale)
    return torch.from_numpy(mask).view(shape)


def masked_dropout(x, p: float):
    """Training-mode dropout of `x` with a numpy-drawn mask. In float32 the mask is float32 with the scale
    folded in (one multiplication forward, one backward; autograd keeps the mask, 4 bytes an element); in other
    dtypes it stays boolean (1 byte), times the scale afterwards."""
    import torch

    if x.dtype == torch.float32:
        return x * scaled_keep_mask(x.shape, p)
    keep, scale = keep_mask(x.shape, p)
    return (x * keep).mul_(scale)  # float times bool keeps x's dtype


def _dropout_module():
    from torch import nn

    class FastDropout(nn.Dropout):
        """nn.Dropout whose CPU masks come from `keep_mask`; elsewhere (and in eval mode) nn.Dropout itself."""

        def forward(self, x):
            if not self.training or self.p == 0 or x.device.type != "cpu":
                return super().forward(x)
            return masked_dropout(x, self.p)

    return FastDropout


def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """transformers' attention-function signature. Without dropout (evaluation) or off the CPU: the sdpa
    implementation itself. With dropout on the CPU: the eager computation with `keep_mask`'s mask."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0 or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    # As few passes over the (batch, heads, length, length) scores as the computation allows (6.3M numbers for 8
    # texts of 256 tokens): the queries are scaled, not the scores (length / head size times fewer numbers); the
    # mask is added in place (an addition's backward is free, masked_fill's is another pass); dropout is one
    # multiplication by a float mask with the scale in it. One layer's attention alone, forward and backward, at
    # 8 x 256 tokens: 84.6 -> 61.7 ms; whole MiniLM training steps on zh_reviews: 1.01x (README). The same function
    # as before up to rounding.
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:  # sdpa's mask (ours is registered with sdpa's mask builder): True = attend
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(
                ~attention_mask, torch.finfo(scores.dtype).min)
        scores = scores.add_(attention_mask)
    weights = masked_dropout(torch.softmax(scores, dim=-1), dropout)
    output = torch.matmul(weights.to(value.dtype), value)
    return output.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(ATTENTION, attention)
        # Without a mask builder of its own, transformers gives an unknown implementation no padding mask at all.
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model) -> bool:
    """Give a BERT model (classifier or masked LM) to be trained on the CPU the fast dropout; returns whether it
    was given. Only a model running sdpa attention is (another implementation is left as it is), and not with
    BERTCLF_FAST_DROPOUT=0, which keeps torch's own dropout (to compare with it, or to match an older run)."""
    import os

    from torch import nn

    if os.environ.get("BERTCLF_FAST_DROPOUT", "1") == "0":
        return False
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    _register()
    fast = _dropout_module()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, fast(child.p, child.inplace).train(child.training))
    model.config._attn_implementation = ATTENTION
    return True
