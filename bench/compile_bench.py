#!/usr/bin/env python
"""Does `--compile yes` (torch.compile) pay on this machine, and from what run length on?

    .venv/bin/python bench/compile_bench.py                    # en_wordnet_verbs, about 9 minutes on 2 idle cores
    .venv/bin/python bench/compile_bench.py --datasets en,zh --precisions auto --steps 40

train    `bertclf train DATA/train.csv --max-steps N --cpu --json` with `--compile no` and `--compile yes`,
         interleaved (no yes yes no ...), each in a fresh process, at each --precisions (auto: bf16 on CPUs with
         native bf16; no: fp32). samples/s is the loop's, which leaves the compile out; compile seconds are the
         run's `timings.compile_seconds`.
predict  `bertclf predict RUN DATA/test.csv -o out.jsonl` with `--compile no` and `yes`, the same order; texts/s
         and compile seconds from its stderr summary (reading, predicting and writing; loading excluded).

Every compiled run starts from an empty inductor cache (TORCHINDUCTOR_CACHE_DIR in a fresh folder), as a first
run on a machine does; `--warm-cache` shares one cache across the compiled runs instead (the first one fills
it). Break-even: compile seconds / (eager seconds per sample - compiled seconds per sample), given in samples,
optimizer steps and minutes of eager training (texts and seconds of eager prediction). Hyperparameters are those
of bench/bench.py's train_cmd (MiniLM's auto lr 1e-4, batch 32, warmup 0.1, weight decay 0.01, seed 42); the
validation file is the first 256 rows of dev.csv (the same on both sides: validation is not timed) and
calibration is off, to keep the minutes on what is measured. A child during which other processes took more of
the CPU than it left them is run again after a quiet spell (--retries; the discarded runs stay in the JSON), and
the load average is recorded around every child. Writes bench/results/compile-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import TICKS, child_env, cpu_ticks, interleaved, loadavg, paired_ratio, run, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
MODEL = "all-MiniLM-L6-v2"
DATASETS = {"en": "en_wordnet_verbs", "zh": "zh_reviews"}
LR, WARMUP, WEIGHT_DECAY, SEED, BATCH = 1e-4, 0.1, 0.01, 42, 32  # as bench/bench.py
VALIDATION_ROWS = 256
BUSY_LIMIT = 0.1  # share of the cores a child does not use that other processes may take meanwhile
MODES = ("no", "yes")


def bertclf(*args) -> list[str]:
    script = Path(sys.executable).parent / "bertclf"
    return [str(script), *map(str, args)] if script.exists() else [sys.executable, "-m", "bertclf", *map(str, args)]


def validation_slice(dataset: str, work: Path) -> Path:
    """The first VALIDATION_ROWS rows of dev.csv: validation runs after the timed loop on both sides alike."""
    out = work / f"{dataset}-dev{VALIDATION_ROWS}.csv"
    with (DATA / DATASETS[dataset] / "dev.csv").open(encoding="utf-8-sig", newline="") as source, \
            out.open("w", encoding="utf-8", newline="") as target:
        reader = csv.reader(source)
        writer = csv.writer(target)
        for i, row in enumerate(reader):
            if i > VALIDATION_ROWS:
                break
            writer.writerow(row)
    return out


class Bench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.cache_runs = 0
        # With fewer threads than cores, others may use the cores left over without slowing the child down.
        cpus = os.cpu_count() or 1
        self.busy_limit = max(0.0, cpus - args.threads) / cpus + BUSY_LIMIT

    def env(self, mode: str) -> dict[str, str]:
        """The children's environment; each compiled child gets an empty inductor cache unless --warm-cache."""
        env = child_env(self.args.threads)
        if mode == "yes":
            self.cache_runs += 1
            name = "inductor-cache" if self.args.warm_cache else f"inductor-cache-{self.cache_runs}"
            env["TORCHINDUCTOR_CACHE_DIR"] = str(self.work / name)
        return env

    def measured(self, cmd: list[str], mode: str) -> tuple[object, dict]:
        """Run one child; while other processes took more of the CPU than it left them (this machine is
        shared), wait for a quiet spell and run it again, up to --retries times. Discarded runs are kept."""
        discarded = []
        for attempt in range(self.args.retries + 1):
            before = loadavg()
            child = run(cmd, self.env(mode), cwd=ROOT, timeout=1800).check()
            record = {**child.brief(), "loadavg_before": before, "loadavg_after": loadavg()}
            if (child.others_busy or 0) <= self.busy_limit or attempt == self.args.retries:
                return child, {**record, "discarded_busy_runs": discarded}
            discarded.append(record)
            say(f"  others used {child.others_busy:.0%} of the CPU meanwhile: waiting for a quiet spell, again")
            wait_for_quiet(self.busy_limit)
        raise AssertionError("unreachable")

    def train(self, dataset: str, precision: str) -> dict:
        folder = DATA / DATASETS[dataset]
        validation = validation_slice(dataset, self.work)
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for repeat, mode in interleaved(list(MODES), self.args.repeats):
            output = self.work / f"train-{dataset}-{precision}-{mode}-{repeat}"
            cmd = bertclf("train", folder / "train.csv", "--validation", validation, "--model", MODEL,
                          "--max-steps", self.args.steps, "--batch-size", BATCH, "--lr", LR, "--max-length", 128,
                          "--warmup-ratio", WARMUP, "--weight-decay", WEIGHT_DECAY, "--seed", SEED,
                          "--mixed-precision", precision,
                          "--no-calibration", "--cpu", "--json", "-o", output, "--overwrite", "--compile", mode)
            child, record = self.measured(cmd, mode)
            result = child.json()
            record.update(repeat=repeat, run_dir=str(output), **result["timings"],
                          mixed_precision=result["mixed_precision"], compile=result.get("compile"),
                          accuracy=result["validation_metrics"].get("accuracy"))
            runs[mode].append(record)
            say(f"train {dataset} {result['mixed_precision']} --compile {mode} #{repeat}: "
                f"{record['samples_per_second']:.1f} samples/s, compile {record['compile_seconds'] or 0:.1f} s, "
                f"wall {record['wall_s']:.0f} s (load {record['loadavg_before']})")
        return {"runs": runs, **figures(runs, "samples_per_second", unit="samples", batch=BATCH)}

    def predict(self, dataset: str, run_dir: str) -> dict:
        test = DATA / DATASETS[dataset] / "test.csv"
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for repeat, mode in interleaved(list(MODES), self.args.repeats):
            out = self.work / f"pred-{dataset}-{mode}-{repeat}.jsonl"
            cmd = bertclf("predict", run_dir, test, "-o", out, "--cpu", "--compile", mode)
            child, record = self.measured(cmd, mode)
            record.update(repeat=repeat, **predict_summary(child.stderr))
            runs[mode].append(record)
            say(f"predict {dataset} --compile {mode} #{repeat}: {record['texts_per_second']:.1f} texts/s, compile "
                f"{record['compile_seconds'] or 0:.1f} s (load {record['loadavg_before']})")
        same = _same_labels(self.work / f"pred-{dataset}-no-0.jsonl", self.work / f"pred-{dataset}-yes-0.jsonl")
        return {"runs": runs, "same_labels": same, **figures(runs, "texts_per_second", unit="texts")}


