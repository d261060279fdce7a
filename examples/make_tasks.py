"""Build multi-label and sentence-pair data sets from a single-label CSV (text,label), for trying
`--multi-label` and `--text-pair-column` on real texts.

    python examples/make_tasks.py ../shared/data/en_wordnet_verbs/train.csv -o /tmp/tasks

writes /tmp/tasks/train_multilabel.csv (text,labels: half the rows join two texts of different labels and
carry both, as "a,b") and /tmp/tasks/train_pairs.csv (text_a,text_b,label: "same" when both texts share a
label, else "different"), plus train_concat.csv (the pairs joined into one text, the baseline that pair
encoding should beat). The examples/en_*_multilabel.csv and en_*_pairs.csv files were made this way from
examples/en_topics*.csv with the default seed.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def multilabel_rows(rows: list[tuple[str, str]], seed: int = 0, share_joined: float = 0.5) -> list[tuple[str, str]]:
    """(text, "label[,label]") rows: each row kept alone, or (with probability share_joined) joined with a
    random row of another label, the result carrying both labels (sorted)."""
    rng = random.Random(seed)
    out = []
    for text, label in rows:
        if rng.random() < share_joined:
            other_text, other_label = rng.choice(rows)
            while other_label == label:
                other_text, other_label = rng.choice(rows)
            out.append((f"{text}; {other_text}", ",".join(sorted((label, other_label)))))
        else:
            out.append((text, label))
    return out


def pair_rows(rows: list[tuple[str, str]], seed: int = 0) -> list[tuple[str, str, str]]:
    """(text_a, text_b, same|different) rows, half of each: is text_b about the same topic as text_a?"""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        by_label[label].append(text)
    out = []
    for text, label in rows:
        same = rng.random() < 0.5 and len(by_label[label]) > 1
        if same:
            other = rng.choice(by_label[label])
            while other == text:
                other = rng.choice(by_label[label])
        else:
            other_label = rng.choice([name for name in by_label if name != label])
            other = rng.choice(by_label[other_label])
        out.append((text, other, "same" if same else "different"))
    return out


def write(path: Path, header: tuple[str, ...], rows) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a CSV with text and label columns")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), help="directory to write into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = read_rows(args.data)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.data.stem
    write(args.output / f"{stem}_multilabel.csv", ("text", "labels"), multilabel_rows(rows, args.seed))
    pairs = pair_rows(rows, args.seed)
    write(args.output / f"{stem}_pairs.csv", ("text_a", "text_b", "label"), pairs)
    write(args.output / f"{stem}_concat.csv", ("text", "label"), [(f"{a} {b}", y) for a, b, y in pairs])
    print(f"Wrote {stem}_multilabel.csv, {stem}_pairs.csv and {stem}_concat.csv to {args.output}")


if __name__ == "__main__":
    main()
