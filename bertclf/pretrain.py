"""`bertclf pretrain`: masked-language-model pre-training on unlabelled text, the first of BERT's two stages.

`pretrain()` reads as `train()` does: prepare the corpus (read, hold out a slice), build the model and loader
(from scratch with a vocabulary built from the corpus, or continuing a model), run the loop (train_loop's
TrainingLoop, with the masked-LM loss and a held-out perplexity in place of the classifier's), finish the
model directory. The directory holds weights, tokenizer and `pretrain.json`; `bertclf train --model DIR`
fine-tunes it. Checkpoints, --resume (bitwise), stop signals and DDP come from the same code as train's.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bertclf import console, runinfo
from bertclf.config import PretrainConfig
from bertclf.corpus import Corpus, read_corpus
from bertclf.errors import DataError
from bertclf.run_lock import RunDirectory
from bertclf.runinfo import write_json_atomic
from bertclf.train_loop import (
    TrainingLoop,
    TrainingRun,
    TrainLog,
    find_resume_checkpoint,
    is_better,
    start_position,
)

MANIFEST = "pretrain.json"
# What defines a pretraining trajectory: a resume must match them (epochs, steps and cadences may change).
FINGERPRINT_FIELDS = ("model", "revision", "max_length", "mlm_probability", "whole_word_mask", "validation_split",
                      "max_validation_texts", "batch_size", "lr", "weight_decay", "warmup_ratio", "grad_accum",
                      "max_grad_norm", "seed", "mixed_precision", "text_column")
EVALUATIONS = 10  # held-out evaluations in a run when --eval-every is not given
VALIDATION_MASK_SEED = 1234  # the held-out set is masked once, the same way in every run and resume


@dataclass
class PretrainResult:
    output_dir: Path
    best_step: int
    validation: dict[str, Any]
    steps: int
    epochs: float
    train_seconds: float
    sequences_per_second: float
    tokens_per_second: float
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    is_main_process: bool = True

    def summary(self) -> dict[str, Any]:
        """The `--json` document."""
        return {"model_dir": str(self.output_dir), "best_step": self.best_step, "validation": self.validation,
                "steps": self.steps, "epochs": round(self.epochs, 4),
                "learning_rate": self.manifest.get("learning_rate"),
                "mixed_precision": self.manifest.get("mixed_precision"),
                "world_size": self.manifest.get("world_size"),
                "timings": {"train_seconds": round(self.train_seconds, 2),
                            "sequences_per_second": round(self.sequences_per_second, 2),
                            "tokens_per_second": round(self.tokens_per_second, 1)}}


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Pre-train (or continue pre-training) a BERT as a masked language model; write the model directory."""
    from bertclf.train import make_accelerator

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    corpus = prepare_corpus(config)
    output = config.output or default_output_dir(config.corpus_files[0])
    accelerator, mixed_precision = make_accelerator(config, output)
    run_dir = RunDirectory(output, overwrite=config.overwrite, resume=bool(config.resume), manifest=MANIFEST)
    if accelerator.is_main_process:
        run_dir.claim()
    failed = True
    try:
        accelerator.wait_for_everyone()
        from accelerate.utils import set_seed

        set_seed(config.seed)
        fingerprint = {**{k: config.to_dict().get(k) for k in FINGERPRINT_FIELDS},
                       "data": {f.path: f.sha256 for f in corpus.corpus.files}}
        resumed = find_resume_checkpoint(config, output, fingerprint) if config.resume else None
        run, manifest, masker = build_pretraining(config, corpus, run_dir, accelerator, mixed_precision)
        loop = start_loop(run, manifest, fingerprint, resumed, masker)
        try:
            loop.run_all()
        finally:
            if loop.checkpoints_written:
                run_dir.keep()
        run_dir.keep()
        result = finish_run(run, loop, manifest, started)
        failed = False
        return result
    finally:
        run_dir.close(failed)


def default_output_dir(first_file: Path) -> Path:
    return Path("runs") / f"pretrain-{Path(first_file).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# -- Phase 1: the corpus -----------------------------------------------------------------------------------------


@dataclass
class PretrainCorpus:
    corpus: Corpus
    train_texts: list[str]
    val_texts: list[str]


