"""Verdicts with error bars: bootstrap intervals, bound gates, `bertclf compare` (paired bootstrap, McNemar),
calibration metrics, JUnit and Markdown reports. The tests assert the statistics, not only that they run."""

import csv
import json
import math
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import EXAMPLES, write_csv

from bertclf.errors import EXIT_DATA, EXIT_GATE_FAILED, EXIT_USAGE

TEST_FILE = EXAMPLES / "en_topics_test.csv"


def _test_rows() -> list[tuple[str, str]]:
    with TEST_FILE.open(encoding="utf-8", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def _eval_json(cli, run, data, *extra):
    code, stdout, stderr = cli("eval", run, data, "--json", "--cpu", *extra)
    assert code == 0, stderr
    return json.loads(stdout)


def _width(interval):
    return interval[1] - interval[0]


@pytest.fixture(scope="module")
def weak_run(tiny_model_dir, tmp_path_factory, cli):
    """The tiny model trained for 2 steps: clearly worse than tiny_run."""
    output = tmp_path_factory.mktemp("runs") / "weak"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "--model", tiny_model_dir, "-o", output,
                          "--max-steps", "2", "--batch-size", "16", "--lr", "2e-3", "--cpu")
    assert code == 0, stderr
    return output


# ----- the statistics, on arrays ------------------------------------------------------------------------------

def _random_single_label(n, k, seed=1):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    gold = rng.integers(0, k, n)
    logits[np.arange(n), gold] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return gold, probs


@pytest.mark.parametrize("k", [2, 4, 9])
def test_vectorised_replicate_reproduces_scikit_learn_on_the_identity_resample(k):
    from bertclf.intervals import Rows, replicate_metrics
    from bertclf.labels import LabelSpace
    from bertclf.metrics import score

    gold, probs = _random_single_label(300, k)
    space = LabelSpace(tuple(str(i) for i in range(k)))
    point = score(probs, gold, space)
    got = replicate_metrics(Rows(gold, probs.argmax(axis=1), probs, False), np.arange(300)[None])
    scalars = {name: value for name, value in point.items() if isinstance(value, float)}
    assert set(scalars) == set(got)
    for name, value in scalars.items():
        assert got[name][0] == pytest.approx(value, abs=1e-10), name


def test_vectorised_multi_label_replicate_reproduces_scikit_learn():
    from bertclf.intervals import Rows, replicate_metrics
    from bertclf.labels import LabelSpace
    from bertclf.metrics import score

    rng = np.random.default_rng(3)
    gold = (rng.random((250, 5)) < 0.3).astype(np.int64)
    gold[:, 4] = 0  # a label no row has: no ROC-AUC, zero-division F1
    probs = np.clip(rng.random((250, 5)) * 0.7 + 0.3 * gold, 0, 1)
    thresholds = np.array([0.5, 0.4, 0.6, 0.5, 0.5])
    space = LabelSpace(tuple("abcde"), multi_label=True)
    point = score(probs, gold.astype(np.float32), space, thresholds)
    got = replicate_metrics(Rows(gold, space.decide(probs, thresholds), probs, True), np.arange(250)[None])
    scalars = {name: value for name, value in point.items() if isinstance(value, float)}
    assert set(scalars) == set(got)
    for name, value in scalars.items():
        assert got[name][0] == pytest.approx(value, abs=1e-10), name


def test_accuracy_interval_matches_the_binomial_standard_error():
    """On n rows with accuracy p the 95% interval is about p +/- 1.96 sqrt(p (1 - p) / n)."""
    from bertclf.intervals import Rows, bootstrap, percentile_interval

    n, accuracy = 1000, 0.85
    gold, probs = _random_single_label(n, 3, seed=5)
    predicted = gold.copy()
    wrong = np.random.default_rng(0).permutation(n)[: round(n * (1 - accuracy))]
    predicted[wrong] = (gold[wrong] + 1) % 3
    replicates = bootstrap(Rows(gold, predicted, probs, False), 2000, seed=0)
    lower, upper = percentile_interval(replicates["accuracy"], 0.95)
    expected = 2 * 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)
    assert lower < accuracy < upper
    assert upper - lower == pytest.approx(expected, rel=0.15)


def test_paired_bootstrap_of_a_model_against_itself_is_exactly_zero():
    from bertclf.intervals import Rows, paired_bootstrap

    gold, probs = _random_single_label(200, 4)
    rows = Rows(gold, probs.argmax(axis=1), probs, False)
    base, cand = paired_bootstrap(rows, rows, 300, seed=2)
    assert all((cand[name] - base[name] == 0)[np.isfinite(base[name])].all() for name in base)


