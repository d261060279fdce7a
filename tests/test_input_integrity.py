"""Table-driven: no row lost or invented, data-side failures with their exit code, and safe writes.

Each case builds files in tmp, runs one bertclf command, and states the exit code and a fragment the
message must hold (naming the file, line, column or flag). Failures print no traceback and nothing on
stdout; successes are checked for their row counts (one output row per input record), because a silent
merge or split of rows is exactly the bug class these cases are about.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, read_shared, run_bertclf

from bertclf.errors import EXIT_DATA, EXIT_OK, EXIT_USAGE

# Real review texts, made safe to write unquoted (no separators, quotes or line breaks of their own).
SHARED = read_shared("zh_reviews", "dev", limit=12) if (ROOT.parent / "shared" / "data").exists() else []
ROWS = [(" ".join(t.replace('"', "").replace(",", "，").replace("\t", " ").split())[:80], lab) for t, lab in SHARED] \
    or [(f"text number {i}", "positive" if i % 2 else "negative") for i in range(12)]


def _lines(rows=ROWS) -> list[str]:
    return [f"{t},{lab}" for t, lab in rows]


def _csv(*lines: str) -> str:
    return "\n".join(["text,label", *lines]) + "\n"


def _stray(first: int, last: int) -> str:
    """A quote opens row `first`'s text and closes row `last`'s: the rows between merge into one field."""
    lines = _lines()
    t, lab = ROWS[first]
    lines[first] = f'"{t},{lab}'
    t, lab = ROWS[last]
    lines[last] = f'{t}",{lab}'
    return _csv(*lines)


def _label_quote() -> str:
    """The quote opens in the label field of row 3 and closes at the end of row 5's label."""
    lines = _lines()
    t, lab = ROWS[3]
    lines[3] = f'{t},"{lab}'
    lines[5] = lines[5] + '"'
    return _csv(*lines)


def _file(name: str, content: str | bytes | callable):
    def build(tmp: Path) -> Path:
        value = content() if callable(content) else content
        path = tmp / name
        path.write_bytes(value if isinstance(value, bytes) else value.encode("utf-8"))
        return path
    return build


def _nul_at(position: int, name: str = "big.csv") -> callable:
    def content() -> bytes:
        body = _csv(*(_lines() * 400)).encode("utf-8")
        assert len(body) > position + 100
        return body[:position] + b"\x00" + body[position + 1:]
    return _file(name, content)


def _parquet(kind: str):
    def build(tmp: Path) -> Path:
        import datetime

        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(ROWS)
        columns = {"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS],
                   "seen": pa.array([datetime.datetime(2024, 1, 2, 3, 4, 5)] * n, pa.timestamp("ns")),
                   "day": pa.array([datetime.date(2024, 1, 2)] * n),
                   "blob": pa.array([b"\xff\xfe\x00raw"] * n)}
        if kind == "bytes-text":
            columns["text"] = pa.array([b"\xff\xfe bytes"] * n)
        path = tmp / f"{kind}.parquet"
        pq.write_table(pa.table(columns), path)
        return path
    return build


def _jsonl(separator: str) -> callable:
    return _file("d.jsonl", lambda: "".join(json.dumps({"text": f"{t}{separator}more", "label": lab},
                                                       ensure_ascii=False) + "\n" for t, lab in ROWS))


def _fasttext(separator: str) -> callable:
    return _file("d.txt", lambda: "".join(f"__label__{lab} {t}{separator}more\n" for t, lab in ROWS))


