"""Measurement workers, each run by bench.py in a fresh process (so imports, caches and memory of one side never
help or hurt the other). Every subcommand prints one JSON line after runner.RESULT_MARK on stdout.

  prep         measured matmul peak (fp32, bf16) and token statistics of the batches each side will run
  hf-train     transformers Trainer, as run_classification.py configures it by default, or tuned
  hf-eval      Trainer.evaluate() on a run directory, run_classification style (pad to 128, eval batch 8)
  predict      bertclf Predictor vs transformers.pipeline on the same texts, interleaved in one process
  pipeline-e2e the pipeline as a user script: import, load, predict a file, write JSON lines (wall time)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import batch_stats  # noqa: E402
from runner import RESULT_MARK  # noqa: E402

MAX_LENGTH = 128


def emit(document: dict) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(document) + "\n")
    sys.stdout.flush()


def read_csv(path: Path, limit: int | None = None) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = rows[:limit] if limit else rows
    return [r["text"] for r in rows], [r["label"].strip() for r in rows]


def quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def accuracy_sorted(model, tokenizer, texts: list[str], gold: list[int], batch_size: int = 64) -> float:
    """Accuracy by length-sorted dynamic-padding inference: the same numbers as padded inference, much cheaper,
    so the Trainer side does not pay minutes of pad-128 evaluation just to print its dev accuracy."""
    import torch

    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    predicted = [0] * len(enc)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            logits = model(**batch).logits
            for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
                predicted[i] = p
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


# ---------------------------------------------------------------------------------------------------- prep
def matmul_peak(dtype_name: str, n: int, iters: int, trials: int) -> float:
    """Best FLOP/s of an n x n matmul loop on all torch threads: the ceiling MFU is measured against."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):  # warm-up: allocator, oneDNN/BLAS kernels
        torch.matmul(a, b)
    best = 0.0
    for _ in range(trials):
        tick = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - tick))
    return best


def bertclf_train_batches(lengths: list[int], batch_size: int, seed: int, steps: int) -> list[list[int]]:
    """The batches `bertclf train` runs (one process): its own sampler, replayed with its seed, epoch by epoch.
    Older bertclf versions used transformers' LengthGroupedSampler, seeded with seed + epoch."""
    import torch

    try:
        from bertclf.encoding import LengthGroupedSampler as BertclfSampler
    except ImportError:
        BertclfSampler = None
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < steps:
        if BertclfSampler is not None:
            sampler = BertclfSampler(lengths, batch_size, seed)
            sampler.epoch = epoch
        else:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            sampler = LengthGroupedSampler(batch_size, lengths=lengths,
                                           generator=torch.Generator().manual_seed(seed + epoch))
        order = list(sampler)
        batches += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        epoch += 1
    return batches[:steps]


