"""How a scratch model starts pre-training (scratch_init.py): heads on neighbours, slow embeddings, own output."""

import torch
from transformers import BertConfig

from bertclf.scratch_init import EMBEDDING_LR_SCALE, embedding_parameters, head_offsets, scratch_model_for_pretraining
from bertclf.train import _build_optimizer


def _model(hidden, heads):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=500, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=4 * hidden, attn_implementation="eager")
    return scratch_model_for_pretraining(config).eval()


def test_every_head_starts_on_its_neighbour():
    for hidden, heads in [(128, 2), (256, 4)]:
        model = _model(hidden, heads)
        ids = torch.randint(5, 500, (1, 96))
        with torch.no_grad():
            attentions = model(input_ids=ids, output_attentions=True).attentions
        rows = torch.arange(10, 86)
        for layer in attentions:
            for head, offset in enumerate(head_offsets(heads)):
                weights = layer[0, head]
                assert (weights[rows].argmax(-1) - rows == offset).all()
                assert weights[rows, rows + offset].mean() > 0.8  # uniform would be about 0.01


def test_offsets_alternate_left_and_right():
    assert head_offsets(4) == [-1, 1, -2, 2]


def test_the_output_layer_is_its_own_and_embeddings_learn_slowly():
    model = _model(128, 2)
    assert model.cls.predictions.decoder.weight.data_ptr() != model.bert.embeddings.word_embeddings.weight.data_ptr()
    optimizer = _build_optimizer(model, type("C", (), {"weight_decay": 0.01})(), 1e-3, embedding_parameters(model),
                                 EMBEDDING_LR_SCALE)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rate[id(model.bert.embeddings.word_embeddings.weight)] == 1e-3 * EMBEDDING_LR_SCALE
    assert rate[id(model.bert.embeddings.LayerNorm.weight)] == 1e-3 * EMBEDDING_LR_SCALE
    assert rate[id(model.cls.predictions.decoder.weight)] == 1e-3
    assert rate[id(model.bert.encoder.layer[0].attention.self.query.weight)] == 1e-3
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    ids = torch.randint(5, 500, (2, 16))
    labels = ids.clone()
    labels[:, ::3] = -100
    model.train()
    model(input_ids=ids, labels=labels).loss.backward()
    # every trainable parameter gets a gradient (DistributedDataParallel waits for each one)
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_without_slow_parameters_the_groups_are_as_before():
    model = _model(128, 2)
    optimizer = _build_optimizer(model, type("C", (), {"weight_decay": 0.01})(), 1e-3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]  # checkpoints of older runs resume
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}