N = len(ROWS)
# (id, command, builder, extra args, stdin, exit code, message fragment, rows expected on success)
# Commands: "train" fails before any model loads, "inspect --json" counts the rows train would see,
# "eval"/"predict" use the tiny trained run; predict writes -o out.jsonl unless the args say otherwise.
CASES = [
    # A stray quote, the swallowed rows at the start, in the middle, at the end of the merged record.
    ("quote-two-rows-first-line", "train", _file("d.csv", lambda: _stray(0, 1)), [], None, EXIT_DATA,
     "line 2: a quoted field runs over lines 2-3", None),
    ("quote-three-rows", "train", _file("d.csv", lambda: _stray(4, 6)), [], None, EXIT_DATA,
     "line 6: a quoted field runs over lines 6-8", None),
    ("quote-last-rows", "train", _file("d.csv", lambda: _stray(N - 2, N - 1)), [], None, EXIT_DATA,
     f"line {N}: a quoted field runs over lines {N}-{N + 1}", None),
    ("quote-in-label-field", "train", _file("d.csv", _label_quote), [], None, EXIT_DATA,
     "line 5: a quoted field runs over lines 5-7", None),
    ("quote-eval", "eval", _file("d.csv", lambda: _stray(4, 6)), [], None, EXIT_DATA, "unbalanced quote on line 6",
     None),
    ("quote-predict", "predict", _file("d.csv", lambda: _stray(0, 1)), [], None, EXIT_DATA,
     "unbalanced quote on line 2", None),
    ("quote-predict-middle", "predict", _file("d.csv", lambda: _stray(4, 6)), [], None, EXIT_DATA,
     "line 6: a quoted field runs over lines 6-8", None),
    ("unclosed-quote-predict", "predict", _file("d.csv", lambda: _csv(*_lines(), f'"{ROWS[0][0]},x')), [], None,
     EXIT_DATA, f"line {N + 2}: EOF inside string", None),
    ("quote-then-text-predict", "predict", _file("d.csv", lambda: _csv(*_lines()[:3], '"closed" then more,x')),
     [], None, EXIT_DATA, "line 5: a quoted field's closing quote is followed by more text", None),
    ("multi-line-text-is-fine", "inspect", _file("d.csv", lambda: _csv(*_lines()[:-1], '"Great, really\nsecond '
                                                                           f'line, too",{ROWS[0][1]}')),
     [], None, EXIT_OK, None, N),
    ("multi-line-text-predict", "predict", _file("d.csv", lambda: _csv(*_lines()[:-1], '"Great, really\nsecond '
                                                                           f'line, too",{ROWS[0][1]}')),
     [], None, EXIT_OK, None, N),
    # Blank rows are skipped and counted, the same in train and predict.
    ("empty-row", "inspect", _file("d.csv", lambda: _csv(*_lines()[:4], "", *_lines()[4:])), [], None, EXIT_OK,
     "skipped 1 blank line(s), which are not rows: line(s) 6", N),
    ("empty-row-predict", "predict", _file("d.csv", lambda: _csv(*_lines()[:4], "", *_lines()[4:])), [], None,
     EXIT_OK, "skipped 1 blank line(s), which are not rows: line(s) 6", N),
    # Only \n and \r\n end a line.
    ("lone-cr-txt-predict", "predict", _file("d.txt", lambda: "".join(f"{t}\r{t}\n" for t, _ in ROWS)), [], None,
     EXIT_OK, None, N),
    ("lone-cr-fasttext", "inspect", _fasttext("\r"), [], None, EXIT_OK, None, N),
    ("lone-cr-csv", "inspect", _file("d.csv", lambda: _csv(*_lines()[:-1], f"one\rtwo,{ROWS[0][1]}")), [], None,
     EXIT_OK, None, N),
    ("lone-cr-csv-predict", "predict", _file("d.csv", lambda: _csv(*_lines()[:-1], f"one\rtwo,{ROWS[0][1]}")), [],
     None, EXIT_OK, None, N),
    ("crlf-csv", "inspect", _file("d.csv", lambda: _csv(*_lines()).replace("\n", "\r\n")), [], None, EXIT_OK,
     None, N),
    *[(f"{sep_name}-jsonl", "inspect", _jsonl(sep), [], None, EXIT_OK, None, N)
      for sep_name, sep in (("u2028", "\u2028"), ("u0085", "\u0085"), ("formfeed", "\f"))],
    *[(f"{sep_name}-jsonl-predict", "predict", _jsonl(sep), [], None, EXIT_OK, None, N)
      for sep_name, sep in (("u2028", "\u2028"), ("u0085", "\u0085"))],
    *[(f"{sep_name}-fasttext", "inspect", _fasttext(sep), [], None, EXIT_OK, None, N)
      for sep_name, sep in (("u2028", "\u2028"), ("u0085", "\u0085"), ("formfeed", "\f"))],
    ("u2028-txt-predict", "predict", _file("d.txt", lambda: "".join(f"{t}\u2028{t}\x0c\n" for t, _ in ROWS)), [],
     None, EXIT_OK, None, N),
    # NUL bytes wherever they are.
    ("nul-at-20000", "train", _nul_at(20000), [], None, EXIT_DATA, "holds a NUL byte (at byte 20000)", None),
    ("nul-at-20000-predict", "predict", _nul_at(20000), [], None, EXIT_DATA, "holds a NUL byte", None),
    ("nul-at-20000-jsonl", "train", _file("d.jsonl", lambda: (json.dumps({"text": "x" * 20000, "label": "a"})
                                                              + "\n\x00\n")), [], None, EXIT_DATA, "line 2 holds a NUL",
     None),
    # Parquet: dates, timestamps and bytes columns read as text (or refused by name when used).
    ("parquet-timestamp-bytes", "inspect", _parquet("typed"), [], None, EXIT_OK, None, N),
    ("parquet-bytes-as-text", "train", _parquet("bytes-text"), [], None, EXIT_DATA,
     "column 'text' cannot be read as text", None),
    # Inputs predict cannot read: exit 65, never 70.
    ("truncated-json-predict", "predict", _file("d.json", lambda: json.dumps(
        [{"text": t} for t, _ in ROWS])[:-30]), [], None, EXIT_DATA, "not valid JSON at line 1", None),
    ("invalid-utf8-stdin", "predict", None, ["-"], b"fine\nbad \xff\xfe here\n", EXIT_DATA,
     "<stdin>: line 2 is not valid UTF-8", None),
    ("stdin-lines", "predict", None, ["-"], "one\rtwo\nthree\u2028four\r\n".encode(), EXIT_OK, None, 2),
    ("encoding-ascii-predict", "predict", _file("d.csv", _csv("plain one,a", "plain two,b", "plain 3,a", "naïve,x")),
     ["--encoding", "ascii"], None, EXIT_DATA, "line 5 is not valid ascii", None),
    ("encoding-ascii-train", "train", _file("d.csv", _csv("plain one,a", "plain two,b", "plain 3,a", "naïve,x")),
     ["--encoding", "ascii"], None, EXIT_DATA, "(line 5)", None),
    ("encoding-bogus-predict", "predict", _file("d.csv", lambda: _csv(*_lines())), ["--encoding", "bogus"], None,
     EXIT_USAGE, "--encoding", None),
    ("encoding-bogus-train", "train", _file("d.csv", lambda: _csv(*_lines())), ["--encoding", "bogus"], None,
     EXIT_USAGE, "--encoding", None),
    ("encoding-not-text-predict", "predict", _file("d.csv", lambda: _csv(*_lines())), ["--encoding", "base64"],
     None, EXIT_USAGE, "--encoding", None),
    ("input-format-xml", "predict", _file("d.csv", lambda: _csv(*_lines())), ["--input-format", "xml"], None,
     EXIT_USAGE, "--input-format", None),
]


