"""`bertclf serve`: options -> ServeConfig -> `bertclf.serving.serve` (FastAPI + uvicorn, imported there)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertclf.cli._cli_utils import PrecisionOpt
from bertclf.cli._errors import user_errors


def serve(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `bertclf train` (or `bertclf export -o`).",
                                            show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    backend: Annotated[str, typer.Option(help="torch, or onnx: RUN_DIR/onnx/model.onnx from `bertclf export`.")]
    = "torch",
    quantize: Annotated[str | None, typer.Option(help="int8: the dynamically quantized model (torch), or "
                        "onnx/model_quantized.onnx with --backend onnx.")] = None,
    max_batch_tokens: Annotated[int, typer.Option(help="Tokens one inference round gathers from queued "
                                "requests.")] = 16384,
    max_wait_ms: Annotated[float, typer.Option(help="How long the first queued request waits for others to batch "
                           "with (ms).")] = 5.0,
    max_concurrent_requests: Annotated[int, typer.Option(help="Requests in flight at once; more are answered "
                                       "429.")] = 512,
    max_client_batch_size: Annotated[int, typer.Option(help="Most texts in one request; more is 413.")] = 32,
    payload_limit: Annotated[int, typer.Option(help="Most bytes in one request body; more is 413.")] = 2_000_000,
    api_key: Annotated[str | None, typer.Option(envvar="BERTCLF_API_KEY", help="Require 'Authorization: Bearer "
                       "KEY' (all routes but /health and /ready). Also from $BERTCLF_API_KEY.")] = None,
    batch_size: Annotated[int, typer.Option(help="Most texts per forward pass (on a CPU also at most 1,024 "
                          "tokens).")] = 64,
    graceful_timeout: Annotated[float, typer.Option(help="Seconds SIGTERM waits for requests in flight.")] = 30.0,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even if a GPU is present.")] = False,
    precision: PrecisionOpt = "auto",
) -> None:
    """Serve a run over HTTP with a TEI-compatible API: POST /predict, GET /health, /ready, /info, /metrics.
    Requests are micro-batched by one inference thread; SIGTERM answers what is queued, then exits 0.

    Examples:

        bertclf serve runs/topics --port 8080

        curl -s localhost:8080/predict -H 'Content-Type: application/json' -d '{"inputs": "rain all week"}'
    """
    with user_errors():
        from bertclf.serving import ServeConfig

        config = ServeConfig(run_dir=run_dir, host=host, port=port, backend=backend, quantize=quantize,
                             precision=precision,
                             max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms,
                             max_concurrent_requests=max_concurrent_requests,
                             max_client_batch_size=max_client_batch_size, payload_limit=payload_limit,
                             api_key=api_key, batch_size=batch_size, graceful_timeout=graceful_timeout, cpu=cpu)
        try:
            import fastapi  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            from bertclf.errors import ModelUnavailableError

            raise ModelUnavailableError("bertclf serve needs fastapi and uvicorn, which are not installed.",
                                        hint="Install the deploy extra: pip install 'bertclf[deploy]'") from None
        from bertclf.serving import serve as run_server

        run_server(config)