def prepare_corpus(config: PretrainConfig) -> PretrainCorpus:
    """Read every corpus file and hold out a seeded random slice of its texts for the held-out loss."""
    import random

    corpus = read_corpus(config.corpus_files, text_column=config.text_column, encoding=config.encoding,
                         fmt=config.data_format)
    if len(corpus.texts) < 2:
        raise DataError(f"The corpus holds {len(corpus.texts)} text; pre-training needs at least 2 (one is held "
                        "out to measure the masked-LM loss).", hint="Give more text.")
    n_val = min(config.max_validation_texts, max(1, round(len(corpus.texts) * config.validation_split)))
    order = list(range(len(corpus.texts)))
    random.Random(config.seed).shuffle(order)
    held_out = set(order[:n_val])
    train = [text for i, text in enumerate(corpus.texts) if i not in held_out]
    val = [corpus.texts[i] for i in sorted(held_out)]
    return PretrainCorpus(corpus, train, val)


# -- Phase 2: model, packed sequences, loader, optimizer ------------------------------------------------------


def auto_lr(model, source: str) -> float:
    """From scratch a small BERT takes large steps (BERT-small recipes: 5e-4 to 1e-3); continuing a pretrained
    model, the rates of domain-adaptive pre-training (Gururangan et al. 2020: 1e-4 for RoBERTa-base)."""
    if source == "scratch":
        return 1e-3 if int(model.config.hidden_size) <= 256 else 5e-4
    return 1e-4 if int(model.config.hidden_size) <= 384 else 5e-5


def _load_model(config: PretrainConfig, corpus: PretrainCorpus, run_dir: RunDirectory, accelerator):
    """(resolved model, tokenizer, masked-LM model). A scratch vocabulary is built once, by the main process,
    into the model directory; other ranks and resumed runs load that one (as train does)."""
    from bertclf.bigrams import auto_bigram_buckets, with_bigrams
    from bertclf.mlm import BertForMaskedLM
    from bertclf.model import load_tokenizer, quiet_transformers
    from bertclf.scratch import build_scratch_vocab, scratch_model_config, scratch_tokenizer
    from bertclf.scratch_init import scratch_model_for_pretraining
    from bertclf.train import resolve_for_run

    quiet_transformers()
    is_main, output = accelerator.is_main_process, run_dir.path
    resolved = resolve_for_run(config, corpus.train_texts, run_dir, accelerator)
    if resolved.source == "scratch":
        if is_main and not config.resume:
            build_scratch_vocab(corpus.train_texts, output)
        with accelerator.main_process_first():
            tokenizer = scratch_tokenizer(output)
        scratch_config = scratch_model_config(resolved.scratch_size, tokenizer, config.max_length,
                                              bigram_buckets=auto_bigram_buckets(corpus.train_texts,
                                                                                 config.bigram_buckets))
        model = scratch_model_for_pretraining(scratch_config)  # how it starts and why: scratch_init.py
    else:
        assert resolved.path is not None
        tokenizer = load_tokenizer(resolved.path)
        model = with_bigrams(BertForMaskedLM).from_pretrained(str(resolved.path), use_safetensors=True,
                                                              local_files_only=True)
    if is_main:
        run_dir.make_ready()
    return resolved, tokenizer, model


def _pack(config: PretrainConfig, tokenizer, texts: list[str], max_length: int):
    from bertclf.mlm import pack, tokenize_for_packing

    ids, new_word = tokenize_for_packing(tokenizer, texts, config.whole_word_mask)
    return pack(ids, max_length, tokenizer.cls_token_id, tokenizer.sep_token_id, new_word)


