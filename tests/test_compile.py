"""--compile (bertclf.compiling): compiled training and prediction give the same results as eager, a whole run
compiles one graph whatever the lengths, weights keep their names, and what cannot work says so."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import EXAMPLES

from bertclf.compiling import has_cxx

needs_cxx = pytest.mark.skipif(not has_cxx(), reason="torch.compile on the CPU needs a C++ compiler")


def _texts_of_many_lengths() -> list[tuple[str, str]]:
    """en_topics rows joined into texts of 1 to about 100 tokens, so batches come in many lengths."""
    with (EXAMPLES / "en_topics.csv").open(encoding="utf-8") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    out = []
    for i, (_, label) in enumerate(rows):
        words = " ".join(t for t, _ in rows[i:i + 1 + i % 8]).split()
        out.append((" ".join(words[:1 + (i * 7) % 110]), label))
    return out


@pytest.fixture(scope="module")
def one_layer_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny BERT cut to one layer: compile time grows with the layers, and one shows everything here."""
    from transformers import BertModel

    directory = tmp_path_factory.mktemp("one-layer-bert")
    model = BertModel.from_pretrained(str(tiny_model_dir), num_hidden_layers=1)
    model.save_pretrained(str(directory))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (tiny_model_dir / name).exists():
            (directory / name).write_bytes((tiny_model_dir / name).read_bytes())
    return directory


def _train_compiled(folder, model_dir, cli, backend: str):
    data = folder / "train.csv"
    with data.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("text", "label"))
        writer.writerows(_texts_of_many_lengths())
    output = folder / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTCLF_COMPILE_BACKEND", backend)
        # fp32: --mixed-precision auto would pick bf16 on some CPUs and not on others.
        code, stdout, stderr = cli("train", data, "--model", model_dir, "-o", output, "--max-steps", "8",
                                   "--batch-size", "8", "--lr", "2e-3", "--cpu", "--mixed-precision", "no",
                                   "--compile", "yes", "--json")
    assert code == 0, stderr
    return output, json.loads(stdout), stderr


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory, one_layer_model_dir, cli):
    """A short `train --compile yes` on texts of many lengths: (run directory, --json summary, stderr). Compiled
    with the aot_eager backend: the same graph capture, autograd graph and shape handling as inductor, without
    generating C++ (a minute on a cold cache for inductor; test_compiled_training_with_inductor, marked slow,
    runs that). Prediction below compiles with inductor."""
    return _train_compiled(tmp_path_factory.mktemp("compiled"), one_layer_model_dir, cli, "aot_eager")


def test_compiled_training_completes_with_one_graph_and_plain_weight_names(compiled_run):
    _check_compiled_run(*compiled_run)


@needs_cxx
@pytest.mark.slow
def test_compiled_training_with_inductor(tmp_path, one_layer_model_dir, cli):
    output, summary, stderr = _train_compiled(tmp_path, one_layer_model_dir, cli, "inductor")
    assert summary["compile"]["backend"] == "inductor"
    _check_compiled_run(output, summary, stderr)


