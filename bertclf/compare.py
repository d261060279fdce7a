"""`bertclf compare`'s core: is the candidate run worse than the baseline on the same labelled rows?

Both runs score the same rows (read once, as `eval` reads them). For each scalar metric: the difference,
candidate minus baseline, with a *paired* bootstrap interval (each resample draws the same rows for both
runs, so the noise the two share cancels), and McNemar's exact test on the rows exactly one run gets right.
A non-inferiority check passes when the interval's worse end stays within the margin (a one-sided test at
(1 - confidence) / 2); a superiority check when the whole interval lies on the better side of 0.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from bertclf.errors import DataError, UsageError


def run_compare(config) -> dict:
    """Score both runs, compare them, judge the checks and write the files asked for. Returns the report;
    the caller turns a failed check into exit 1."""
    from bertclf.config import REPORTED_METRICS
    from bertclf.evaluation import known_rows, read_eval_data, score_rows
    from bertclf.metrics import score
    from bertclf.model import read_manifest
    from bertclf.predict import Predictor

    started = time.perf_counter()
    _check_output_dir(config.report_dir)  # before minutes of scoring
    manifests = read_manifest(config.baseline_dir), read_manifest(config.candidate_dir)
    task = check_comparable(*manifests, config)
    names = REPORTED_METRICS[task]
    wrong = [name for name in (*config.non_inferiority, *config.superiority) if name not in names]
    if wrong:
        raise UsageError(f"{wrong[0]} is not a metric of {task.replace('_', '-')} runs.",
                         hint=f"Compare on one of: {', '.join(names)}.")
    data = read_eval_data(config, manifests[0])
    scored, keep = [], None
    for run_dir in (config.baseline_dir, config.candidate_dir):  # one model in memory at a time
        # Both in fp32: a verdict on two models must not move with a precision one of them alone runs in
        # (--precision auto picks bf16 per run, from that run's own training check).
        predictor = Predictor.from_dir(run_dir, cpu=config.cpu, precision="fp32")
        keep = known_rows(data, predictor.space, config) if keep is None else keep
        rows, _, _ = score_rows(predictor, data, keep, config.batch_size)
        metrics = score(rows.probs, rows.gold, predictor.space, predictor.thresholds)
        scored.append((predictor.space, rows, metrics))
        del predictor
    (space, base_rows, base_metrics), (cand_space, cand_rows, cand_metrics) = scored
    tick = time.perf_counter()
    differences = paired_differences(base_rows, cand_rows, base_metrics, cand_metrics, names, config)
    bootstrap_seconds = time.perf_counter() - tick
    checks = judge(differences, config.non_inferiority, config.superiority)
    disagreements = _disagreements(data, keep, space, cand_space, base_rows, cand_rows)
    report = {
        "baseline": {"run_dir": str(config.baseline_dir), "metrics": {n: base_metrics.get(n) for n in names}},
        "candidate": {"run_dir": str(config.candidate_dir), "metrics": {n: cand_metrics.get(n) for n in names}},
        "data": data.table.describe(),
        "task": task,
        "precision": "fp32",
        "rows": len(data.texts),
        "rows_compared": len(keep),
        "rows_disagreeing": len(disagreements),
        "differences": differences,
        "bootstrap": ({"method": "paired percentile", "replicates": config.bootstrap,
                       "confidence": config.confidence, "seed": config.seed} if config.bootstrap else None),
        "mcnemar": mcnemar(base_rows.correct, cand_rows.correct),
        "checks": checks,
        "verdict": "none" if not checks else "pass" if all(c["passed"] for c in checks) else "fail",
        "timings": {"bootstrap_seconds": round(bootstrap_seconds, 3),
                    "total_seconds": round(time.perf_counter() - started, 3)},
        "disagreements": disagreements,
    }
    write_compare_files(report, config)
    return report


def check_comparable(baseline: dict, candidate: dict, config) -> str:
    """The runs' task, once it is sure they predict the same labels; otherwise DataError (exit 65)."""
    if baseline["task"] != candidate["task"]:
        raise DataError(f"{config.baseline_dir} is a {baseline['task'].replace('_', '-')} run and "
                        f"{config.candidate_dir} a {candidate['task'].replace('_', '-')} one: their metrics "
                        "cannot be compared.", hint="Compare two runs of the same kind.")
    only_base = [label for label in baseline["labels"] if label not in candidate["labels"]]
    only_cand = [label for label in candidate["labels"] if label not in baseline["labels"]]
    if only_base or only_cand:
        parts = [f"only the baseline ({config.baseline_dir}) has {', '.join(map(repr, only_base))}"] if only_base \
            else []
        parts += [f"only the candidate ({config.candidate_dir}) has {', '.join(map(repr, only_cand))}"] \
            if only_cand else []
        raise DataError(f"The runs predict different label sets: {'; '.join(parts)}.",
                        hint="Compare runs trained on the same labels.")
    return baseline["task"]


def paired_differences(base_rows, cand_rows, base_metrics: dict, cand_metrics: dict, names, config) -> dict:
    """Per metric: both point values, the difference (candidate minus baseline) and its paired interval."""
    from bertclf.intervals import paired_bootstrap, percentile_interval

    replicates = (paired_bootstrap(base_rows, cand_rows, config.bootstrap, config.seed)
                  if config.bootstrap and len(base_rows) else None)
    differences = {}
    for name in names:
        base, cand = base_metrics.get(name), cand_metrics.get(name)
        defined = base is not None and cand is not None
        interval = None
        if defined and replicates is not None:
            interval = percentile_interval(replicates[1][name] - replicates[0][name], config.confidence)
        differences[name] = {"baseline": base, "candidate": cand, "difference": cand - base if defined else None,
                             "interval": interval}
    return differences


