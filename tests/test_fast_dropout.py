"""bertclf.fast_dropout: the same dropout as torch's (distribution, scaling, gradients, padding mask), seeded by
torch's generator, and no change at all to a model in evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from bertclf.cls_only import supports_cls_only
from bertclf.fast_dropout import ATTENTION, keep_mask, masked_dropout, scaled_keep_mask, use_fast_dropout


def _model(seed=0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=3, **overrides)
    return BertForSequenceClassification(config)


def _padded_inputs():
    torch.manual_seed(1)
    input_ids = torch.randint(5, 100, (5, 13))
    attention_mask = torch.ones_like(input_ids)
    for row, length in enumerate([13, 4, 9, 1, 7]):
        attention_mask[row, length:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def test_masks_are_bernoulli_with_the_dropout_probability_and_keep_the_expectation():
    torch.manual_seed(0)
    keep, scale = keep_mask((1000, 1000), 0.1)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    share = keep.float().mean().item()
    assert abs(share - 0.9) < 0.002  # 10^6 draws: the standard error is 0.0003
    assert scale == pytest.approx(1 / 0.9, rel=1e-4)
    torch.manual_seed(0)
    scaled = scaled_keep_mask((1000, 1000), 0.1)  # float32 activations: the same draws, the scale folded in
    assert scaled.dtype == torch.float32 and torch.equal(scaled, keep.float() * scale)
    x = torch.randn(1000, 1000, dtype=torch.bfloat16)
    torch.manual_seed(0)
    y = masked_dropout(x, 0.1)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y == 0, ~keep | (x == 0))  # the same seed, the same mask
    torch.testing.assert_close(y[keep], (x[keep].float() * scale).bfloat16())
    # Neighbouring elements and rows are not correlated (four masks come from each 64-bit word).
    flat = keep.float().flatten()
    correlation = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()
    assert abs(correlation) < 0.01


def test_masks_follow_torchs_generator():
    torch.manual_seed(7)
    first, _ = keep_mask((64, 64), 0.5)
    second, _ = keep_mask((64, 64), 0.5)
    torch.manual_seed(7)
    again, _ = keep_mask((64, 64), 0.5)
    assert torch.equal(first, again)  # --seed (and a resumed generator) decides every mask
    assert not torch.equal(first, second)  # each call draws a new mask


def test_the_gradient_is_masked_and_scaled_like_the_output():
    x = torch.randn(50, 40, requires_grad=True)
    torch.manual_seed(3)
    y = masked_dropout(x, 0.25)
    y.backward(torch.ones_like(y))
    torch.manual_seed(3)
    keep, scale = keep_mask((50, 40), 0.25)
    assert torch.equal(x.grad, keep.float() * scale)


def test_evaluation_is_unchanged_bit_for_bit_and_the_saved_config_is_plain(tmp_path):
    plain, fast = _model().eval(), _model().eval()
    assert use_fast_dropout(fast)
    assert fast.config._attn_implementation == ATTENTION and supports_cls_only(fast)
    inputs = _padded_inputs()
    with torch.inference_mode():
        assert torch.equal(fast(**inputs).logits, plain(**inputs).logits)
    fast.save_pretrained(tmp_path)
    assert ATTENTION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"
    assert not any(type(m).__name__ == "FastDropout" for m in reloaded.modules())


def test_training_attention_respects_padding_and_matches_sdpa_without_drops():
    """A dropout probability too small to drop anything (1e-9 rounds to 0 in 1/65,536) runs the training path
    of the attention (scores, softmax, mask, values) with every weight kept: it must give sdpa's outputs, padding
    masked, and the same gradients."""
    plain = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    fast = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=1e-9).train()
    assert use_fast_dropout(fast)
    inputs = _padded_inputs()
    labels = torch.tensor([0, 1, 2, 0, 1])
    plain_out, fast_out = plain(**inputs, labels=labels), fast(**inputs, labels=labels)
    torch.testing.assert_close(fast_out.logits, plain_out.logits, atol=1e-5, rtol=1e-5)
    plain_out.loss.backward()
    fast_out.loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    # Padding matters: changing a padded token's id changes nothing.
    changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
    changed["input_ids"][1, 10] = 42
    torch.testing.assert_close(fast(**changed).logits[1], fast_out.logits[1], atol=1e-6, rtol=1e-6)


def test_training_drops_and_the_same_seed_gives_the_same_step():
    model = _model()
    assert use_fast_dropout(model)
    model.train()
    inputs = _padded_inputs()
    torch.manual_seed(5)
    first = model(**inputs).logits
    torch.manual_seed(5)
    again = model(**inputs).logits
    other = model(**inputs).logits
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)  # dropout is on: another draw, other logits
    with torch.inference_mode():
        model.eval()
        assert torch.equal(model(**inputs).logits, model(**inputs).logits)


def test_other_attention_implementations_and_the_opt_out_are_left_alone(monkeypatch):
    model = _model(attn_implementation="eager")
    assert not use_fast_dropout(model)
    assert model.config._attn_implementation == "eager"
    assert all(type(m).__name__ != "FastDropout" for m in model.modules())
    monkeypatch.setenv("BERTCLF_FAST_DROPOUT", "0")
    model = _model()
    assert not use_fast_dropout(model)
    assert model.config._attn_implementation == "sdpa"
    assert all(type(m).__name__ != "FastDropout" for m in model.modules())