def _check_compiled_run(output, summary, stderr):
    from safetensors import safe_open

    from bertclf.predict import Predictor

    manifest = json.loads((output / "bertclf.json").read_text())
    assert manifest["completed"] is True
    assert manifest["compile"]["enabled"] is True and manifest["compile"]["requested"] == "yes"
    # 8 length-grouped batches of different lengths, and still the one graph compiled up front.
    assert manifest["compile"]["graphs"] == 1
    # Compile time is reported apart from the training time that samples/s is computed from.
    assert manifest["timings"]["compile_seconds"] > 0
    assert summary["timings"]["compile_seconds"] == manifest["timings"]["compile_seconds"]
    assert summary["timings"]["samples_per_second"] == pytest.approx(
        8 * 8 / summary["timings"]["train_seconds"], rel=0.2)
    assert "Compiled in" in stderr
    with safe_open(str(output / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert names and not any("_orig_mod" in name for name in names)
    assert "bert.embeddings.word_embeddings.weight" in names
    Predictor.from_dir(output, cpu=True).predict(["a loadable run"])


@needs_cxx
def test_compiled_predict_matches_eager_over_many_lengths_without_recompiling(compiled_run):
    from bertclf.compiling import graphs_compiled
    from bertclf.predict import Predictor

    output, _, _ = compiled_run
    texts = [text for text, _ in _texts_of_many_lengths()]
    # fp32 on both sides: in bf16 (what auto picks on a CPU with native bf16) a text's scores move by about 1e-4
    # with the batch it lands in, compiled or not, which would hide what this test is about.
    eager = Predictor.from_dir(output, cpu=True, compile="no", precision="fp32")
    expected = eager.predict_proba(texts)
    compiled = Predictor.from_dir(output, cpu=True, compile="yes", precision="fp32")
    report = compiled.compile_report
    assert report.enabled and report.seconds > 0
    before = graphs_compiled()
    # Batches of every size (the token budget cuts long texts into small batches), one text alone, one of each
    # length: no new graph.
    probs = compiled.predict_proba(texts)
    single = compiled.predict_proba(texts[:1])
    for batch_size in (1, 3, 7):
        np.testing.assert_allclose(compiled.predict_proba(texts[:20], batch_size=batch_size), expected[:20],
                                   atol=1e-5, rtol=0)
    assert graphs_compiled() == before
    assert len({len(ids) for ids in compiled.probabilities_of(texts)[1].input_ids}) > 20
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(single, expected[:1], atol=1e-5, rtol=0)
    assert (probs.argmax(axis=1) == expected.argmax(axis=1)).all()


@needs_cxx
def test_predict_cli_reports_compile_time_on_stderr(compiled_run, cli):
    output, _, _ = compiled_run
    code, stdout, stderr = cli("predict", output, "--text", "Heavy snow tonight.", "--text", "A goal.",
                               "--compile", "yes", "--cpu")
    assert code == 0, stderr
    assert len(stdout.strip().splitlines()) == 2
    assert "torch.compile took" in stderr and "rows/s" in stderr


@pytest.mark.parametrize("command", ["train", "predict"])
def test_bad_compile_value_is_a_usage_error_naming_the_flag(command, cli, tmp_path):
    args = [EXAMPLES / "en_topics.csv", "-o", tmp_path / "run"] if command == "train" \
        else [tmp_path, "--text", "a text"]
    code, _, stderr = cli(command, *args, "--compile", "sometimes")
    assert code == 2
    assert "--compile" in stderr and "sometimes" in stderr and "auto, yes, no" in stderr


def test_compile_yes_with_int8_or_onnx_is_a_usage_error(cli, tmp_path):
    for extra in (["--quantize", "int8"], ["--backend", "onnx"]):
        code, _, stderr = cli("predict", tmp_path, "--text", "a text", "--compile", "yes", *extra)
        assert code == 2 and "--compile" in stderr


def test_without_a_cxx_compiler_compile_yes_fails_clearly(tiny_model_dir, cli, monkeypatch, tmp_path):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    code, stdout, stderr = cli("train", EXAMPLES / "en_topics.csv", "--model", tiny_model_dir, "-o", tmp_path / "run",
                               "--compile", "yes", "--cpu", "--max-steps", "1")
    assert code == 2 and stdout == ""
    assert "C++ compiler" in stderr and "--compile no" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run" / "bertclf.json").exists()


def test_auto_compiles_nowhere_measured_not_to_pay():
    from bertclf.compiling import resolve_compile

    assert resolve_compile("auto", "cpu") is False
    assert resolve_compile("auto", "cuda") is False
    assert resolve_compile("no", "cpu") is False


def test_warm_up_shapes_avoid_equal_batch_and_length():
    from bertclf.compiling import warm_up_rows

    assert warm_up_rows([16] * 40, 16) == 15  # 16 rows of 16 tokens would tie the two dimensions together
    assert warm_up_rows([16] * 40, 32) == 32
    assert warm_up_rows([5], 32) == 2  # never a batch of one