def predict_summary(stderr: str) -> dict:
    """texts/s and compile seconds from `bertclf predict -o`'s stderr summary."""
    wrote = re.search(r"Wrote (\d+) predictions to .* in ([\d.]+) s \(([\d.]+) rows/s\)", stderr)
    if wrote is None:
        raise RuntimeError(f"no summary line in predict's stderr:\n{stderr[-2000:]}")
    compiled = re.search(r"torch\.compile took ([\d.]+) s", stderr)
    return {"rows": int(wrote.group(1)), "predict_seconds": float(wrote.group(2)),
            "texts_per_second": float(wrote.group(3)),
            "compile_seconds": float(compiled.group(1)) if compiled else None}


def _same_labels(a: Path, b: Path) -> float:
    def labels(path: Path) -> list:
        return [json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines()]

    first, second = labels(a), labels(b)
    return sum(x == y for x, y in zip(first, second, strict=True)) / max(len(first), 1)


def figures(runs: dict[str, list[dict]], rate_key: str, *, unit: str, batch: int | None = None) -> dict:
    """Medians, the paired speed ratio and the break-even point of compiling."""
    eager = [r[rate_key] for r in runs["no"]]
    compiled = [r[rate_key] for r in runs["yes"]]
    compile_s = statistics.median(r["compile_seconds"] for r in runs["yes"])
    rate_no, rate_yes = statistics.median(eager), statistics.median(compiled)
    out = {rate_key: {"no": summary(eager), "yes": summary(compiled)},
           "compile_seconds": summary([r["compile_seconds"] for r in runs["yes"]]),
           "speedup": round(paired_ratio(compiled, eager), 3), "break_even": None}
    saved = 1 / rate_no - 1 / rate_yes  # seconds saved per sample (text) once compiled
    if saved > 0:
        count = compile_s / saved
        out["break_even"] = {unit: round(count), "eager_minutes": round(count / rate_no / 60, 1),
                             **({"steps": round(count / batch)} if batch else {})}
    return out