@pytest.mark.parametrize(("case", "command", "build", "extra", "stdin", "code", "message", "rows"), CASES,
                         ids=[c[0] for c in CASES])
def test_input_case(case, command, build, extra, stdin, code, message, rows, tmp_path, cli, tiny_run):
    path = build(tmp_path) if build else None
    source = [path] if path else []
    out = tmp_path / "out.jsonl"
    if command == "train":
        args = ["train", *source, "-m", "scratch:tiny", "-o", tmp_path / "run", *extra]
    elif command == "inspect":
        args = ["inspect", *source, "--json", *extra]
    elif command == "eval":
        args = ["eval", tiny_run, *source, "--cpu", *extra]
    else:
        args = ["predict", tiny_run, *source, *extra, "-o", out, "--cpu"]
    exit_code, stdout, stderr = cli(*args, input=stdin)
    flat = " ".join(stderr.split())
    assert exit_code == code, stderr
    assert "Traceback" not in stderr
    if message:
        assert message in flat, stderr
    if code != EXIT_OK:
        assert stdout == "", stdout
        if path is not None and code == EXIT_DATA:
            assert str(path) in flat  # the message names the file
        assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))  # nothing half-written
        return
    if command == "inspect":
        assert json.loads(stdout)["rows"] == rows
    elif command == "predict":
        assert len(out.read_text(encoding="utf-8").splitlines()) == rows


# ------------------------------------------------------------------------------------------ safe writes


