"""Inference shortcut: the last encoder layer computes only the [CLS] position.

A BERT classifier reads one vector, the last layer's [CLS] output (through the pooler). Every other
position of the last layer is computed and thrown away. Here the last layer still projects keys and
values for all tokens (the [CLS] query attends to them), but the query, attention output, feed-forward
block and LayerNorms run for [CLS] alone. The logits are the same up to float rounding; the work saved is
about 20/24 of one layer (5/6 of a layer's per-token matmul FLOPs), 14% of a 6-layer model.

Inference only: nothing here has a backward pass in mind. Models this does not recognise (not a BERT
sequence classifier, a decoder, an attention implementation other than sdpa/eager) run unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

# Training's validation passes see the model with bertclf.fast_dropout's attention: sdpa itself in eval mode.
from bertclf.fast_dropout import ATTENTION as FAST_DROPOUT_ATTENTION


def supports_cls_only(model) -> bool:
    from bertclf.pooling import pooling_of

    config = getattr(model, "config", None)
    bert = getattr(model, "bert", None)
    return (
        config is not None
        and pooling_of(config) == "cls"  # a mean-pooled classifier reads every position of the last layer
        and bert is not None
        and getattr(bert, "pooler", None) is not None
        and not config.is_decoder
        and not getattr(config, "add_cross_attention", False)
        and not getattr(config, "chunk_size_feed_forward", 0)
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager", FAST_DROPOUT_ATTENTION)
        and len(bert.encoder.layer) > 0
        # A wrapped layer (FSDP and the like) has its own forward, which must not be shadowed.
        and type(bert.encoder.layer[-1]).__name__ == "BertLayer"
    )


def _last_layer_for_cls(layer, hidden_states, attention_mask=None, *args, **kwargs):
    """BertLayer.forward for position 0 only; returns (batch, 1, hidden)."""
    import torch.nn.functional as F

    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    cls = hidden_states[:, :1]
    query = attention.query(cls).view(batch, 1, heads, size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, heads, size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, heads, size).transpose(1, 2)
    # The model's mask is (batch, 1, query length or 1, key length), boolean (sdpa) or additive (eager);
    # the [CLS] query's row of it serves both.
    mask = None if attention_mask is None else attention_mask[..., :1, :]
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling)
    context = context.transpose(1, 2).reshape(batch, 1, heads * size)
    return layer.feed_forward_chunk(layer.attention.output(context, cls))


@contextmanager
def cls_only_last_layer(model):
    """Within the block, the model's last encoder layer computes [CLS] only (see the module docstring)."""
    if not supports_cls_only(model):
        yield model
        return
    import types

    layer = model.bert.encoder.layer[-1]
    layer.forward = types.MethodType(_last_layer_for_cls, layer)  # an instance attribute shadows the class's
    try:
        yield model
    finally:
        del layer.forward
