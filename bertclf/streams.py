"""Streaming input for `bertclf predict` (text lines, CSV/TSV, JSONL, JSON, stdin) and streaming output
(JSONL, CSV, TSV), so memory stays flat however long the input is."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bertclf.config import TEXT_COLUMN_CANDIDATES
from bertclf.data import AUTO_ENCODINGS, choose_column, json_value_as_text
from bertclf.errors import DataError, InputMissingError, OutputError, UsageError

INPUT_FORMATS = {".txt": "txt", ".text": "txt", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".json": "json"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".json": "jsonl"}
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are legitimate texts


def sniff_encoding(path: Path, requested: str | None) -> str:
    """The file's encoding, checked over the whole file in 1 MiB pieces (constant memory)."""
    if requested:
        return requested
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    for candidate in AUTO_ENCODINGS:
        decoder = codecs.getincrementaldecoder(candidate)()
        try:
            with path.open("rb") as handle:
                while piece := handle.read(1 << 20):
                    decoder.decode(piece)
                decoder.decode(b"", final=True)
            return candidate
        except UnicodeDecodeError:
            continue
    raise DataError(f"{path}: neither UTF-8 nor GB18030 can decode this file.",
                    hint="Save it as UTF-8, or pass --encoding with its real encoding.")


class InputRecords:
    """Rows of an input as string dicts, with the text column chosen and the id of each row."""

    def __init__(self, source: str, fmt: str, handle: IO[str], text_column: str | None, name: str,
                 preferred_column: str | None = None, pair_column: str | None = None):
        self.source, self.format, self.handle, self.name = source, fmt, handle, name
        self._requested_text_column = text_column
        self._preferred_column = preferred_column  # the column the model was trained on
        self.pair_column = pair_column  # second texts, for a model trained on pairs
        self.columns: list[str] = []
        self.text_column = "text"
        self._rows = self._open_rows()

    def _open_rows(self) -> Iterator[dict[str, str]]:
        if self.format == "txt":
            if self.pair_column:
                raise UsageError(f"{self.name}: this model classifies text pairs, and plain text lines hold one "
                                 "text each.", hint=f"Give a CSV, TSV or JSONL input with a {self.pair_column!r} "
                                 "column (or --text with --text-pair).")
            self.columns = ["text"]
            return ({"text": line.rstrip("\r\n")} for line in self.handle)
        if self.format in ("csv", "tsv"):
            reader = csv.DictReader(self.handle, delimiter="," if self.format == "csv" else "\t")
            self.columns = list(reader.fieldnames or [])
            if not self.columns:
                raise DataError(f"{self.name}: empty file, no header row.")
            self._pick_text_column()
            return self._checked_csv_rows(reader)
        if self.format == "jsonl":
            return self._jsonl_rows()
        document = json.load(self.handle)
        if not isinstance(document, list):
            raise DataError(f"{self.name}: expected a JSON array of objects.")
        return self._json_records(iter(document))

    def _pick_text_column(self) -> None:
        self.text_column = choose_column(self.columns, self._requested_text_column, TEXT_COLUMN_CANDIDATES,
                                         "--text-column", self.name, preferred=self._preferred_column)
        if self.pair_column:
            choose_column(self.columns, self.pair_column, (), "--text-pair-column", self.name)

    def _checked_csv_rows(self, reader: csv.DictReader) -> Iterator[dict[str, str]]:
        for number, row in enumerate(reader, start=1):
            if None in row or any(value is None for value in row.values()):
                raise DataError(f"{self.name}: row {number} (line {reader.line_num}) has "
                                f"{'more' if None in row else 'fewer'} fields than the header's {len(self.columns)}.",
                                hint="Quote fields that contain the separator, and give every row the same "
                                "number of fields.")
            yield row

    def _jsonl_rows(self) -> Iterator[dict[str, str]]:
        def records() -> Iterator[object]:
            for number, line in enumerate(self.handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{self.name}: line {number} is not valid JSON ({exc.msg}).") from None
        return self._json_records(records())

    def _json_records(self, records: Iterator[object]) -> Iterator[dict[str, str]]:
        first = True
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise DataError(f"{self.name}: record {number} is not a JSON object.")
            row = {str(k): json_value_as_text(v) for k, v in record.items()}
            if first:
                self.columns = list(row)
                self._pick_text_column()
                first = False
            row.setdefault(self.text_column, "")
            if self.pair_column:
                row.setdefault(self.pair_column, "")
            yield row

    def __iter__(self) -> Iterator[dict[str, str]]:
        return self._rows


def open_input(source: str, *, fmt: str | None, text_column: str | None, encoding: str | None,
               preferred_column: str | None = None, pair_column: str | None = None) -> InputRecords:
    """`-` is stdin (plain text lines unless --input-format says otherwise)."""
    if source == "-":
        fmt = fmt or "txt"
        handle = io.TextIOWrapper(sys.stdin.buffer, encoding=encoding or "utf-8-sig", errors="strict", newline="")
        return InputRecords(source, fmt, handle, text_column, "<stdin>", preferred_column, pair_column)
    path = Path(source)
    if not path.is_file():
        raise InputMissingError(f"{path}: no such file." if not path.exists() else f"{path}: not a file.")
    if fmt is None:
        fmt = INPUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(f"{path}: cannot tell the input format from the extension {path.suffix!r}.",
                             hint="Pass --input-format txt, csv, tsv, jsonl or json.")
    handle = path.open("r", encoding=sniff_encoding(path, encoding), errors="strict", newline="")
    return InputRecords(source, fmt, handle, text_column, str(path), preferred_column, pair_column)


def output_format(output: Path | None, requested: str | None) -> str:
    if requested:
        if requested not in ("jsonl", "csv", "tsv"):
            raise UsageError(f"Invalid value for --format: {requested!r}. Choose jsonl, csv or tsv.")
        return requested
    if output is not None:
        return OUTPUT_FORMATS.get(output.suffix.lower(), "jsonl")
    return "jsonl"


class RowWriter:
    """Writes prediction rows as they come; to --output through a temporary file renamed at the end."""

    def __init__(self, output: Path | None, fmt: str):
        self.output, self.format = output, fmt
        self._tmp = output.with_name(f".{output.name}.tmp") if output else None
        try:
            self.handle = self._tmp.open("w", encoding="utf-8", newline="") if self._tmp else sys.stdout
        except OSError as exc:
            raise OutputError(f"Cannot write --output {output}: {exc.strerror or exc}.") from None
        self._csv: csv.DictWriter | None = None

    def write(self, row: dict) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        if self._csv is None:
            delimiter = "," if self.format == "csv" else "\t"
            self._csv = csv.DictWriter(self.handle, fieldnames=list(row), delimiter=delimiter, lineterminator="\n")
            self._csv.writeheader()
        self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})

    def close(self, success: bool) -> None:
        if self._tmp is None:
            self.handle.flush()
            return
        self.handle.close()
        if success:
            os.replace(self._tmp, self.output)
        else:
            self._tmp.unlink(missing_ok=True)