def build_pretraining(config: PretrainConfig, corpus: PretrainCorpus, run_dir: RunDirectory, accelerator,
                      mixed_precision: str):
    """(the loop's TrainingRun, the manifest as it starts, the training Masker)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from bertclf.encoding import LengthGroupedSampler
    from bertclf.fast_dropout import use_fast_dropout
    from bertclf.mlm import Masker, PackedDataset, masked_batches, pad_batch
    from bertclf.model import usable_max_length
    from bertclf.scratch_init import EMBEDDING_LR_SCALE, embedding_parameters
    from bertclf.train import _build_optimizer

    output = run_dir.path
    resolved, tokenizer, model = _load_model(config, corpus, run_dir, accelerator)
    max_length = usable_max_length(model, config.max_length)
    train_packed = _pack(config, tokenizer, corpus.train_texts, max_length)
    val_packed = _pack(config, tokenizer, corpus.val_texts, max_length)
    val_batches = masked_batches(val_packed, tokenizer, config.mlm_probability, config.whole_word_mask,
                                 VALIDATION_MASK_SEED, config.batch_size * 2)
    global_batch = config.batch_size * accelerator.num_processes
    sampler = LengthGroupedSampler(train_packed.lengths, global_batch, config.seed)
    loader = torch.utils.data.DataLoader(PackedDataset(train_packed), batch_size=global_batch, sampler=sampler,
                                         collate_fn=pad_batch(tokenizer.pad_token_id))
    lr = config.lr if config.lr is not None else auto_lr(model, resolved.source)
    slow = embedding_parameters(model) if resolved.source == "scratch" else set()  # why: scratch_init.py
    optimizer = _build_optimizer(model, config, lr, slow, EMBEDDING_LR_SCALE)
    if accelerator.device.type == "cpu":
        use_fast_dropout(model)  # dropout's masks were the largest cost after the matmuls (fast_dropout.py)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = max(1, math.ceil(len(loader) / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    run = TrainingRun(config=config, output=output, accelerator=accelerator, model=model, tokenizer=tokenizer,
                      optimizer=optimizer, scheduler=scheduler, train_loader=loader, sampler=sampler,
                      compute_loss=None, space=None, val_encoded=val_batches, val_targets=None,
                      global_batch=global_batch, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                      eval_every=config.eval_every or max(1, total_steps // EVALUATIONS))
    manifest = _start_manifest(config, corpus, resolved, tokenizer, run, lr=lr, mixed_precision=mixed_precision,
                               max_length=max_length, packed={"train": train_packed, "validation": val_packed})
    if run.is_main:
        if not config.resume:
            tokenizer.save_pretrained(str(output))
        n_params = sum(p.numel() for p in model.parameters())
        console.info(f"Pre-training on {len(corpus.train_texts)} texts ({train_packed.tokens} tokens in "
                     f"{len(train_packed)} sequences of up to {max_length}), {len(corpus.val_texts)} held out; "
                     f"{n_params / 1e6:.1f}M parameters; {total_steps} steps of {global_batch * config.grad_accum}; "
                     f"lr {lr:g}; device {accelerator.device}, precision {mixed_precision}")
    return run, manifest, Masker(tokenizer, config.mlm_probability, config.whole_word_mask)


def _start_manifest(config: PretrainConfig, corpus: PretrainCorpus, resolved, tokenizer, run: TrainingRun, *,
                    lr: float, mixed_precision: str, max_length: int, packed: dict) -> dict[str, Any]:
    import torch

    return {**runinfo.base_manifest(config.argv), "kind": "pretrain", "config": config.to_dict(),
            "corpus": [f.to_dict() for f in corpus.corpus.files], "model": resolved.describe(),
            "vocab_size": len(tokenizer), "max_length": max_length,
            "texts": {"train": len(corpus.train_texts), "validation": len(corpus.val_texts)},
            "sequences": {split: len(p) for split, p in packed.items()},
            "tokens": {split: p.tokens for split, p in packed.items()},
            "learning_rate": lr, "learning_rate_source": "auto" if config.lr is None else "--lr",
            "mixed_precision": mixed_precision, "device": str(run.accelerator.device),
            "world_size": run.accelerator.num_processes, "threads": torch.get_num_threads(), "seed": config.seed,
            "steps": {"total": run.total_steps, "per_epoch": run.steps_per_epoch}, "metric": "loss"}


# -- Phase 3: the loop -------------------------------------------------------------------------------------------


class PretrainingLoop(TrainingLoop):
    """train_loop's loop with the masked-LM loss; the best model is the one with the lowest held-out loss."""

    def __init__(self, *args, masker, **kwargs):
        super().__init__(*args, **kwargs)
        self.masker = masker

    def batch_loss(self, batch):
        return self.run.model(**self.masker(batch)).loss

    def evaluate(self) -> None:
        from bertclf.mlm import evaluate_masked_lm

        run, state = self.run, self.state
        metrics = evaluate_masked_lm(run.accelerator.unwrap_model(run.model), run.val_encoded, run.accelerator.device,
                                     mask_token_id=run.tokenizer.mask_token_id)
        improved = is_better(metrics["loss"], metrics["loss"], state.best_value, state.best_loss, False)
        if improved:
            state.best_value, state.best_loss, state.best_step = metrics["loss"], metrics["loss"], state.step
            self.best_metrics = metrics
            self._save_best(metrics)
        self.log.write({"type": "eval", "step": state.step, "epoch": round(state.step / run.steps_per_epoch, 4),
                        **{f"val_{k}": v for k, v in metrics.items()}, "best": improved})
        if run.is_main:
            console.info(f"step {state.step}/{run.total_steps} (epoch {state.step / run.steps_per_epoch:.2f}): "
                         f"held-out masked-LM loss {metrics['loss']:.4f}, perplexity {metrics['perplexity']:.2f}, "
                         f"accuracy {metrics['masked_accuracy']:.4f} ([MASK] only {metrics['mask_accuracy']:.4f})"
                         f"{'  best' if improved else ''}")