def _predict_input(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("".join(f"{t}\n" for t, _ in ROWS), encoding="utf-8")
    return path


def test_planted_tmp_symlink_cannot_redirect_the_write(tmp_path, cli, tiny_run):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out.jsonl"
    for planted in (".out.jsonl.tmp", "out.jsonl.tmp"):  # the names a naive writer would use
        (tmp_path / planted).symlink_to(victim)
    code, stdout, stderr = cli("predict", tiny_run, _predict_input(tmp_path), "-o", out, "--cpu")
    assert code == 0, stderr
    assert victim.read_text() == "keep me\n"
    assert out.is_file() and not out.is_symlink()
    assert len(out.read_text().splitlines()) == N
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.jsonl.tmp", "in.txt", "out.jsonl", "out.jsonl.tmp",
                                                          "victim.txt"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_symlink_output_is_written_through(tmp_path, cli, tiny_run):
    real = tmp_path / "real" / "predictions.jsonl"
    real.parent.mkdir()
    real.write_text("old\n")
    real.chmod(0o640)
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    code, _, stderr = cli("predict", tiny_run, _predict_input(tmp_path), "-o", link, "--cpu")
    assert code == 0, stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(real.read_text().splitlines()) == N
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the replaced file's mode is kept
    assert [p.name for p in real.parent.iterdir()] == ["predictions.jsonl"]  # no temporary file left


def test_dev_null_as_output_stays_a_device(tmp_path, cli, tiny_run):
    before = os.stat("/dev/null")
    code, stdout, stderr = cli("predict", tiny_run, _predict_input(tmp_path), "-o", "/dev/null", "--cpu")
    assert code == 0, stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".null")]


def test_fifo_as_output_is_written_to_directly(tmp_path, cli, tiny_run):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, stderr = cli("predict", tiny_run, _predict_input(tmp_path), "-o", fifo, "--cpu")
    reader.join(timeout=60)
    assert code == 0, stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert len(received[0].decode().splitlines()) == N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "pipe.jsonl"]


def test_eval_output_refuses_the_run_directory(tiny_run, cli):
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()}
    code, stdout, stderr = cli("eval", tiny_run, EXAMPLES / "en_topics_test.csv", "-o", tiny_run, "--cpu")
    assert code == EXIT_USAGE, stderr
    assert "is a run directory" in " ".join(stderr.split()) and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()} == before


def test_eval_report_files_are_whole_and_leave_no_temporary_files(tiny_run, cli, tmp_path):
    report = tmp_path / "report"
    code, _, stderr = cli("eval", tiny_run, EXAMPLES / "en_topics_test.csv", "-o", report, "--cpu")
    assert code == 0, stderr
    names = {p.name for p in report.iterdir()}
    assert {"confusion_matrix.csv", "confusion_matrix.png", "errors.csv", "metrics.json"} <= names
    assert not [name for name in names if name.startswith(".") or name.endswith(".tmp")]
    assert json.loads((report / "metrics.json").read_text())["metrics"]
    assert (report / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")


def test_a_failed_predict_leaves_the_old_output_untouched(tmp_path, cli, tiny_run):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(_stray(4, 6), encoding="utf-8")
    code, stdout, stderr = cli("predict", tiny_run, bad, "-o", out, "--cpu")
    assert code == EXIT_DATA, stderr
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "out.jsonl"]


def test_two_concurrent_predicts_never_mix_or_swap_outputs(tmp_path, tiny_run):
    """Two processes write the same -o at once: the file ends up as one complete output, never a mix, and
    each process's output is whole (each through its own temporary file)."""
    inputs = []
    for name, count in (("a.txt", 40), ("b.txt", 55)):
        path = tmp_path / name
        path.write_text("".join(f"{ROWS[i % N][0]} {i}\n" for i in range(count)), encoding="utf-8")
        inputs.append((path, count))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "bertclf", "predict", str(tiny_run), str(path), "-o",
                                   str(out), "--cpu"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
                 for path, _ in inputs]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) in {count for _, count in inputs}
    assert [row["id"] for row in rows] == list(range(1, len(rows) + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "out.jsonl"]


def test_dev_stdout_as_output_writes_to_stdout(tmp_path, tiny_run):
    result = run_bertclf("predict", tiny_run, _predict_input(tmp_path), "-o", "/dev/stdout", "--cpu")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == N
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.path.islink("/dev/stdout")


def test_atomic_output_failures_leave_the_target_and_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from bertclf.errors import EXIT_IO, OutputError
    from bertclf.runinfo import write_json_atomic
    from bertclf.safe_write import atomic_output

    target = tmp_path / "metrics.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(target) as handle:
        handle.write("half")
        raise RuntimeError("the writer failed midway")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError) as info:
        write_json_atomic(target, {"new": True})
    assert info.value.exit_code == EXIT_IO and str(target) in info.value.message
    assert "No space left" in info.value.message
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(OutputError, match="is a directory"):
        write_json_atomic(tmp_path, {})