def cmd_prep(args) -> None:
    import torch

    from bertclf.encoding import EncodingSpec, encode
    from bertclf.inference import CPU_TOKENS_PER_BATCH, cpu_token_budget, token_budget_batches
    from bertclf.model import load_tokenizer, resolve_model

    result = {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
              "peak": {}, "datasets": {}}
    from bertclf.precision import cpu_has_native_bf16

    for dtype in ("float32", "bfloat16"):
        if dtype == "bfloat16" and not cpu_has_native_bf16():
            # Emulated bf16 runs at about 1 GFLOP/s (AVX2-only EPYC, 2026-12-07): the three sizes took over 9
            # minutes and measured no ceiling worth having. bertclf's `auto` trains in fp32 on such a CPU.
            result["peak"][dtype] = None
            result["peak"][f"{dtype}_skipped"] = "no native bf16 on this CPU"
            continue
        try:
            # The best of several sizes: on this VM a single size varies by 10% from one moment to the next,
            # and a ceiling set low would flatter every MFU measured against it.
            sizes = {n: matmul_peak(dtype, n, args.matmul_iters * (2048 // n) ** 2, 3) for n in args.matmul_sizes}
            result["peak"][f"{dtype}_by_size"] = sizes
            result["peak"][dtype] = max(sizes.values())
        except Exception as exc:  # bf16 matmul may be missing on some builds
            result["peak"][dtype] = None
            result["peak"][f"{dtype}_error"] = repr(exc)
    tokenizer = load_tokenizer(resolve_model(args.model).path)
    for spec in args.datasets:
        name, folder = spec.split("=", 1)
        train_texts, _ = read_csv(Path(folder) / "train.csv")
        test_texts, _ = read_csv(Path(folder) / "test.csv")
        train_len = encode(tokenizer, train_texts, EncodingSpec(MAX_LENGTH, "head")).lengths
        test_len = encode(tokenizer, test_texts, EncodingSpec(MAX_LENGTH, "head")).lengths
        eval_len = test_len[:args.eval_rows] if args.eval_rows else test_len
        by_length = sorted(range(len(test_len)), key=lambda i: -test_len[i])
        eval_sorted = sorted(range(len(eval_len)), key=lambda i: -eval_len[i])
        chunks = lambda idx, size: [idx[i:i + size] for i in range(0, len(idx), size)]  # noqa: E731
        result["datasets"][name] = {
            "train_mean_tokens": sum(train_len) / len(train_len),
            "train_pad128_fraction": 1 - sum(train_len) / (MAX_LENGTH * len(train_len)),
            "test_mean_tokens": sum(test_len) / len(test_len),
            "truncated_share_test": sum(t >= MAX_LENGTH for t in test_len) / len(test_len),
            "stats": {
                # bertclf's own batches (replayed sampler) for each mixed-precision row: identical batches
                "train_bertclf": batch_stats(train_len, bertclf_train_batches(train_len, args.batch_size,
                                                                              args.seed, args.steps)),
                # Predictor.predict_proba and `bertclf eval`: longest first, at most 64 texts and (CPU)
                # CPU_TOKENS_PER_BATCH padded tokens a batch
                "predict_bertclf": batch_stats(test_len, token_budget_batches(test_len, by_length, 64,
                                                                              CPU_TOKENS_PER_BATCH)),
                "predict_bertclf_bf16": batch_stats(test_len, token_budget_batches(test_len, by_length, 64,
                                                                                   cpu_token_budget("bf16"))),
                "pipeline_bs1": batch_stats(test_len, chunks(list(range(len(test_len))), 1)),
                "pipeline_bs32": batch_stats(test_len, chunks(list(range(len(test_len))), 32)),
                "eval_bertclf": batch_stats(eval_len, token_budget_batches(eval_len, eval_sorted, 64,
                                                                           CPU_TOKENS_PER_BATCH)),
                "eval_trainer": batch_stats(eval_len, chunks(list(range(len(eval_len))), 8), pad_to=MAX_LENGTH),
            },
        }
    emit(result)


# ------------------------------------------------------------------------------------------------ hf-train
def cmd_hf_train(args) -> None:
    """The Trainer as transformers' examples/pytorch/text-classification/run_classification.py sets it up."""
    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    quiet()
    imported = time.perf_counter()
    folder = Path(args.data)
    train_texts, train_labels = read_csv(Path(args.train_file) if args.train_file else folder / "train.csv")
    dev_texts, dev_labels = read_csv(folder / "dev.csv")
    labels = sorted(set(train_labels))  # run_classification sorts the label list too
    label2id = {label: i for i, label in enumerate(labels)}
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    padded = args.config == "default"
    # run_classification default: pad_to_max_length=True, max_seq_length=128 -> default_data_collator.
    # Tuned: --pad_to_max_length False (DataCollatorWithPadding) and length-grouped batches.
    dataset = Dataset.from_dict({"text": train_texts, "label": [label2id[x] for x in train_labels]})
    dataset = dataset.map(lambda b: tokenizer(b["text"], padding="max_length" if padded else False,
                                              max_length=MAX_LENGTH, truncation=True),
                          batched=True, remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size,
        max_steps=args.steps or -1, num_train_epochs=args.epochs or 3.0,
        learning_rate=args.lr, warmup_steps=args.warmup, weight_decay=args.weight_decay, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=args.seed, bf16=args.bf16, use_cpu=True, report_to="none",
        # bertclf's samples/s leaves checkpoint saving out too; --save-like-default keeps run_classification's
        # checkpoint every 500 steps (for whole-process comparisons of the two tools' defaults)
        save_strategy="steps" if args.save_like_default else "no", save_steps=500,
        train_sampling_strategy="random" if padded else "group_by_length",
        disable_tqdm=True,
    )
    stats = {"sequences": 0, "real_tokens": 0, "real_sq": 0, "padded_tokens": 0, "padded_sq": 0}
    times: dict[str, float] = {}

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            # Count the tokens each optimizer step really processes (for MFU and the padding fraction).
            mask = inputs["attention_mask"]
            real = mask.sum(dim=1)
            stats["sequences"] += int(mask.shape[0])
            stats["real_tokens"] += int(real.sum())
            stats["real_sq"] += int((real * real).sum())
            stats["padded_tokens"] += int(mask.numel())
            stats["padded_sq"] += int(mask.shape[0] * mask.shape[1] ** 2)
            return super().training_step(model, inputs, *rest, **kwargs)

    curve: list[dict] = []
    dev_gold = [label2id[x] for x in dev_labels]

    class Clock(TrainerCallback):
        # The training loop only: from the first step's start to the last step's end (no model load, no save),
        # less the dev evaluations of --eval-every (the time-to-accuracy curve), which are timed apart.
        def on_train_begin(self, *a, **k):
            times["begin"], times["eval"] = time.perf_counter(), 0.0

        def on_step_end(self, targs, state, control, model=None, **k):
            if args.eval_every and (state.global_step % args.eval_every == 0 or state.global_step == state.max_steps):
                self.score(state, model)

        def on_epoch_end(self, targs, state, control, model=None, **k):
            if args.eval_every and (not curve or curve[-1]["step"] != state.global_step):
                self.score(state, model)  # every epoch's end is on the curve ("accuracy after one epoch")

        def score(self, state, model):
            paused = time.perf_counter()
            accuracy = accuracy_sorted(model, tokenizer, dev_texts, dev_gold)
            model.train()
            curve.append({"step": state.global_step, "samples": stats["sequences"],
                          "train_seconds": paused - times["begin"] - times["eval"], "dev_accuracy": accuracy})
            times["eval"] += time.perf_counter() - paused

        def on_train_end(self, *a, **k):
            times["end"] = time.perf_counter()

    trainer = CountingTrainer(model=model, args=training_args, train_dataset=dataset,
                              data_collator=default_data_collator if padded else DataCollatorWithPadding(tokenizer),
                              processing_class=tokenizer, callbacks=[Clock()])
    output = trainer.train()
    if args.save_like_default:
        trainer.save_model()  # run_classification saves the final model too
    train_seconds = times["end"] - times["begin"] - times["eval"]
    stats["padding_fraction"] = 1 - stats["real_tokens"] / max(stats["padded_tokens"], 1)
    trained = time.perf_counter()
    dev_accuracy = accuracy_sorted(model.float(), tokenizer, dev_texts, dev_gold)
    test_accuracy = None
    if args.test_file:
        test_texts, test_labels = read_csv(Path(args.test_file))
        test_accuracy = accuracy_sorted(model, tokenizer, test_texts, [label2id[x] for x in test_labels])
    emit({"config": args.config, "bf16": args.bf16, "batch_size": args.batch_size, "steps": output.global_step,
          "test_accuracy": test_accuracy, "curve": curve, "eval_seconds": times["eval"],
          "after_train_seconds": time.perf_counter() - trained,  # the bench's own dev/test scoring
          "samples": stats["sequences"], "train_seconds": train_seconds,
          "samples_per_second": stats["sequences"] / train_seconds,
          "trainer_train_samples_per_second": output.metrics.get("train_samples_per_second"),
          "trainer_train_runtime": output.metrics.get("train_runtime"), "train_loss": output.training_loss,
          "dev_accuracy": dev_accuracy, "stats": stats, "import_seconds": imported - started,
          "threads": torch.get_num_threads()})


# ------------------------------------------------------------------------------------------------- hf-eval
def cmd_hf_eval(args) -> None:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    quiet()
    texts, gold = read_csv(Path(args.data))
    tokenizer = AutoTokenizer.from_pretrained(args.run_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.run_dir)
    label2id = model.config.label2id

    def accuracy(p):  # evaluate.load("accuracy") needs the Hub; the same formula, locally
        return {"accuracy": float((np.argmax(p.predictions, axis=-1) == p.label_ids).mean())}

    training_args = TrainingArguments(output_dir=args.output_dir, per_device_eval_batch_size=8, use_cpu=True,
                                      report_to="none", disable_tqdm=True)
    tick = time.perf_counter()  # tokenising counts, as it does in bertclf eval's predict_seconds
    dataset = Dataset.from_dict({"text": texts, "label": [label2id[x] for x in gold]})
    dataset = dataset.map(lambda b: tokenizer(b["text"], padding="max_length", max_length=MAX_LENGTH,
                                              truncation=True), batched=True, remove_columns=["text"])
    tokenize_seconds = time.perf_counter() - tick
    trainer = Trainer(model=model, args=training_args, eval_dataset=dataset, data_collator=default_data_collator,
                      compute_metrics=accuracy)
    tick = time.perf_counter()
    metrics = trainer.evaluate()
    evaluate_seconds = time.perf_counter() - tick
    seconds = tokenize_seconds + evaluate_seconds
    emit({"rows": len(texts), "tokenize_seconds": tokenize_seconds, "evaluate_seconds": evaluate_seconds,
          "texts_per_second": len(texts) / seconds, "eval_samples_per_second": metrics.get("eval_samples_per_second"),
          "accuracy": metrics.get("eval_accuracy"), "threads": torch.get_num_threads()})


# ------------------------------------------------------------------------------------------------- predict
def cmd_predict(args) -> None:
    """Predictor.predict_proba (fp32, bf16 where this CPU has native bf16, and --quantize int8) vs
    pipeline(batch_size=1) vs pipeline(batch_size=32), interleaved, load excluded."""
    import numpy as np
    import torch
    from transformers import pipeline

    from bertclf.precision import native_bf16
    from bertclf.predict import Predictor

    quiet()
    texts, gold = read_csv(Path(args.data))
    tick = time.perf_counter()
    predictor = Predictor.from_dir(args.run_dir, cpu=True, precision="fp32")
    load_predictor = time.perf_counter() - tick
    int8 = Predictor.from_dir(args.run_dir, cpu=True, quantize="int8")
    bf16 = Predictor.from_dir(args.run_dir, cpu=True, precision="bf16") if native_bf16("cpu") else None
    tick = time.perf_counter()
    pipe = pipeline("text-classification", model=args.run_dir, device="cpu")
    load_pipeline = time.perf_counter() - tick
    # Same truncation on both sides (bertclf cuts to the run's 128 tokens); without it the pipeline fails on
    # texts longer than 512 tokens.
    call = {"truncation": True, "max_length": predictor.max_length}

    def ours(which=predictor):
        probs = which.predict_proba(texts)
        return [which.labels[i] for i in probs.argmax(axis=1)]

    variants = {"bertclf": ours, "bertclf_int8": lambda: ours(int8),
                **({"bertclf_bf16": lambda: ours(bf16)} if bf16 is not None else {}),
                "pipeline_bs1": lambda: [r["label"] for r in pipe(texts, batch_size=1, **call)],
                "pipeline_bs32": lambda: [r["label"] for r in pipe(texts, batch_size=32, **call)]}
    # Warm-up (oneDNN primitive caches, allocator), then discard.
    for warm in (predictor, int8, bf16):
        if warm is not None:
            warm.predict_proba(texts[:64])
    pipe(texts[:32], batch_size=32, **call)
    pipe(texts[:8], batch_size=1, **call)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    labels: dict[str, list[str]] = {}
    names = list(variants)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else list(reversed(names)):
            tick = time.perf_counter()
            labels[name] = variants[name]()
            seconds[name].append(time.perf_counter() - tick)
    agreement = {name: float(np.mean([a == b for a, b in zip(labels["bertclf"], labels[name], strict=True)]))
                 for name in names if name != "bertclf"}
    accuracy = {name: float(np.mean([a == b for a, b in zip(labels[name], gold, strict=True)])) for name in names}
    emit({"texts": len(texts), "seconds": seconds, "agreement_with_bertclf": agreement, "accuracy": accuracy,
          "load_seconds": {"bertclf": load_predictor, "pipeline": load_pipeline},
          "threads": torch.get_num_threads()})


def cmd_pipeline_e2e(args) -> None:
    """What a user script with the pipeline does end to end (timed from outside, imports included)."""
    from transformers import pipeline

    quiet()
    texts, _ = read_csv(Path(args.data))
    pipe = pipeline("text-classification", model=args.run_dir, device="cpu")
    with open(args.output, "w", encoding="utf-8") as out:
        for i, result in enumerate(pipe(texts, batch_size=32, truncation=True, max_length=MAX_LENGTH), start=1):
            out.write(json.dumps({"id": i, "label": result["label"], "score": round(result["score"], 6)}) + "\n")
    emit({"texts": len(texts)})


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prep")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--datasets", nargs="+", default=[], help="name=folder")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval-rows", type=int, default=0)
    p.add_argument("--matmul-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[512, 1024, 2048])
    p.add_argument("--matmul-iters", type=int, default=8)
    p.set_defaults(func=cmd_prep)
    p = sub.add_parser("hf-train")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--config", choices=["default", "tuned"], required=True)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--steps", type=int, help="optimizer steps (default: --epochs)")
    p.add_argument("--epochs", type=float, help="epochs when --steps is not given (default 3, as run_classification)")
    p.add_argument("--train-file", help="training CSV (default: DATA/train.csv)")
    p.add_argument("--test-file", help="also report accuracy on this labelled CSV after training")
    p.add_argument("--eval-every", type=int, help="dev accuracy every N steps, timed apart: a time-to-accuracy curve")
    p.add_argument("--save-like-default", action="store_true", help="checkpoint every 500 steps and save the final "
                   "model, as run_classification.py does by default")
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup_steps; below 1 it is a share of the steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_hf_train)
    p = sub.add_parser("hf-eval")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_hf_eval)
    p = sub.add_parser("predict")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("pipeline-e2e")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_pipeline_e2e)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
