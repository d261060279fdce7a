"""--pooling: what the classifier reads ([CLS] or the mean of all tokens), chosen, saved and read back."""

import json

import pytest
import torch
from conftest import EXAMPLES, pretrain_dir
from transformers import BertConfig

from bertclf.cls_only import supports_cls_only
from bertclf.errors import EXIT_USAGE
from bertclf.pooling import classifier_class, resolve_pooling, set_pooling


def _tiny_classifier(pooling: str):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=3)
    set_pooling(config, pooling)
    return classifier_class(config)(config).eval()


def test_mean_pooling_leaves_padding_out_and_differs_from_cls():
    model = _tiny_classifier("mean")
    short = torch.tensor([[2, 7, 8, 9, 3]])
    batch = torch.tensor([[2, 7, 8, 9, 3, 0, 0, 0], [2, 11, 12, 13, 14, 15, 16, 3]])
    mask = (batch != 0).long()
    with torch.no_grad():
        alone = model(input_ids=short, attention_mask=torch.ones_like(short)).logits
        padded = model(input_ids=batch, attention_mask=mask).logits
        hidden = model.bert(input_ids=short).last_hidden_state
        by_hand = model.classifier(model.bert.pooler.activation(model.bert.pooler.dense(hidden.mean(1))))
        cls = _tiny_classifier("cls")
        cls.load_state_dict(model.state_dict())
        from_cls = cls(input_ids=short, attention_mask=torch.ones_like(short)).logits
    # The same text gives the same logits alone or beside a longer one: its padding is not in the mean.
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, by_hand, atol=1e-5, rtol=0)
    assert (alone - from_cls).abs().max() > 1e-3  # same weights, another vector read
    assert not supports_cls_only(model) and supports_cls_only(cls)  # the [CLS]-only shortcut would be wrong


def test_auto_means_mean_only_for_a_model_pretrained_from_scratch(tmp_path):
    pretrained = pretrain_dir(tmp_path / "pt", "scratch")
    continued = pretrain_dir(tmp_path / "dapt", "hub")
    assert resolve_pooling("auto", "local", pretrained) == "mean"
    assert resolve_pooling("auto", "local", continued) == "cls"  # continued from a model whose [CLS] was trained
    assert resolve_pooling("auto", "scratch", None) == "cls"
    assert resolve_pooling("auto", "hub", tmp_path) == "cls"
    assert resolve_pooling("cls", "local", pretrained) == "cls"
    assert resolve_pooling("mean", "hub", None) == "mean"


def test_a_mean_pooled_run_is_read_back_the_way_it_was_trained(tiny_model_dir, tmp_path, cli):
    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--pooling", "mean",
                          "--max-steps", "3", "--cpu", "-o", run)
    assert code == 0, stderr
    assert "classifier reads the mean of all tokens" in " ".join(stderr.split())
    assert json.loads((run / "config.json").read_text())["classifier_pooling"] == "mean"
    assert json.loads((run / "bertclf.json").read_text())["pooling"] == "mean"
    card = (run / "README.md").read_text()
    assert "pipeline(" not in card and "classifier_pooling: mean" in card  # transformers alone would read [CLS]
    from bertclf.model import load_run_model

    model = load_run_model(run)
    assert type(model).__name__ == "MeanPooledBertForSequenceClassification"
    code, stdout, stderr = cli("eval", run, EXAMPLES / "en_topics_test.csv", "--json")
    assert code == 0, stderr
    assert 0.0 <= json.loads(stdout)["metrics"]["accuracy"] <= 1.0


def test_an_unknown_pooling_is_a_usage_error(tiny_model_dir, tmp_path, cli):
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--pooling", "max", "--cpu",
                          "-o", tmp_path / "run")
    assert code == EXIT_USAGE and "--pooling" in stderr and "mean" in stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_predict_gives_each_text_the_same_label_in_any_batch(pooling, tiny_model_dir, tmp_path, cli):
    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--pooling", pooling,
                          "--max-steps", "3", "--cpu", "-o", run)
    assert code == 0, stderr
    outputs = []
    for batch in ("1", "7"):
        code, stdout, stderr = cli("predict", run, EXAMPLES / "en_topics_test.csv", "--batch-size", batch)
        assert code == 0, stderr
        outputs.append([json.loads(line)["label"] for line in stdout.splitlines()])
    assert outputs[0] == outputs[1] and len(outputs[0]) > 10
