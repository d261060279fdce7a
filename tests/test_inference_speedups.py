"""The two inference shortcuts change how work is batched and computed, never the answers."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from bertclf.cls_only import cls_only_last_layer, supports_cls_only
from bertclf.inference import token_budget_batches


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_cls_only_last_layer_gives_the_full_models_logits(attention):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, num_labels=5, attn_implementation=attention)
    model = BertForSequenceClassification(config).eval()
    assert supports_cls_only(model)
    input_ids = torch.randint(5, 100, (6, 17))
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 9:] = 1  # pairs: the second segment
    attention_mask = torch.ones_like(input_ids)
    for row, length in enumerate([17, 3, 12, 1, 9, 16]):  # padded rows, down to [CLS] alone
        attention_mask[row, length:] = 0
    inputs = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    with torch.inference_mode():
        full = model(**inputs).logits
        with cls_only_last_layer(model):
            shortcut = model(**inputs).logits
        after = model(**inputs).logits
    torch.testing.assert_close(shortcut, full, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, full)  # the layer is restored when the block ends
    assert "forward" not in vars(model.bert.encoder.layer[-1])


def test_cls_only_leaves_models_it_does_not_know_alone():
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, is_decoder=True)
    model = BertForSequenceClassification(config).eval()
    assert not supports_cls_only(model)
    with cls_only_last_layer(model):
        assert "forward" not in vars(model.bert.encoder.layer[-1])


def test_token_budget_batches_keep_the_order_and_both_limits():
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(500)]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = token_budget_batches(lengths, order, max_texts=32, max_tokens=1024)
    assert [i for b in batches for i in b] == order  # every text once, longest first
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 32
        assert len(batch) * width <= 1024 or len(batch) == 1  # a text over the budget goes alone
    assert any(len(b) == 32 for b in batches)  # short texts are capped by the text count
    # Without a token budget (GPU) only the text count applies.
    assert [len(b) for b in token_budget_batches(lengths, order, 64, None)] == [64] * 7 + [52]
