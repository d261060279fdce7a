"""The GPU check (issue 18): fp32 against bf16 training, time to accuracy, prediction speed, MFU and peak memory.

    .venv/bin/python bench/gpu_check.py                 # on a CUDA GPU, about 5-8 minutes
    .venv/bin/python bench/gpu_check.py --device cpu --steps 20 --predict-rows 300   # the same on a CPU (bf16 only
                                                # where it has AMX or AVX512-BF16), 20-30 minutes on 2 cores
                                                # (the base model alone, 12 steps: 17 minutes)

Runs in one process through bertclf's Python API (`bertclf.train.train`, `Predictor`), so peak memory comes from
torch.cuda.max_memory_allocated. Models: the packaged all-MiniLM-L6-v2 on en_wordnet_verbs, and a BERT of
bert-base-chinese's shape (12 x 768, 21,128-token vocabulary) with random weights built from its config, on
zh_reviews (no download: its speed is the base model's; its accuracy is not a pretrained model's). For each model
and precision: training samples/s (loop only), time to the dev accuracy that fp32 reaches at its first evaluation
(from train_log.jsonl), peak memory, MFU against the GPU's published dense peak (tensor cores for bf16, the
non-tensor fp32 peak for fp32, as vendors publish them; on a CPU the fp32 and bf16 matmul peaks measured here);
then the bf16-trained model predicts the test split with `--precision fp32` and `bf16`: texts/s, the share of
texts with the same label, MFU against each peak. Results go to bench/results/gpu-<time>.json (cpu-<time>.json
with --device cpu) and a table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))
# Published dense peaks, TFLOP/s: (fp32 without tensor cores, bf16 tensor cores). Matched on the device name.
GPU_PEAKS = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
             "A10": (31.2, 125.0), "L4": (30.3, 121.0), "4090": (82.6, 165.2), "3090": (35.6, 71.0)}
MODELS = {"minilm": ("en_wordnet_verbs", None), "base": ("zh_reviews", (12, 768, 12, 21128))}


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def base_model_dir(work: Path, shape: tuple[int, int, int, int]) -> Path:
    """A random-weight BERT of bert-base-chinese's shape, with a vocabulary built from zh_reviews and padded with
    [unused] tokens to its 21,128 entries (so the embedding and every matrix have the real model's size)."""
    from transformers import BertConfig, BertForSequenceClassification

    from bertclf.scratch import build_scratch_vocab, scratch_tokenizer

    layers, hidden, heads, vocab_size = shape
    folder = work / "base-shape"
    texts, _ = read_texts(DATA / "zh_reviews" / "train.csv")
    vocab_file = build_scratch_vocab(texts, folder)
    tokens = vocab_file.read_text(encoding="utf-8").split("\n")[:-1]
    tokens += [f"[unused{i}]" for i in range(vocab_size - len(tokens))]
    vocab_file.write_text("".join(t + "\n" for t in tokens[:vocab_size]), encoding="utf-8")
    tokenizer = scratch_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def time_to_accuracy(run_dir: Path, target: float) -> float | None:
    """Training seconds until the first evaluation at or above target, from the log's per-window rates."""
    seconds, last_step, batch = 0.0, 0, 32
    for record in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines()):
        if record["type"] == "train":
            seconds += (record["step"] - last_step) * batch / max(record["samples_per_second"], 1e-9)
            last_step = record["step"]
        elif record["val_accuracy"] >= target:
            return round(seconds, 2)
    return None