def test_calibration_metrics_by_hand():
    from bertclf.metrics import calibration_metrics

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    gold = np.array([0, 1, 1, 1])
    # top probabilities 0.9 (right), 0.6 (wrong), 0.7 (right), 0.8 (right), each alone in its 1/15 bin
    ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8)) / 4
    brier = (2 * 0.1**2 + 2 * 0.6**2 + 2 * 0.3**2 + 2 * 0.2**2) / 4
    nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4
    assert calibration_metrics(probs, gold) == pytest.approx({"ece": ece, "brier": brier, "nll": nll})
    # Rows sharing a bin: their gaps cancel inside the bin (0.95 right, 0.95 wrong -> |1 - 1.9| / 2).
    assert calibration_metrics(np.array([[0.95, 0.05], [0.95, 0.05]]), np.array([0, 1]))["ece"] == \
        pytest.approx(abs(1 - 1.9) / 2)


def test_mcnemar_p_value_is_the_hand_computed_binomial():
    from bertclf.compare import mcnemar

    # 10 rows: both right on 2, only the baseline on 1, only the candidate on 7.
    baseline = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    candidate = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    result = mcnemar(baseline, candidate)
    assert (result["baseline_only"], result["candidate_only"], result["both_right"]) == (1, 7, 2)
    # two-sided: 2 * P(X <= 1), X ~ Binomial(8, 1/2) = 2 * (1 + 8) / 256
    assert result["p_value"] == pytest.approx(2 * (math.comb(8, 0) + math.comb(8, 1)) / 2**8)
    assert mcnemar(baseline, baseline)["p_value"] == 1.0


# ----- eval ---------------------------------------------------------------------------------------------------

def test_intervals_contain_the_point_and_narrow_as_rows_are_added(tiny_run, tmp_path, cli):
    rows = _test_rows()
    small = write_csv(tmp_path / "small.csv", rows[:40])
    large = write_csv(tmp_path / "large.csv", rows[:40] * 4)  # the same rows' distribution, 4x the rows
    reports = [_eval_json(cli, tiny_run, path) for path in (small, large)]
    for report in reports:
        assert report["bootstrap"] == {"method": "percentile", "replicates": 1000, "confidence": 0.95, "seed": 0}
        for name in ("accuracy", "macro_f1", "weighted_f1", "mcc", "brier", "nll"):
            lower, upper = report["intervals"][name]
            assert lower <= report["metrics"][name] <= upper, name
    small_report, large_report = reports
    assert small_report["metrics"]["accuracy"] == large_report["metrics"]["accuracy"]
    for name in ("accuracy", "macro_f1", "brier", "nll"):
        small_width, large_width = _width(small_report["intervals"][name]), _width(large_report["intervals"][name])
        assert 0 < large_width < 0.75 * small_width, name  # about half: the width goes as 1/sqrt(rows)


def test_same_seed_same_intervals(tiny_run, cli):
    first = _eval_json(cli, tiny_run, TEST_FILE, "--seed", "7", "--bootstrap", "300")
    again = _eval_json(cli, tiny_run, TEST_FILE, "--seed", "7", "--bootstrap", "300")
    other = _eval_json(cli, tiny_run, TEST_FILE, "--seed", "8", "--bootstrap", "300")
    assert first["intervals"] == again["intervals"]
    assert first["intervals"] != other["intervals"]
    off = _eval_json(cli, tiny_run, TEST_FILE, "--bootstrap", "0")
    assert "intervals" not in off and off["metrics"] == first["metrics"]
    code, stdout, _ = cli("eval", tiny_run, TEST_FILE, "--cpu", "--confidence", "0.9", "--bootstrap", "200")
    assert code == 0 and "90% CI" in stdout


def test_a_gate_on_the_lower_bound(tiny_run, cli):
    report = _eval_json(cli, tiny_run, TEST_FILE)
    lower, point = report["intervals"]["accuracy"][0], report["metrics"]["accuracy"]
    assert lower < point
    between = round((lower + point) / 2, 6)
    code, stdout, stderr = cli("eval", tiny_run, TEST_FILE, "--cpu", "--json", "--fail-under", f"accuracy={between}",
                               "--fail-under", f"accuracy.lower={between}")
    assert code == EXIT_GATE_FAILED, stderr
    gates = json.loads(stdout)["gates"]
    assert gates["accuracy"]["passed"] and gates["accuracy"]["bound"] == "point"
    assert not gates["accuracy.lower"]["passed"] and gates["accuracy.lower"]["value"] == lower
    assert "accuracy.lower" in stderr and "short by" in stderr
    for bad in (["--fail-under", "accuracy.lower=nan"], ["--fail-under", "subset_accuracy.lower=0.5"],
                ["--fail-under", "accuracy.lower=0.5", "--bootstrap", "0"], ["--fail-under", "accuracy.middle=0.5"],
                ["--confidence", "1.5"], ["--bootstrap", "-1"], ["--seed", "-1"]):
        code, stdout, stderr = cli("eval", tiny_run, TEST_FILE, "--cpu", *bad)
        assert code == EXIT_USAGE and stdout == "", (bad, stderr)
        assert bad[0] in stderr, (bad, stderr)


