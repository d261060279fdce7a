"""Time to accuracy (issue 18): the bench sections users feel, where samples/s is only a means.

  tta       each side trains for 3 epochs with its dev accuracy measured every tenth of an epoch (timed apart):
            the training-loop seconds until dev accuracy first reaches (1) the run_classification Trainer's
            accuracy after one epoch and (2) 95% of the best accuracy any side reaches; 3 repeats interleaved,
            medians. Sides: bertclf with its defaults, the Trainer as run_classification.py sets it up (its
            defaults: batch 8, lr 5e-5, no warmup, pad to 128, fp32), and the tuned Trainer (dynamic padding,
            group_by_length, bertclf's batch size, learning rate, warmup, weight decay and precision).
            Precision (--tta-precision): `auto` runs bertclf at its own default (bf16 on a CPU with native bf16,
            else fp32) and the tuned Trainer with --bf16 where bertclf trains in bf16, as a user of each gets;
            `no` pins fp32 on every side, so the loops are compared, not bf16 against fp32.
  defaults  defaults against defaults, whole process, as a user runs them on a file of about 1,000 and 10,000
            rows: `bertclf train FILE --model M` against run_classification's Trainer (3 epochs, checkpoints
            every 500 steps, the final model saved); wall time and test accuracy.

Both run the real commands in fresh processes (bench.Bench.run); this module only builds commands and reads
their curves.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from runner import interleaved, paired_ratio, summary

EPOCHS = 3
TRAINER_DEFAULTS = {"lr": 5e-5, "warmup": 0, "weight_decay": 0.0, "batch_size": 8}  # TrainingArguments' defaults
TRAINER_SIDE = "Trainer run_classification defaults"
SIDES = ("bertclf defaults", TRAINER_SIDE, "Trainer tuned")


def first_rows(source: Path, rows: int | None, target: Path) -> Path:
    """The first `rows` rows of a shuffled training file (the whole file for None), written once."""
    if not rows:
        return source
    if not target.exists():
        with open(source, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            kept = [next(reader)] + [row for _, row in zip(range(rows), reader, strict=False)]
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows(kept)
    return target


def count_rows(path: Path) -> int:
    with open(path, encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def read_labels(path: Path) -> list[str]:
    """Every row's label, in file order (its length is the row count)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return [row["label"] for row in csv.DictReader(handle)]


def bertclf_settings(rows: int, labels: int, validation_given: bool) -> dict:
    """The batch size, learning rate and warm-up bertclf's defaults choose for MiniLM on `rows` rows."""
    from bertclf.config import TrainConfig, auto_batch_size
    from bertclf.model import pretrained_learning_rate

    defaults = TrainConfig(train_file=Path("x.csv"))
    trained = rows if validation_given else rows - round(rows * defaults.validation_split)
    return {"batch_size": auto_batch_size(trained, defaults.epochs, labels=labels),
            "lr": pretrained_learning_rate(384, binary=labels == 2),  # MiniLM's (hidden 384) --lr auto
            "warmup": defaults.warmup_ratio, "weight_decay": defaults.weight_decay, "rows": trained}


def bertclf_curve(run_dir: Path, batch_size: int) -> list[dict]:
    """(step, samples, training seconds, dev accuracy) at each of the run's evaluations, from train_log.jsonl."""
    points = []
    for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["type"] == "eval":
            points.append({"step": record["step"], "samples": record["step"] * batch_size,
                           "train_seconds": record["train_seconds"], "dev_accuracy": record["val_accuracy"]})
    return points


