"""Run under torchrun by test_distributed.py: train through the library, then dump this rank's weights and
vocabulary (its tokens in id order), so the test can check that every process ended with the same model
and tokenized with the same vocabulary."""

import os
import sys
from pathlib import Path

import accelerate
from safetensors.torch import save_file

captured = {}
original_prepare = accelerate.Accelerator.prepare


def capturing_prepare(self, *objects, **kwargs):
    prepared = original_prepare(self, *objects, **kwargs)
    captured["model"] = prepared[0]
    captured["accelerator"] = self
    return prepared


accelerate.Accelerator.prepare = capturing_prepare

import bertclf.model  # noqa: E402

original_load = bertclf.model.load_for_training


def capturing_load(*args, **kwargs):
    tokenizer, model = original_load(*args, **kwargs)
    captured["tokenizer"] = tokenizer
    return tokenizer, model


bertclf.model.load_for_training = capturing_load

from bertclf.config import TrainConfig  # noqa: E402
from bertclf.train import train  # noqa: E402

train_file, model_dir, output, dump_dir = sys.argv[1:5]
train(TrainConfig(train_file=Path(train_file), validation_file=Path(sys.argv[5]), model=model_dir,
                  output=Path(output), max_steps=6, batch_size=8, lr=2e-3, cpu=True, eval_every=3,
                  mixed_precision="no"))
model = captured["accelerator"].unwrap_model(captured["model"])
rank = os.environ.get("RANK", "0")
save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
          str(Path(dump_dir) / f"rank{rank}.safetensors"))
vocab = captured["tokenizer"].get_vocab()
(Path(dump_dir) / f"rank{rank}.vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)),
                                                        encoding="utf-8")