def wait_for_quiet(limit: float, most_seconds: float = 300) -> None:
    """Until other processes use less than `limit` of the CPU over 10 s (or most_seconds have passed)."""
    deadline = time.monotonic() + most_seconds
    while time.monotonic() < deadline:
        before, started = cpu_ticks(), time.perf_counter()
        time.sleep(10)
        after = cpu_ticks()
        if before is None or after is None:
            return
        if (after - before) / TICKS / ((time.perf_counter() - started) * (os.cpu_count() or 1)) < limit:
            return


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine(threads: int) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "logical_cpus": os.cpu_count(),
            "threads": threads}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                                 if line.startswith("model name"))
        flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    info["versions"] = {name: version(name) for name in ("torch", "transformers", "accelerate")}
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="en", help="comma-separated: en, zh")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of 32 per training run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (interleaved no yes yes no ...)")
    parser.add_argument("--precisions", default="auto,no", help="--mixed-precision of the training runs, "
                        "comma-separated (auto is bf16 on CPUs with native bf16, else fp32)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every child")
    parser.add_argument("--warm-cache", action="store_true", help="share one inductor cache across compiled runs")
    parser.add_argument("--retries", type=int, default=2, help="reruns of a child that other processes slowed down")
    parser.add_argument("--output", type=Path, help="result file (default bench/results/compile-<time>.json)")
    args = parser.parse_args()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / f"compile-{stamp}.json"
    results: dict = {"started": stamp, "machine": machine(args.threads), "loadavg_start": loadavg(),
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "datasets": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bertclf-compile-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        for dataset in args.datasets.split(","):
            trained = {precision: bench.train(dataset, precision) for precision in args.precisions.split(",")}
            predicted = bench.predict(dataset, next(iter(trained.values()))["runs"]["no"][0]["run_dir"])
            results["datasets"][dataset] = {"train": trained, "predict": predicted}
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    results.update(loadavg_end=loadavg(), total_seconds=round(time.perf_counter() - started, 1))
    output.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    for dataset, found in results["datasets"].items():
        parts = [(f"train --mixed-precision {p}", "samples_per_second", part) for p, part in found["train"].items()]
        for name, rate, part in [*parts, ("predict", "texts_per_second", found["predict"])]:
            say(f"{dataset} {name}: {part[rate]['no']['median']:.1f} -> {part[rate]['yes']['median']:.1f} "
                f"{rate.replace('_', ' ')} ({part['speedup']}x), compile {part['compile_seconds']['median']:.1f} s, "
                f"break-even {part['break_even']}")
    say(f"Wrote {output} ({results['total_seconds']:.0f} s; load average {results['loadavg_start']} at the start, "
        f"{results['loadavg_end']} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
