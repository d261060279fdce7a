"""Training only the word-embedding rows the training data uses (bertclf.used_rows): the same trajectory as the
dense matrix on every used row, the unused rows untouched, and a saved model that is a plain BERT."""

import json

import pytest
import torch
from conftest import EXAMPLES

from bertclf.config import TrainConfig
from bertclf.train import _build_optimizer
from bertclf.used_rows import parameter_count, train_used_rows_only, used_token_ids

VOCABULARY = 300
PAD = 0


def _tiny_classifier(seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCABULARY, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=3, pad_token_id=PAD)
    return BertForSequenceClassification(config)


def _batches(steps: int = 6):
    """Batches over token ids 1..99 only (and padding), with their labels."""
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        ids = torch.randint(1, 100, (4, 12), generator=generator)
        ids[:2, 9:] = PAD
        batches.append((ids, (ids != PAD).long(), torch.randint(0, 3, (4,), generator=generator)))
    return batches


def _train(model, batches) -> list[float]:
    optimizer = _build_optimizer(model, TrainConfig(train_file=EXAMPLES / "en_topics.csv"), 1e-3)
    model.train()
    torch.manual_seed(2)  # the same dropout masks for both models
    losses = []
    for ids, mask, labels in batches:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)  # small: clipping acts on every step
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_the_used_rows_follow_the_dense_trajectory_and_the_others_stay_put():
    batches = _batches()
    dense, swapped = _tiny_classifier(), _tiny_classifier()
    start = dense.bert.embeddings.word_embeddings.weight.detach().clone()
    used = used_token_ids([ids.flatten().tolist() for ids, _, _ in batches], [PAD])
    record = train_used_rows_only(swapped, [ids.flatten().tolist() for ids, _, _ in batches], [PAD], processes=1)
    assert record == {"trained": len(used), "of": VOCABULARY} and len(used) <= 100
    assert parameter_count(swapped) == parameter_count(dense)

    dense_losses, swapped_losses = _train(dense, batches), _train(swapped, batches)
    assert swapped_losses == pytest.approx(dense_losses, rel=1e-5, abs=1e-6)
    after_dense = dense.bert.embeddings.word_embeddings.weight.detach()
    after_swapped = swapped.state_dict()["bert.embeddings.word_embeddings.weight"]
    assert torch.allclose(after_swapped[used], after_dense[used], atol=1e-5)
    assert not torch.allclose(after_swapped[used], start[used])  # the used rows did learn
    unused = [i for i in range(VOCABULARY) if i not in set(used)]
    assert torch.equal(after_swapped[unused], start[unused])  # untouched; dense AdamW decayed them a little
    assert torch.equal(after_swapped[PAD], start[PAD])  # the padding row gets no gradient, as in nn.Embedding
    for name, value in dense.state_dict().items():
        if "word_embeddings" not in name:
            assert torch.allclose(swapped.state_dict()[name], value, atol=1e-5), name


def test_the_state_dict_is_a_plain_berts_and_unseen_tokens_read_the_frozen_rows(tmp_path):
    from transformers import BertForSequenceClassification

    plain, swapped = _tiny_classifier(), _tiny_classifier()
    train_used_rows_only(swapped, [[1, 2, 3, 4]], [PAD], processes=1)
    assert type(swapped.get_input_embeddings()).__name__ == "UsedRowsEmbedding"
    assert set(swapped.state_dict()) == set(plain.state_dict())
    with torch.no_grad():
        swapped.get_input_embeddings().rows.mul_(2.0)  # as if training had moved the used rows
    expected = plain.bert.embeddings.word_embeddings.weight.detach().clone()
    expected[[PAD, 1, 2, 3, 4]] *= 2.0
    assert torch.equal(swapped.state_dict()["bert.embeddings.word_embeddings.weight"], expected)

    swapped.save_pretrained(str(tmp_path))
    reloaded = BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert type(reloaded.get_input_embeddings()).__name__ == "Embedding"
    swapped.eval()
    ids = torch.tensor([[2, 3, 250, 251, 4]])  # 250 and 251 were in no training text
    with torch.no_grad():
        assert torch.allclose(swapped(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-6)

    # A checkpoint's plain weights load back into the swapped module: both parts, from the one matrix.
    fresh = _tiny_classifier(seed=5)
    train_used_rows_only(fresh, [[1, 2, 3, 4]], [PAD], processes=1)
    fresh.load_state_dict(swapped.state_dict())
    assert torch.equal(fresh.state_dict()["bert.embeddings.word_embeddings.weight"], expected)


def test_dense_training_is_kept_where_the_swap_would_not_pay_or_not_fit():
    almost_all = [list(range(1, VOCABULARY - 5))]
    for ids, processes in ((almost_all, 1), ([[1, 2, 3]], 2)):
        model = _tiny_classifier()
        assert train_used_rows_only(model, ids, [PAD], processes) == {"trained": VOCABULARY, "of": VOCABULARY}
        assert type(model.get_input_embeddings()).__name__ == "Embedding"


def test_a_run_trains_only_its_tokens_rows_and_saves_a_plain_model(tiny_model_dir, tmp_path, cli):
    from safetensors.torch import load_file

    output = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "--model", tiny_model_dir, "-o", output,
                          "--epochs", "1", "--cpu")
    assert code == 0, stderr
    rows = json.loads((output / "bertclf.json").read_text())["embedding_rows"]
    vocabulary = len((tiny_model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    assert rows["of"] == vocabulary and 0 < rows["trained"] < 0.9 * vocabulary
    weights = load_file(str(output / "model.safetensors"))
    assert weights["bert.embeddings.word_embeddings.weight"].shape[0] == vocabulary
    assert not any("rows" in name or "frozen" in name for name in weights)