def start_loop(run: TrainingRun, manifest: dict, fingerprint: dict, resumed, masker) -> PretrainingLoop:
    import json

    position = start_position(run, resumed, manifest)
    if run.is_main:
        write_json_atomic(run.output / MANIFEST, manifest)
    log = TrainLog(run.output / "train_log.jsonl", run.is_main, append=bool(run.config.resume))
    metrics_file = run.output / "metrics.json"
    best = json.loads(metrics_file.read_text()) if run.config.resume and metrics_file.is_file() else {}
    best = {k: v for k, v in best.items() if k not in ("split", "step")}
    return PretrainingLoop(run, log, fingerprint, position.state, position.pending_rng, best, masker=masker)


# -- Phase 4: finish ---------------------------------------------------------------------------------------------


def finish_run(run: TrainingRun, loop: PretrainingLoop, manifest: dict, started: float) -> PretrainResult:
    accelerator, output, state = run.accelerator, run.output, loop.state
    accelerator.wait_for_everyone()
    runinfo.complete_manifest(manifest, metric="loss", state=state, total_seconds=time.perf_counter() - started)
    del manifest["calibration"]
    manifest["validation"] = loop.best_metrics
    sequences_per_second = state.samples_seen / max(state.train_seconds, 1e-9)
    tokens_per_second = sequences_per_second * manifest["tokens"]["train"] / max(manifest["sequences"]["train"], 1)
    manifest["timings"]["tokens_per_second"] = round(tokens_per_second, 1)
    if run.is_main:
        (output / "README.md").write_text(_model_card(manifest), encoding="utf-8")
        write_json_atomic(output / MANIFEST, manifest)  # last: completed=true means everything else is there
    accelerator.end_training()
    return PretrainResult(output, state.best_step, loop.best_metrics, state.step, state.step / run.steps_per_epoch,
                          state.train_seconds, sequences_per_second, tokens_per_second, manifest, run.is_main)


def _model_card(manifest: dict) -> str:
    corpus = "\n".join(f"- `{f['path']}`: {f['texts']} texts ({f['format']}, {f['encoding']}, sha256 "
                       f"{f['sha256'][:12]})" for f in manifest["corpus"])
    validation, nan = manifest.get("validation") or {}, float("nan")
    return (f"# Masked-language model pre-trained by bertclf {manifest['bertclf_version']}\n\n"
            f"Started from `{manifest['model']['name']}` ({manifest['model']['source']}); vocabulary "
            f"{manifest['vocab_size']} tokens; sequences of {manifest['max_length']} tokens.\n\n"
            f"## Corpus\n\n{corpus}\n\n"
            f"## Held-out masked-LM score (best step {manifest['best_step']} of {manifest['steps_done']})\n\n"
            f"loss {validation.get('loss', nan):.4f}, perplexity {validation.get('perplexity', nan):.2f}, "
            f"masked-token accuracy {validation.get('masked_accuracy', nan):.4f} (tokens replaced by [MASK] only: "
            f"{validation.get('mask_accuracy', nan):.4f})\n\n"
            f"## Use\n\nFine-tune it as a classifier: `bertclf train --model {manifest['config']['output'] or 'DIR'} "
            f"data.csv`\n")