def test_junit_and_markdown_reports(tiny_run, tmp_path, cli):
    junit, markdown = tmp_path / "ci" / "eval.xml", tmp_path / "ci" / "summary.md"
    code, _, stderr = cli("eval", tiny_run, TEST_FILE, "--cpu", "--fail-under", "accuracy=0.01",
                          "--fail-under", "macro_f1.lower=1.01", "--junit", junit, "--markdown", markdown)
    assert code == EXIT_GATE_FAILED, stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["accuracy >= 0.01"].find("failure") is None
    failure = cases["macro_f1.lower >= 1.01"].find("failure")
    assert "macro_f1.lower" in failure.get("message") and "< 1.01" in failure.get("message")
    assert "bound=lower" in failure.text and "threshold=1.01" in failure.text and "value=0." in failure.text
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert {"accuracy", "accuracy.lower", "accuracy.upper", "ece", "brier", "nll"} <= set(properties)
    text = markdown.read_text(encoding="utf-8")
    assert "| metric | value | 95% CI |" in text
    assert any(line.startswith("| accuracy | 0.") and line.count("[") == 1 for line in text.splitlines())
    assert "| macro_f1.lower |" in text and "**FAIL**" in text and "Gates: FAILED" in text
    assert sorted(p.name for p in junit.parent.iterdir()) == ["eval.xml", "summary.md"]  # no temporary file left
    # No gates: no testcases, the metrics still there as properties.
    code, _, _ = cli("eval", tiny_run, TEST_FILE, "--cpu", "--junit", junit)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert code == 0 and suite.get("tests") == "0" and not list(suite.iter("testcase"))
    assert "macro_f1" in {p.get("name") for p in suite.iter("property")}


