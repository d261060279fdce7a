"""Reports CI systems read: JUnit XML (`--junit`: one testcase per gate, a failure with the value, bound and
threshold when it fails; the metrics as properties) and a Markdown summary (`--markdown`: ready to append to
$GITHUB_STEP_SUMMARY or to post on a merge request), for `eval` and `compare`.

Every file is written whole (bertclf.safe_write), so a CI step never reads half a report.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bertclf.errors import OutputError
from bertclf.safe_write import atomic_output

# XML 1.0 cannot hold most control characters, even escaped: a label or path holding one must not make the
# whole report unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def write_bytes(path: Path, data: bytes, what: str) -> None:
    """Write `data` to `path` (its parent directory created) through bertclf.safe_write: whole or not at all,
    a symlink written through, a device or FIFO (`--markdown /dev/stdout`) written directly, never replaced.
    `what` names the target in errors."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot write {what}: {exc.strerror or exc}.",
                          hint="Check that the directory can be created and written.") from None
    with atomic_output(path, "wb", what=what) as handle:
        handle.write(data)


def write_text(path: Path, text: str, flag: str) -> None:
    write_bytes(Path(path), text.encode("utf-8"), f"{flag} {path}")


# ----- JUnit XML ---------------------------------------------------------------------------------------------

def _clean(value) -> str:
    return _NOT_XML.sub("?", str(value))


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _junit(suite_name: str, properties: dict[str, object], cases: list[dict], seconds: float) -> str:
    """cases: {"name", "passed", "message", "detail"}."""
    failures = sum(not case["passed"] for case in cases)
    root = ET.Element("testsuites", name="bertclf", tests=str(len(cases)), failures=str(failures), errors="0",
                      time=f"{seconds:.3f}")
    suite = ET.SubElement(root, "testsuite", name=_clean(suite_name), tests=str(len(cases)),
                          failures=str(failures), errors="0", skipped="0", time=f"{seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for name, value in properties.items():
        ET.SubElement(props, "property", name=_clean(name), value=_clean(_fmt(value)))
    for case in cases:
        element = ET.SubElement(suite, "testcase", classname=_clean(suite_name), name=_clean(case["name"]),
                                time="0")
        if not case["passed"]:
            failure = ET.SubElement(element, "failure", message=_clean(case["message"]), type="QualityGate")
            failure.text = _clean(case["detail"])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _metric_properties(metrics: dict, intervals: dict | None, names) -> dict[str, object]:
    properties: dict[str, object] = {}
    for name in names:
        if name not in metrics:
            continue
        properties[name] = metrics[name]
        interval = (intervals or {}).get(name)
        if interval is not None:
            properties[f"{name}.lower"], properties[f"{name}.upper"] = interval
    return properties


def eval_junit(report: dict) -> str:
    """One testcase per --fail-under gate; every metric (and its interval) as a property."""
    from bertclf.config import REPORTED_METRICS

    properties = {"run_dir": report["run_dir"], "data": report["data"]["path"],
                  "rows_evaluated": report["rows_evaluated"],
                  **_metric_properties(report["metrics"], report.get("intervals"), REPORTED_METRICS[report["task"]])}
    cases = [{"name": f"{key} >= {gate['threshold']}", "passed": gate["passed"], "message": gate["message"],
              "detail": f"value={_fmt(gate['value'])} bound={gate['bound']} threshold={gate['threshold']}"}
             for key, gate in report["gates"].items()]
    timings = report["timings"]
    seconds = sum(timings.get(key, 0.0) for key in ("load_seconds", "predict_seconds", "bootstrap_seconds"))
    return _junit(f"bertclf eval {report['data']['path']}", properties, cases, seconds)


def compare_junit(report: dict) -> str:
    """One testcase per --non-inferiority / --superiority check; the differences as properties."""
    properties: dict[str, object] = {"baseline": report["baseline"]["run_dir"],
                                     "candidate": report["candidate"]["run_dir"], "data": report["data"]["path"],
                                     "rows_compared": report["rows_compared"],
                                     "mcnemar_p_value": report["mcnemar"]["p_value"]}
    for name, diff in report["differences"].items():
        properties[f"{name}.difference"] = diff["difference"]
        if diff["interval"] is not None:
            properties[f"{name}.difference.lower"], properties[f"{name}.difference.upper"] = diff["interval"]
    cases = [{"name": check["name"], "passed": check["passed"], "message": check["message"],
              "detail": f"difference={_fmt(check['difference'])} bound={check['bound']} "
                        f"value={_fmt(check['value'])} threshold={check['threshold']}"}
             for check in report["checks"]]
    return _junit(f"bertclf compare {report['data']['path']}", properties, cases,
                  report["timings"].get("total_seconds", 0.0))


# ----- Markdown ----------------------------------------------------------------------------------------------

def _md(text) -> str:
    """A user string (path, label) in a table cell: pipes and newlines would break the table."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _ci(interval, signed: bool = False) -> str:
    if interval is None:
        return ""
    return f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if signed else f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def ci_label(confidence: float | None) -> str:
    return f"{confidence * 100:g}% CI" if confidence is not None else "CI"


def eval_markdown(report: dict) -> str:
    """Metrics with their intervals, then the gates."""
    from bertclf.config import REPORTED_METRICS

    confidence = (report.get("bootstrap") or {}).get("confidence")
    intervals = report.get("intervals") or {}
    lines = [f"### bertclf eval: `{_md(report['run_dir'])}` on `{_md(report['data']['path'])}` "
             f"({report['rows_evaluated']} rows)", "",
             f"| metric | value | {ci_label(confidence)} |", "| --- | ---: | ---: |"]
    for name in REPORTED_METRICS[report["task"]]:
        if name in report["metrics"]:
            lines.append(f"| {name} | {_fmt(report['metrics'][name])} | {_ci(intervals.get(name))} |")
    lines += ["", *_gate_lines(report["gates"])]
    return "\n".join(lines) + "\n"


def _gate_lines(gates: dict) -> list[str]:
    if not gates:
        return ["No gates."]
    failed = [key for key, gate in gates.items() if not gate["passed"]]
    lines = [f"**Gates: {'FAILED' if failed else 'passed'}** ({len(gates) - len(failed)} of {len(gates)} passed)",
             "", "| gate | value | threshold | result |", "| --- | ---: | ---: | --- |"]
    for key, gate in gates.items():
        lines.append(f"| {key} | {_fmt(gate['value'])} | {gate['threshold']} | "
                     f"{'pass' if gate['passed'] else '**FAIL**'} |")
    return lines


def compare_markdown(report: dict) -> str:
    """Baseline, candidate and the difference with its paired interval per metric; McNemar; the verdict."""
    confidence = (report.get("bootstrap") or {}).get("confidence")
    mcnemar = report["mcnemar"]
    lines = [f"### bertclf compare on `{_md(report['data']['path'])}` ({report['rows_compared']} rows)", "",
             f"Baseline `{_md(report['baseline']['run_dir'])}`, candidate `{_md(report['candidate']['run_dir'])}`.",
             "", f"| metric | baseline | candidate | difference | {ci_label(confidence)} of the difference |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, diff in report["differences"].items():
        lines.append(f"| {name} | {_fmt(diff['baseline'])} | {_fmt(diff['candidate'])} | "
                     f"{_signed(diff['difference'])} | {_ci(diff['interval'], signed=True)} |")
    lines += ["", f"McNemar's exact test: {mcnemar['baseline_only']} rows only the baseline got right, "
              f"{mcnemar['candidate_only']} only the candidate; p = {mcnemar['p_value']:.4g}.", ""]
    if report["checks"]:
        lines += [f"**Verdict: {report['verdict'].upper()}**", "",
                  "| check | difference | bound | threshold | result |", "| --- | ---: | ---: | ---: | --- |"]
        for check in report["checks"]:
            lines.append(f"| {check['name']} | {_signed(check['difference'])} | {_signed(check['value'])} "
                         f"({check['bound']}) | {check['threshold']:+g} | "
                         f"{'pass' if check['passed'] else '**FAIL**'} |")
    else:
        lines.append("No checks (give --non-inferiority or --superiority for a verdict).")
    return "\n".join(lines) + "\n"


def _signed(value) -> str:
    return "undefined" if value is None else f"{value:+.4f}"