def mcnemar(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> dict:
    """McNemar's exact test: under "both runs are equally accurate", the rows exactly one run gets right
    split between the two like fair coin flips; the two-sided binomial p-value of the split seen."""
    baseline_only = int((baseline_correct & ~candidate_correct).sum())
    candidate_only = int((~baseline_correct & candidate_correct).sum())
    if baseline_only + candidate_only == 0:
        p_value = 1.0
    else:
        from scipy.stats import binomtest

        p_value = float(binomtest(baseline_only, baseline_only + candidate_only, 0.5).pvalue)
    return {"baseline_only": baseline_only, "candidate_only": candidate_only,
            "both_right": int((baseline_correct & candidate_correct).sum()),
            "both_wrong": int((~baseline_correct & ~candidate_correct).sum()), "p_value": p_value}


def judge(differences: dict, non_inferiority: dict[str, float], superiority: tuple[str, ...]) -> list[dict]:
    """The checks' verdicts. For a metric where higher is better the worse end of the difference's interval
    is its lower bound; for the losses and calibration errors it is the upper bound."""
    from bertclf.config import LOWER_IS_BETTER

    checks = []
    wanted = [("non-inferiority", name, margin) for name, margin in non_inferiority.items()]
    wanted += [("superiority", name, 0.0) for name in superiority]
    for kind, name, margin in wanted:
        higher = name not in LOWER_IS_BETTER
        interval = differences[name]["interval"]
        bound = "lower" if higher else "upper"
        value = None if interval is None else interval[0 if higher else 1]
        threshold = -margin if higher else margin
        if value is None:
            passed, verdict = False, "undefined on this data"
        elif kind == "non-inferiority":
            passed = value >= threshold if higher else value <= threshold
            verdict = f"{bound} bound {value:+.4f} {'is within' if passed else 'is beyond'} the margin {threshold:+g}"
        else:
            passed = value > 0 if higher else value < 0
            verdict = f"{bound} bound {value:+.4f} {'is' if passed else 'is not'} {'above' if higher else 'below'} 0"
        label = f"{kind} {name}" + (f" (margin {margin:g})" if kind == "non-inferiority" else "")
        checks.append({"name": label, "kind": kind, "metric": name, "margin": margin if kind == "non-inferiority"
                       else None, "difference": differences[name]["difference"], "bound": bound, "value": value,
                       "threshold": threshold, "passed": passed,
                       "message": f"{label}: the difference's {verdict}"})
    return checks


def _disagreements(data, keep: list[int], space, cand_space, base_rows, cand_rows) -> list[dict]:
    """The rows where the two runs predict differently (labels by name: the runs may order them apart)."""
    def named(label_space, rows, j):
        if label_space.multi_label:
            chosen = [n for n, on in zip(label_space.names, rows.predicted[j], strict=True) if on]
            return ",".join(sorted(chosen)), None
        label = int(rows.predicted[j])
        return label_space.names[label], float(rows.probs[j, label])

    pairs = data.pairs_at(keep)
    out = []
    for j, i in enumerate(keep):
        (base, base_score), (cand, cand_score) = named(space, base_rows, j), named(cand_space, cand_rows, j)
        if base == cand:
            continue
        gold = data.labels[i]
        record = {"row": data.row_numbers[i], "text": data.texts[i],
                  **({"text_pair": pairs[j]} if pairs is not None else {}),
                  "gold": ",".join(sorted(gold)) if isinstance(gold, list) else gold, "baseline": base,
                  "candidate": cand, "baseline_score": base_score, "candidate_score": cand_score}
        out.append(record)
    return out


def _check_output_dir(directory: Path | None) -> None:
    if directory is not None and (Path(directory) / "bertclf.json").exists():
        raise UsageError(f"--output {directory} is a run directory (it holds bertclf.json): the comparison "
                         "would mix with the run's own files.", hint=f"Give another folder, for example "
                         f"--output {Path(directory) / 'compare'}.")


def write_compare_files(report: dict, config) -> None:
    """-o DIR: disagreements.csv and comparison.json; --junit and --markdown. Each written whole."""
    from bertclf.ci_reports import compare_junit, compare_markdown, write_bytes, write_text

    if config.report_dir is not None:
        directory = Path(config.report_dir)
        _check_output_dir(directory)
        fields = ["row", "text", *(["text_pair"] if report["disagreements"] and "text_pair" in
                                   report["disagreements"][0] else []),
                  "gold", "baseline", "candidate", "baseline_score", "candidate_score"]
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(report["disagreements"])
        write_bytes(directory / "disagreements.csv", buffer.getvalue().encode("utf-8"),
                    f"--output {directory / 'disagreements.csv'}")
        document = {k: v for k, v in report.items() if k != "disagreements"}
        write_bytes(directory / "comparison.json",
                    (json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8"),
                    f"--output {directory / 'comparison.json'}")
    if config.junit is not None:
        write_text(config.junit, compare_junit(report), "--junit")
    if config.markdown is not None:
        write_text(config.markdown, compare_markdown(report), "--markdown")