def train_once(model: str, dataset: str, precision: str, steps: int, device: str, work: Path) -> dict:
    import torch

    from bertclf.config import TrainConfig
    from bertclf.train import train

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = work / f"{Path(model).name}-{precision}"
    every = max(1, steps // 6)
    config = TrainConfig(train_file=DATA / dataset / "train.csv", validation_file=DATA / dataset / "dev.csv",
                         model=model, output=out, overwrite=True, max_steps=steps, max_length=128, eval_every=every,
                         log_every=every, mixed_precision=precision, cpu=device == "cpu", calibration=False)
    result = train(config)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    accuracies = [r["val_accuracy"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
                  if r["type"] == "eval"]
    return {"run_dir": str(out), "samples_per_second": result.samples_per_second, "train_seconds": result.train_seconds,
            "dev_accuracy": max(accuracies), "first_eval_accuracy": accuracies[0], "peak_memory_mib": peak}


def predict_speed(run_dir: str, dataset: str, device: str, precision: str, rows: int | None) -> dict:
    """Prediction texts/s on the test split (its first `rows`), in the given --precision, with the labels."""
    from bertclf.predict import Predictor

    texts, gold = read_texts(DATA / dataset / "test.csv")
    texts, gold = texts[:rows], gold[:rows]
    predictor = Predictor.from_dir(run_dir, cpu=device == "cpu", precision=precision)
    predictor.predict(texts[:64])  # warm-up: kernels, allocator
    started = time.perf_counter()
    predictions = predictor.predict(texts)
    seconds = time.perf_counter() - started
    labels = [p.label for p in predictions]
    accuracy = sum(label == g for label, g in zip(labels, gold, strict=True)) / len(gold)
    return {"texts_per_second": len(texts) / seconds, "test_accuracy": accuracy, "texts": len(texts),
            "labels": labels}


def compare_precisions(run_dir: str, model_dir: Path, dataset: str, device: str, rows: int | None,
                       peaks: tuple[float, float] | None) -> dict:
    """fp32 against bf16 prediction: texts/s, the share of texts with the same label, MFU against each peak."""
    runs = {p: predict_speed(run_dir, dataset, device, p, rows) for p in ("fp32", "bf16")}
    same = sum(a == b for a, b in zip(runs["fp32"].pop("labels"), runs["bf16"].pop("labels"), strict=True))
    per_text = flops_per_sample(model_dir, dataset, "test.csv", rows, training=False)
    for peak, run in zip(peaks or (None, None), runs.values(), strict=True):
        run["mfu"] = run["texts_per_second"] * per_text / (peak * 1e12) if peak else None
    return {**runs, "same_label": same / runs["fp32"]["texts"],
            "bf16_over_fp32": runs["bf16"]["texts_per_second"] / runs["fp32"]["texts_per_second"]}


def flops_per_sample(model_dir: Path, dataset: str, split: str, rows: int | None, *, training: bool) -> float:
    """Useful FLOPs per text (real tokens, flops.py's 6N + 12·L·d·T per token in training, 2N + 4·L·d·T in a
    forward pass; the full last layer, so prediction's [CLS]-only shortcut is not counted as work saved)."""
    from flops import dims

    from bertclf.model import load_tokenizer

    texts, labels = read_texts(DATA / dataset / split)
    texts = texts[:rows or 2000]
    tokenizer = load_tokenizer(model_dir)
    lengths = [min(len(ids) + 2, 128) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    dim = dims(model_dir, len(set(labels)))
    k = 3 if training else 1
    return k * sum(2 * dim["N"] * t + 4 * dim["L"] * dim["d"] * t * t for t in lengths) / len(lengths)


def training_mfu(model_dir: Path, dataset: str, samples_per_second: float, peak_tflops: float | None) -> float | None:
    if not peak_tflops:
        return None
    per_sample = flops_per_sample(model_dir, dataset, "train.csv", None, training=True)
    return samples_per_second * per_sample / (peak_tflops * 1e12)


def gpu_peaks(device: str) -> tuple[str, tuple[float, float] | None]:
    """The device's name and (fp32, bf16) dense peaks in TFLOP/s: published for a GPU, measured for a CPU (the
    best n x n matmul, as bench/worker.py's prep measures it)."""
    import torch

    if device != "cuda":
        from worker import matmul_peak

        return "cpu", tuple(max(matmul_peak(dtype, n, 4 * (2048 // n) ** 2, 3) for n in (512, 1024)) / 1e12
                            for dtype in ("float32", "bfloat16"))
    name = torch.cuda.get_device_name(0)
    return name, next((peaks for key, peaks in GPU_PEAKS.items() if key in name), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (batch 32) per training run")
    parser.add_argument("--models", default="minilm,base", help="comma-separated: minilm, base")
    parser.add_argument("--precisions", default="no,bf16", help="comma-separated; fp32 (no) must come first. A CPU "
                        "without native bf16 emulates it about 8x slower: smoke-test there with --precisions no")
    parser.add_argument("--predict-rows", type=int, help="test texts predicted in each precision (default: all)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU here: nothing to check (use --device cpu for a smoke test).", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    name, peaks = gpu_peaks(args.device)
    results = {"device": name, "published_peak_tflops": peaks, "steps": args.steps, "models": {},
               "torch": torch.__version__, "started": datetime.now().isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for key in args.models.split(","):
            dataset, shape = MODELS[key]
            model_dir = base_model_dir(work, shape) if shape else _minilm_dir()
            runs = {p: train_once(str(model_dir), dataset, p, args.steps, args.device, work)
                    for p in args.precisions.split(",")}
            target = runs["no"]["first_eval_accuracy"]
            for precision, run in runs.items():
                run["seconds_to_fp32_first_eval_accuracy"] = time_to_accuracy(Path(run["run_dir"]), target)
                run["mfu"] = training_mfu(model_dir, dataset, run["samples_per_second"],
                                          peaks and peaks[0 if precision == "no" else 1])
            if "bf16" in runs:
                runs["predict"] = compare_precisions(runs["bf16"]["run_dir"], model_dir, dataset, args.device,
                                                     args.predict_rows, peaks)
            if "bf16" in runs:
                runs["bf16_over_fp32_training"] = runs["bf16"]["samples_per_second"] / runs["no"]["samples_per_second"]
            results["models"][key] = runs
    kind = "gpu" if args.device == "cuda" else "cpu"
    output = args.output or ROOT / "bench" / "results" / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print_table(results)
    print(f"results: {output}")
    return 0


def _minilm_dir() -> Path:
    from bertclf.model import packaged_model_dir

    return packaged_model_dir("all-MiniLM-L6-v2")


def _print_table(results: dict) -> None:
    print(f"{results['device']}, {results['steps']} steps of 32 per run")
    print("model   precision  samples/s  s to fp32's 1st-eval acc  dev acc  peak MiB  MFU")
    for key, runs in results["models"].items():
        for precision in ("no", "bf16"):
            if precision not in runs:
                continue
            run = runs[precision]
            mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "-"
            memory = f"{run['peak_memory_mib']:.0f}" if run["peak_memory_mib"] else "-"
            print(f"{key:7} {precision:9} {run['samples_per_second']:10.1f} "
                  f"{run['seconds_to_fp32_first_eval_accuracy'] or float('nan'):26.1f} {run['dev_accuracy']:8.4f} "
                  f"{memory:>9} {mfu:>6}")
        ratio = runs.get("bf16_over_fp32_training")
        if ratio:
            print(f"{key:7} bf16/fp32 training {ratio:.2f}x")
        if "predict" in runs:
            pred = runs["predict"]
            mfus = " / ".join(f"{pred[p]['mfu']:.1%}" if pred[p]["mfu"] is not None else "-" for p in ("fp32", "bf16"))
            print(f"{key:7} predict fp32 {pred['fp32']['texts_per_second']:.1f} / bf16 "
                  f"{pred['bf16']['texts_per_second']:.1f} texts/s ({pred['bf16_over_fp32']:.2f}x), same label "
                  f"{pred['same_label']:.2%} of {pred['fp32']['texts']}, MFU {mfus}")


if __name__ == "__main__":
    raise SystemExit(main())
