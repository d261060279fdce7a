"""`--compile`: torch.compile a model's forward so that a whole run compiles one graph, not one per length.

bertclf's batches change shape all the time: training batches are padded to their own longest text (dynamic
padding, length-grouped), prediction batches are cut by a token budget, so both the batch size and the sequence
length vary from batch to batch. torch.compile specialises a graph on the shapes it first sees and compiles again
for each new one (up to its recompile limit of 8, then silently runs eagerly), which on a 2-core CPU costs tens
of seconds each time. So:

- the graph is compiled with symbolic shapes (`dynamic=True`): one graph serves every batch size and length;
- a batch of one row is run as two (the row twice, the copy's output dropped), because torch.compile still
  specialises a dimension of size 1 and would compile a second graph for a lone text;
- the shapes a graph is first compiled with must differ from each other: torch.compile assumes two dimensions
  that are equal at compile time stay equal ("duck shaping") and compiles again when they do not.

Lengths are not padded up to buckets: with symbolic shapes that bounds nothing, and padding costs work.

Measured (bench/compile_bench.py, bench/results/compile-20261202-123607.json: MiniLM, en_wordnet_verbs, 2 threads,
2 repeats, each compiled run from an empty inductor cache): training 1.009x the eager samples/s in bf16 and
1.045x in fp32 after a 68-70 s compile, prediction 1.023x after 28 s. Compiling pays back only after about 150
(bf16) or 27 (fp32) minutes of eager training and 22 minutes of prediction, so `auto` does not compile on a CPU.

Only the forward of the mode asked for is compiled (training's, or inference's); the model's other mode runs
eagerly. The model object itself is not wrapped (no `OptimizedModule`), so its state dict, `save_pretrained`
and accelerate's `unwrap_model` see the plain model and the saved weights keep their names (no `_orig_mod.`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bertclf.config import check_compile
from bertclf.errors import UsageError


def compile_backend() -> str:
    """torch.compile's backend: inductor. BERTCLF_COMPILE_BACKEND=aot_eager (or eager) captures and differentiates
    the graph as inductor would but runs it without generating code: how to tell a graph-capture problem from a
    code-generation one (PyTorch's advice for compile failures), and how the fast tests compile training."""
    return os.environ.get("BERTCLF_COMPILE_BACKEND", "inductor")


def resolve_compile(requested: str, device_type: str) -> bool:
    """Whether to compile. `auto` compiles only where bench/compile_bench.py measured compiling to pay: on this
    project's 2-core CPUs it did not, for training or prediction (see the module docstring), and it has not
    been measured on a GPU, so auto is off everywhere for now. `yes` compiles (after checking that it can)."""
    check_compile(requested)
    if requested == "yes":
        check_can_compile(device_type)
        return True
    return False


def check_can_compile(device_type: str) -> None:
    """torch.compile's CPU code is C++ built at run time: without a compiler it fails deep inside the first
    forward pass. Say so up front instead."""
    if device_type != "cpu" or compile_backend() != "inductor":
        return
    from torch._inductor import exc
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except (exc.InvalidCxxCompiler, OSError, RuntimeError):
        import torch._inductor.config as inductor_config

        tried = ", ".join(c for c in inductor_config.cpp.cxx if c) or "g++"
        raise UsageError(f"--compile yes needs a C++ compiler on the CPU (torch.compile builds its kernels with "
                         f"one), and none was found (tried: {tried}).",
                         hint="Install one (apt-get install g++; or set CXX to its path), or use --compile no."
                         ) from None


def has_cxx() -> bool:
    """A quick look for g++ (or $CXX) on PATH, for tests and the benchmark."""
    return shutil.which(os.environ.get("CXX", "g++")) is not None


class CompiledForward:
    """Stands in for `model.forward`: the compiled forward in the mode it was made for (training or inference),
    the model's own forward in the other."""

    def __init__(self, model, *, training: bool):
        import torch

        self.eager = model.forward  # the bound method of the model's class
        self.model = model
        self.training = training
        self.backend = compile_backend()
        self.compiled = torch.compile(self.eager, dynamic=True, backend=self.backend)
        self._graphs_before = graphs_compiled()

    @property
    def graphs(self) -> int:
        """Graphs compiled since this forward was made (torch.compile counts per process, recompiles included)."""
        return graphs_compiled() - self._graphs_before

    def __call__(self, *args, **kwargs):
        if self.model.training != self.training or self.compiled is self.eager:
            return self.eager(*args, **kwargs)
        rows = _batch_rows(kwargs)
        if rows != 1:
            return self.compiled(*args, **kwargs)
        doubled = {k: (v.repeat(2, *([1] * (v.dim() - 1))) if _is_tensor(v) else v) for k, v in kwargs.items()}
        output = self.compiled(*args, **doubled)
        output["logits"] = output["logits"][:1]  # ModelOutput: sets the attribute too
        return output

    def disable(self) -> None:
        """Run eagerly from now on (compiling failed). The forward stays in place, inside accelerate's wrappers."""
        self.compiled = self.eager


def _is_tensor(value) -> bool:
    return hasattr(value, "dim") and hasattr(value, "repeat")


def _batch_rows(kwargs: dict) -> int | None:
    ids = kwargs.get("input_ids")
    return int(ids.shape[0]) if ids is not None and hasattr(ids, "shape") else None


def compile_model(model, *, training: bool) -> CompiledForward:
    """Replace `model.forward` (in place) by a CompiledForward. Call it before accelerate's prepare, which wraps
    the forward in autocast for mixed precision: the compiled graph then runs inside that autocast."""
    forward = CompiledForward(model, training=training)
    model.forward = forward  # an instance attribute shadows the class's forward; not a submodule
    # Also under a name of its own: accelerate may wrap model.forward (in autocast) afterwards.
    model.__dict__[_ATTRIBUTE] = forward
    return forward


_ATTRIBUTE = "_bertclf_compiled_forward"


def compiled_forward(model) -> CompiledForward | None:
    return model.__dict__.get(_ATTRIBUTE)


def graphs_compiled() -> int:
    """Graphs torch.compile has compiled in this process so far (its recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def warm_up_rows(lengths: list[int], rows: int) -> int:
    """How many of the first texts (of these lengths) to compile with: up to `rows`, at least 2 (a batch of one
    is run as two), and never as many as the batch's padded length (see duck shaping in the module docstring)."""
    count = max(2, min(rows, len(lengths)))
    while count > 2 and count == max(lengths[:count]):
        count -= 1
    return count


@dataclass
class CompileReport:
    """What compiling cost: `seconds` is the first call's time less a second, identical call's (the compile
    time itself, without the work both calls do); `graphs` the graphs compiled by the end of the run."""

    requested: str
    enabled: bool
    seconds: float | None = None
    graphs: int | None = None
    error: str | None = None
    backend: str = field(default_factory=compile_backend)

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "enabled": self.enabled, "backend": self.backend if self.enabled else None,
                "dynamic": True if self.enabled else None,
                "seconds": None if self.seconds is None else round(self.seconds, 2), "graphs": self.graphs,
                "error": self.error}


def timed_warm_up(call: Callable[[], Any]) -> float:
    """Run `call` twice; the first compiles. Returns the compile time (first minus second, at least 0)."""
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    started = time.perf_counter()
    call()
    return max(0.0, first - (time.perf_counter() - started))


def compile_failed(error: BaseException) -> str:
    """One line for a torch.compile failure (its messages run to pages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