def test_eval_reports_calibration_and_writes_the_reliability_diagram(tiny_run, tmp_path, cli):
    code, _, stderr = cli("eval", tiny_run, TEST_FILE, "--cpu", "-o", tmp_path / "report")
    assert code == 0, stderr
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert 0 <= saved["metrics"]["ece"] <= 1 and 0 <= saved["metrics"]["brier"] <= 2 and saved["metrics"]["nll"] > 0
    assert set(saved["intervals"]) >= {"accuracy", "macro_f1", "ece", "brier", "nll", "roc_auc"}
    assert (tmp_path / "report" / "reliability_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]


def test_multi_label_eval_has_intervals(tiny_model_dir, tmp_path, cli):
    run = tmp_path / "ml"
    code, _, stderr = cli("train", EXAMPLES / "en_topics_multilabel.csv", "--multi-label", "--model", tiny_model_dir,
                          "-o", run, "--max-steps", "10", "--batch-size", "16", "--lr", "2e-3", "--cpu")
    assert code == 0, stderr
    report = _eval_json(cli, run, EXAMPLES / "en_topics_test_multilabel.csv", "--bootstrap", "300")
    for name in ("subset_accuracy", "hamming_loss", "micro_f1", "macro_f1", "samples_f1", "loss"):
        lower, upper = report["intervals"][name]
        assert lower <= report["metrics"][name] <= upper, name
    assert "ece" not in report["intervals"]
    code, _, stderr = cli("eval", run, EXAMPLES / "en_topics_test_multilabel.csv", "--cpu", "--fail-under",
                          "accuracy.lower=0.5")
    assert code == EXIT_USAGE and "single-label" not in stderr and "accuracy.lower" in stderr


# ----- compare ------------------------------------------------------------------------------------------------

def test_compare_a_run_with_itself_is_exactly_zero_and_non_inferior(tiny_run, tmp_path, cli):
    code, stdout, stderr = cli("compare", tiny_run, tiny_run, TEST_FILE, "--cpu", "--json",
                               "--non-inferiority", "macro_f1=0.01", "--superiority", "accuracy", "-o",
                               tmp_path / "self")
    assert code == EXIT_GATE_FAILED, stderr  # not superior to itself
    report = json.loads(stdout)
    assert report["rows_compared"] == 80 and report["rows_disagreeing"] == 0
    for name, diff in report["differences"].items():
        if diff["difference"] is not None:
            assert diff["difference"] == 0.0 and diff["interval"] == [0.0, 0.0], name
    assert report["mcnemar"] == {**report["mcnemar"], "baseline_only": 0, "candidate_only": 0, "p_value": 1.0}
    checks = {check["kind"]: check for check in report["checks"]}
    assert checks["non-inferiority"]["passed"] and not checks["superiority"]["passed"]
    with (tmp_path / "self" / "disagreements.csv").open(encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == []
    code, _, stderr = cli("compare", tiny_run, tiny_run, TEST_FILE, "--cpu", "--non-inferiority", "macro_f1=0.01")
    assert code == 0, stderr


def test_compare_against_a_clearly_worse_run_fails_non_inferiority(tiny_run, weak_run, tmp_path, cli):
    junit, markdown = tmp_path / "compare.xml", tmp_path / "compare.md"
    code, stdout, stderr = cli("compare", tiny_run, weak_run, TEST_FILE, "--cpu", "--json", "--non-inferiority",
                               "macro_f1=0.01", "-o", tmp_path / "out", "--junit", junit, "--markdown", markdown)
    assert code == EXIT_GATE_FAILED, stderr
    assert "non-inferiority macro_f1" in stderr
    report = json.loads(stdout)
    diff = report["differences"]["macro_f1"]
    assert diff["difference"] == pytest.approx(report["candidate"]["metrics"]["macro_f1"]
                                               - report["baseline"]["metrics"]["macro_f1"])
    lower, upper = diff["interval"]
    assert lower <= diff["difference"] <= upper < -0.01
    assert report["verdict"] == "fail" and report["mcnemar"]["p_value"] < 0.05
    assert report["mcnemar"]["baseline_only"] > report["mcnemar"]["candidate_only"]
    with (tmp_path / "out" / "disagreements.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == report["rows_disagreeing"] > 0
    assert list(rows[0]) == ["row", "text", "gold", "baseline", "candidate", "baseline_score", "candidate_score"]
    assert all(row["baseline"] != row["candidate"] and 0 < float(row["candidate_score"]) <= 1 for row in rows)
    texts = dict((i + 1, text) for i, (text, _) in enumerate(_test_rows()))
    assert all(texts[int(row["row"])] == row["text"] for row in rows)
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and "threshold=-0.01" in failure.text
    text = markdown.read_text(encoding="utf-8")
    assert "| macro_f1 |" in text and "Verdict: FAIL" in text and "McNemar" in text
    # The other way round, the strong run is superior.
    code, stdout, stderr = cli("compare", weak_run, tiny_run, TEST_FILE, "--cpu", "--superiority", "accuracy")
    assert code == 0, stderr
    assert "superiority accuracy" in stdout


def test_compare_refuses_runs_with_different_label_sets(tiny_run, tmp_path, cli):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    manifest = json.loads((other / "bertclf.json").read_text())
    manifest["labels"] = [("climate" if label == "weather" else label) for label in manifest["labels"]]
    (other / "bertclf.json").write_text(json.dumps(manifest))
    code, stdout, stderr = cli("compare", tiny_run, other, TEST_FILE, "--cpu")
    assert code == EXIT_DATA and stdout == ""
    assert "'weather'" in stderr and "'climate'" in stderr


def test_compare_usage_errors(tiny_run, cli):
    for bad in (["--non-inferiority", "macro_f1=-0.1"], ["--non-inferiority", "f2=0.1"],
                ["--non-inferiority", "macro_f1=inf"], ["--superiority", "f2"],
                ["--superiority", "subset_accuracy"], ["--non-inferiority", "macro_f1=0.01", "--bootstrap", "0"]):
        code, stdout, stderr = cli("compare", tiny_run, tiny_run, TEST_FILE, "--cpu", *bad)
        assert code == EXIT_USAGE and stdout == "", (bad, stderr)


def test_compare_help_imports_nothing_heavy():
    code = ("import sys\nfrom bertclf.cli import app\ntry:\n    app(['compare', '--help'], prog_name='bertclf')\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'sklearn', 'scipy', 'pandas') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_reports_are_written_whole_through_links_and_to_devices(tmp_path):
    import os

    from bertclf.ci_reports import write_bytes

    real = tmp_path / "real.md"
    real.write_text("old", encoding="utf-8")
    (tmp_path / "link.md").symlink_to(real)
    write_bytes(tmp_path / "link.md", b"new", "--markdown link.md")
    assert (tmp_path / "link.md").is_symlink() and real.read_text(encoding="utf-8") == "new"
    write_bytes(os.devnull, b"x", "--markdown /dev/null")  # a device is written to, never replaced
    assert not os.path.isfile(os.devnull)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.md", "real.md"]


def test_compare_output_into_a_run_directory_is_refused(tiny_run, cli):
    code, _, stderr = cli("compare", tiny_run, tiny_run, TEST_FILE, "--cpu", "-o", tiny_run)
    assert code == EXIT_USAGE and "run directory" in stderr
    assert not (tiny_run / "disagreements.csv").exists()