def seconds_to(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation at or above `target` (None: never reached)."""
    return next((p["train_seconds"] for p in curve if p["dev_accuracy"] >= target - 1e-12), None)


def accuracy_after(curve: list[dict], samples: int) -> float | None:
    """Dev accuracy at the last evaluation within `samples` training samples (one epoch's worth, say)."""
    within = [p for p in curve if p["samples"] <= samples]
    return within[-1]["dev_accuracy"] if within else None


def trainer_defaults_cmd(bench, folder: Path, train: Path, out: Path, *extra) -> list[str]:
    """The Trainer with run_classification.py's own defaults (TrainingArguments': batch 8, lr 5e-5, no warmup)."""
    return bench.hf_curve_cmd(folder, train, out / "hf", "--config", "default",
                              "--batch-size", TRAINER_DEFAULTS["batch_size"], "--lr", TRAINER_DEFAULTS["lr"],
                              "--warmup", TRAINER_DEFAULTS["warmup"],
                              "--weight-decay", TRAINER_DEFAULTS["weight_decay"], *extra)


def scored_on_test(bench, doc: dict, folder: Path) -> float:
    """`bertclf eval` of a trained run (its `train --json` summary) on the data set's test split."""
    report = bench.run(bench.bertclf("eval", doc["run_dir"], folder / "test.csv", "--json", "--bootstrap", 0))
    return report.json()["metrics"]["accuracy"]


def tta_dataset(bench, ds: str, folder: Path, rows: int | None, repeats: int, evals_per_epoch: int = 10,
                precision: str = "auto") -> dict:
    """`bench` is bench.Bench: it runs the commands (fresh processes, offline, same threads) and holds the rows.
    `precision` is bertclf's --mixed-precision (auto: its default); the tuned Trainer trains in what it resolves to."""
    from bertclf.train import resolve_mixed_precision

    Row, MODEL = bench.Row, bench.MODEL
    resolved = resolve_mixed_precision(precision, use_cpu=True)  # what `bertclf train --cpu` will train in
    train = first_rows(folder / "train.csv", rows, bench.work / f"tta-{ds}-{rows}.csv")
    labels = read_labels(train)
    n = len(labels)
    ours = bertclf_settings(n, len(set(labels)), validation_given=True)
    every = {"bertclf defaults": max(1, math.ceil(n / ours["batch_size"]) // evals_per_epoch),
             TRAINER_SIDE: max(1, math.ceil(n / 8) // evals_per_epoch),
             "Trainer tuned": max(1, math.ceil(n / ours["batch_size"]) // evals_per_epoch)}
    out = bench.work / f"tta-{ds}"
    commands = {
        "bertclf defaults": bench.bertclf(
            "train", train, "--validation", folder / "dev.csv", "--model", MODEL, "--cpu", "--json",
            "--mixed-precision", precision, "--eval-every", every["bertclf defaults"], "-o", out / "bertclf",
            "--overwrite"),
        TRAINER_SIDE: trainer_defaults_cmd(bench, folder, train, out, "--eval-every", every[TRAINER_SIDE]),
        "Trainer tuned": bench.hf_curve_cmd(
            folder, train, out / "hf", "--config", "tuned", "--batch-size", ours["batch_size"], "--lr", ours["lr"],
            "--warmup", ours["warmup"], "--weight-decay", ours["weight_decay"], "--eval-every", every["Trainer tuned"],
            *(["--bf16"] if resolved == "bf16" else [])),
    }
    runs: dict[str, list[dict]] = {name: [] for name in SIDES}
    for repeat, name in interleaved(list(SIDES), repeats):
        bench.say(f"   tta {ds} ({n} rows) repeat {repeat + 1}: {name}")
        result = bench.run(commands[name])
        doc = result.json()
        if name == "bertclf defaults":
            manifest = json.loads((Path(doc["run_dir"]) / "bertclf.json").read_text(encoding="utf-8"))
            batch = manifest["config"]["batch_size"]
            if manifest["mixed_precision"] != resolved:  # the tuned Trainer would compute in another precision
                raise SystemExit(f"bertclf trained in {manifest['mixed_precision']}, the bench expected {resolved}")
            record = {"curve": bertclf_curve(Path(doc["run_dir"]), batch), "batch_size": batch,
                      "learning_rate": manifest["learning_rate"], "precision": resolved,
                      "test_accuracy": scored_on_test(bench, doc, folder)}
        else:
            record = {"curve": doc["curve"], "batch_size": doc["batch_size"], "test_accuracy": doc["test_accuracy"],
                      "precision": "bf16" if doc.get("bf16") else "no"}
        runs[name].append({**record, **result.brief()})

    epoch_target = summary([accuracy_after(r["curve"], n) for r in runs[TRAINER_SIDE]])
    best = max(p["dev_accuracy"] for records in runs.values() for r in records for p in r["curve"])
    targets = {"Trainer's one-epoch dev accuracy": epoch_target["median"], "95% of the best dev accuracy": 0.95 * best}
    figures = {}
    for name, records in runs.items():
        figures[name] = {label: summary([seconds_to(r["curve"], t) for r in records]) for label, t in targets.items()}
        figures[name]["final_dev_accuracy"] = summary([r["curve"][-1]["dev_accuracy"] for r in records])
        figures[name]["test_accuracy"] = summary([r["test_accuracy"] for r in records])
    ratios = {label: {other: paired_ratio([seconds_to(r["curve"], t) for r in runs[other]],
                                          [seconds_to(r["curve"], t) for r in runs["bertclf defaults"]])
                      for other in SIDES[1:]} for label, t in targets.items()}
    for label, target in targets.items():
        for name in SIDES:
            fig = figures[name][label]
            ratio = "" if name == "bertclf defaults" or not ratios[label][name] else f"{ratios[label][name]:.2f}x"
            reached = f"{fig['n']}/{len(runs[name])} repeats reached it" if fig["n"] < len(runs[name]) else ""
            bench.rows.append(Row("tta", ds, f"to {label} {target:.3f}: {name}", fig["median"], "s to train",
                                  fig["min"], fig["max"], ratio, figures[name]["test_accuracy"]["median"],
                                  note=reached or f"final dev {figures[name]['final_dev_accuracy']['median']:.3f}"))
    return {"rows": n, "train_file": str(train), "epochs": EPOCHS, "evals_every": every, "bertclf": ours,
            "precision": {"requested": precision, "bertclf and tuned Trainer": resolved, TRAINER_SIDE: "no"},
            "targets": targets, "variants": figures, "ratios_trainer_seconds_over_bertclf": ratios, "runs": runs}


def earlier_trainer_runs(results: Path, key: str, rows: int) -> list[dict]:
    """The Trainer's defaults-section runs on the same file size from an earlier results file, each marked with
    where it came from."""
    earlier = json.loads(results.read_text(encoding="utf-8"))["sections"]["defaults"][key]
    if earlier["rows"] != rows:
        raise SystemExit(f"{results}: its {key} Trainer runs trained on {earlier['rows']} rows, not {rows}")
    return [{**run, "reused_from": str(results)} for run in earlier["runs"][TRAINER_SIDE]]


def defaults_dataset(bench, ds: str, folder: Path, rows: int | None, repeats: int) -> dict:
    """bertclf train FILE --model M against run_classification's defaults: whole-process wall, test accuracy."""
    Row, MODEL = bench.Row, bench.MODEL
    train = first_rows(folder / "train.csv", rows, bench.work / f"defaults-{ds}-{rows}.csv")
    n = count_rows(train)
    out = bench.work / f"defaults-{ds}-{n}"
    commands = {
        "bertclf defaults": bench.bertclf("train", train, "--model", MODEL, "--json", "-o", out / "bertclf",
                                          "--overwrite"),
        TRAINER_SIDE: trainer_defaults_cmd(bench, folder, train, out, "--save-like-default"),
    }
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    reused = bench.settings.defaults_trainer_from
    if reused:
        runs[TRAINER_SIDE] = earlier_trainer_runs(Path(reused), f"{ds}-{rows or 'all'}", n)
        del commands[TRAINER_SIDE]
    for repeat, name in interleaved(list(commands), repeats):
        bench.say(f"   defaults {ds} ({n} rows) repeat {repeat + 1}: {name}")
        result = bench.run(commands[name])
        doc = result.json()
        if name == "bertclf defaults":
            manifest = json.loads((Path(doc["run_dir"]) / "bertclf.json").read_text(encoding="utf-8"))
            record = {"wall_s": result.wall_s, "test_accuracy": scored_on_test(bench, doc, folder),
                      "batch_size": manifest["config"]["batch_size"], "steps": doc["steps"],
                      "mixed_precision": manifest["mixed_precision"]}
        else:  # the worker also scores dev and test after training: not part of what a user's run costs
            record = {"wall_s": result.wall_s - doc["after_train_seconds"], "test_accuracy": doc["test_accuracy"],
                      "batch_size": doc["batch_size"], "steps": doc["steps"]}
        runs[name].append({**record, **result.brief(), "wall_s": round(record["wall_s"], 2)})
    ours, theirs = runs["bertclf defaults"], runs[TRAINER_SIDE]
    speed = paired_ratio([r["wall_s"] for r in ours], [r["wall_s"] for r in theirs], higher_is_better=False)
    points = summary([a["test_accuracy"] - b["test_accuracy"] for a, b in zip(ours, theirs, strict=False)])["median"]
    for name, records in runs.items():
        wall, accuracy = summary([r["wall_s"] for r in records]), summary([r["test_accuracy"] for r in records])
        bench.rows.append(Row("defaults", ds, f"{n} rows: {name}", wall["median"], "s whole process", wall["min"],
                              wall["max"], f"{speed:.2f}x" if speed and name != "bertclf defaults" else "",
                              accuracy["median"],
                              note=f"batch {records[0]['batch_size']}, {records[0]['steps']} steps"
                              + (f", from {Path(records[0]['reused_from']).name}" if "reused_from" in records[0]
                                 else "")))
    return {"rows": n, "runs": runs, "speed_ratio_trainer_wall_over_bertclf": speed,
            "test_accuracy_points_bertclf_minus_trainer": None if points is None else round(100 * points, 2)}
