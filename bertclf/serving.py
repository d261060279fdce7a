"""`bertclf serve`: a run directory behind a TEI-compatible HTTP API (FastAPI + uvicorn), micro-batched.

One inference thread (`InferenceWorker`) owns the predictor, model and tokenizer (a fast tokenizer shared
between threads fails with "Already borrowed"). Request handlers validate the body on the event loop, queue a
job and await its future; the worker takes the first queued job, keeps taking jobs until --max-wait-ms has
passed since that job arrived or --max-batch-tokens tokens are gathered, and runs them all at once through
the shared inference engine (bertclf/inference.py: length-sorted token-budget batches, logits in input
order), then answers each job on the loop. The loop never runs inference, so /health, /metrics and 429s
answer while a batch computes.

Routes: POST /predict, GET /health, /ready (503 until the model is loaded and warmed up), /info, /metrics.
Errors are JSON {"error": ..., "error_type": ...}: 400 empty input or invalid JSON, 401 without the --api-key
bearer token, 413 payload or batch too large, 422 a malformed field (named), 429 over
--max-concurrent-requests, 503 not ready, 500 inference failed. SIGTERM or Ctrl-C: stop accepting, answer
what is queued and in flight, exit 0.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (the Request type imported
# inside build_app) as objects.
import asyncio
import hmac
import json
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertclf import __version__, console
from bertclf.errors import UsageError

TEI_FIELDS = ("inputs", "parameters", "raw_scores", "truncate", "truncation_direction")
PARAMETER_FIELDS = ("top_k", "function_to_apply")
WARM_UP_TEXTS = ("warm up", "a second, somewhat longer text to warm up the model with")
_STOP = object()


@dataclass(frozen=True)
class ServeConfig:
    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "torch"
    quantize: str | None = None
    max_batch_tokens: int = 16384  # tokens one worker round gathers (TEI's default)
    max_wait_ms: float = 5.0  # how long the first job of a round waits for company
    max_concurrent_requests: int = 512  # in flight at once; beyond: 429
    max_client_batch_size: int = 32  # texts in one request; beyond: 413
    payload_limit: int = 2_000_000  # bytes of one request body; beyond: 413
    api_key: str | None = None
    batch_size: int = 64  # most texts per forward pass (the engine also caps tokens on a CPU)
    graceful_timeout: float = 30.0  # seconds SIGTERM waits for requests in flight
    cpu: bool = False
    precision: str = "auto"  # auto, fp32, bf16 (bertclf.precision)

    def __post_init__(self) -> None:
        from bertclf.config import check_backend, check_precision

        check_backend(self.backend)
        check_precision(self.precision, backend=self.backend, quantize=self.quantize)
        if self.quantize is not None and self.quantize != "int8":
            raise UsageError(f"Invalid value for --quantize: {self.quantize!r}. The only mode is int8.")
        for flag, value in (("--port", self.port), ("--max-batch-tokens", self.max_batch_tokens),
                            ("--max-concurrent-requests", self.max_concurrent_requests),
                            ("--max-client-batch-size", self.max_client_batch_size),
                            ("--payload-limit", self.payload_limit), ("--batch-size", self.batch_size)):
            if value < 1 or (flag == "--port" and value > 65535):
                raise UsageError(f"Invalid value for {flag}: {value}. Give a positive number"
                                 f"{' up to 65535' if flag == '--port' else ''}.")
        if self.max_wait_ms < 0:
            raise UsageError(f"Invalid value for --max-wait-ms: {self.max_wait_ms}. Give 0 or more.")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass
class Request:
    """One parsed /predict body."""

    first: list[str]
    second: list[str] | None
    single: bool  # inputs was one string: answer one list, not a list of lists
    top_k: int
    raw_scores: bool


@dataclass
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    encoded: object = None
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0


class Metrics:
    """Prometheus metrics in a registry of their own (several apps in one process stay apart)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        fast = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.requests = Counter("bertclf_requests", "HTTP requests by route and status", ["route", "code"],
                                registry=r)
        self.errors = Counter("bertclf_errors", "Requests answered with an error, by status", ["code"], registry=r)
        self.duration = Histogram("bertclf_request_duration_seconds", "POST /predict duration", buckets=fast,
                                  registry=r)
        self.queue = Histogram("bertclf_queue_duration_seconds", "Time a request waited for the worker",
                               buckets=fast, registry=r)
        self.inference = Histogram("bertclf_inference_duration_seconds", "Duration of one worker round",
                                   buckets=fast, registry=r)
        self.batch_size = Histogram("bertclf_batch_size", "Texts per worker round",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.batch_tokens = Histogram("bertclf_batch_tokens", "Tokens per worker round",
                                      buckets=(16, 64, 256, 1024, 4096, 16384, 65536), registry=r)
        self.texts = Counter("bertclf_texts", "Texts classified", registry=r)
        self.in_flight = Gauge("bertclf_requests_in_flight", "POST /predict requests being handled", registry=r)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class InferenceWorker(threading.Thread):
    """The one thread that loads, owns and runs the model and its tokenizer (see the module docstring)."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        super().__init__(name="bertclf-inference", daemon=True)
        self.config, self.metrics = config, metrics
        self.inbox: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.predictor = None
        self.on_failure = lambda: None

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def stop(self) -> None:
        self.inbox.put(_STOP)

    def run(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # noqa: BLE001 - reported by serve() once the server has stopped
            self.failed = exc
            self.on_failure()
            return
        stopping = False
        while not stopping:
            job = self.inbox.get()
            if job is _STOP:
                break
            jobs, stopping = self._collect(job)
            try:
                self._run(jobs)
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave requests waiting forever
                for job in jobs:
                    _resolve(job, ApiError(500, f"Internal error: {type(exc).__name__}: {exc}", "backend"))

    def _load(self) -> None:
        from bertclf.predict import Predictor

        config = self.config
        self.predictor = Predictor.from_dir(config.run_dir, cpu=config.cpu, quantize=config.quantize,
                                            backend=config.backend, precision=config.precision)
        pairs = list(WARM_UP_TEXTS) if self.predictor.text_pair_column else None
        self.predictor.probabilities_of(list(WARM_UP_TEXTS), pairs, config.batch_size)
        self.ready.set()

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The jobs of one round: `first`, then whatever arrives within max_wait_ms of it, up to the token
        budget. Returns (jobs, whether a stop request came)."""
        jobs, tokens = [first], self._encode(first)
        deadline = first.enqueued + self.config.max_wait_ms / 1000
        while tokens < self.config.max_batch_tokens:
            try:
                job = self.inbox.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            tokens += self._encode(job)
        return jobs, False

    def _encode(self, job: Job) -> int:
        """Tokenize a job's texts (here, in the thread that owns the tokenizer); returns its token count."""
        from bertclf.encoding import encode

        predictor = self.predictor
        try:
            job.encoded = encode(predictor.tokenizer, job.request.first, predictor.spec, job.request.second)
        except Exception as exc:  # noqa: BLE001 - this job's failure, not the round's
            job.encoded = exc
            return 0
        return sum(job.encoded.lengths)

    def _run(self, jobs: list[Job]) -> None:
        from bertclf.encoding import pool_windows
        from bertclf.inference import predict_logits

        failed = [job for job in jobs if isinstance(job.encoded, Exception)]
        for job in failed:
            _resolve(job, ApiError(422, f"inputs cannot be tokenized: {job.encoded}", "tokenizer"))
        jobs = [job for job in jobs if not isinstance(job.encoded, Exception)]
        if not jobs:
            return
        started = time.perf_counter()
        merged = merge_encoded([job.encoded for job in jobs])
        predictor = self.predictor
        try:
            logits = predict_logits(predictor.model, predictor.tokenizer, merged, self.config.batch_size,
                                    device=predictor.device, precision=predictor.precision.precision)
        except Exception as exc:  # noqa: BLE001 - every job of the round is answered, with the error
            for job in jobs:
                _resolve(job, ApiError(500, f"Inference failed: {type(exc).__name__}: {exc}", "backend"))
            return
        probs = pool_windows(predictor.space.probabilities(logits), merged)
        raw = pool_windows(logits.astype(np.float64), merged)
        seconds = time.perf_counter() - started
        self.metrics.inference.observe(seconds)
        self.metrics.batch_size.observe(merged.n_texts)
        self.metrics.batch_tokens.observe(sum(merged.lengths))
        self.metrics.texts.inc(merged.n_texts)
        offset = 0
        for job in jobs:
            n = job.encoded.n_texts
            job.queue_seconds, job.inference_seconds = started - job.enqueued, seconds
            self.metrics.queue.observe(job.queue_seconds)
            _resolve(job, answer(predictor, probs[offset:offset + n], raw[offset:offset + n], job.request))
            offset += n


def _resolve(job: Job, result) -> None:
    """Hand a result (or an ApiError) to the job's future, on its event loop."""

    def settle() -> None:
        if job.future.done():  # the client went away and the handler was cancelled
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    job.loop.call_soon_threadsafe(settle)


def merge_encoded(parts: list):
    """Several requests' encodings as one, so the engine sorts and batches them together."""
    from bertclf.encoding import Encoded

    ids, types, index, offset = [], [], [], 0
    paired = parts[0].token_type_ids is not None
    for part in parts:
        ids.extend(part.input_ids)
        if paired:
            types.extend(part.token_type_ids)
        index.extend(i + offset for i in part.text_index)
        offset += part.n_texts
    return Encoded(ids, types if paired else None, index, offset, sum(p.truncated for p in parts))


def answer(predictor, probs: np.ndarray, raw: np.ndarray, request: Request):
    """TEI's answer: per text, [{label, score}] by descending score (top_k of them); multi-label runs answer
    {"labels": the labels at or above their tuned threshold, "scores": [...]} per text."""
    labels = predictor.labels
    answers = []
    for row, raw_row in zip(probs, raw, strict=True):
        scores = raw_row if request.raw_scores else row
        order = np.argsort(-row, kind="stable")
        entries = [{"label": labels[i], "score": float(scores[i])} for i in order[:request.top_k]]
        if predictor.space.multi_label:
            entries = {"labels": [labels[i] for i in order if row[i] >= predictor.thresholds[i]], "scores": entries}
        answers.append(entries)
    return answers[0] if request.single else answers


def parse_request(payload, *, pairs: bool, max_texts: int, n_labels: int) -> Request:
    """A /predict body to a Request, or an ApiError naming the field (see the module docstring)."""
    if not isinstance(payload, dict):
        raise ApiError(422, "The body must be a JSON object with the field 'inputs'.", "validation")
    unknown = [key for key in payload if key not in TEI_FIELDS]
    if unknown:
        raise ApiError(422, f"Unknown field {unknown[0]!r}; the fields are: {', '.join(TEI_FIELDS)}.", "validation")
    if "inputs" not in payload:
        raise ApiError(422, "The field 'inputs' is missing: give a text, or a list of texts.", "validation")
    inputs = payload["inputs"]
    single = isinstance(inputs, str)
    if single and pairs:
        raise ApiError(422, "inputs: this model classifies text pairs; give [[text, text_pair], ...].", "validation")
    items = [inputs] if single else inputs
    if not isinstance(items, list):
        raise ApiError(422, "inputs must be a text or a list of " + ("[text, text_pair] pairs." if pairs
                                                                     else "texts."), "validation")
    if not items:
        raise ApiError(400, "inputs is empty: give at least one text.", "empty")
    if len(items) > max_texts:
        raise ApiError(413, f"inputs holds {len(items)} texts; at most {max_texts} are allowed per request "
                       "(--max-client-batch-size).", "validation")
    first, second = _texts(items, pairs, single)
    top_k, no_function = _parameters(payload.get("parameters"), n_labels)
    return Request(first, second, single, top_k, _flag(payload, "raw_scores") or no_function)


def _texts(items: list, pairs: bool, single: bool) -> tuple[list[str], list[str] | None]:
    first, second = [], [] if pairs else None
    for i, item in enumerate(items):
        where = "inputs" if single else f"inputs[{i}]"
        if pairs:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)):
                raise ApiError(422, f"{where} must be a [text, text_pair] pair of strings: this model classifies "
                               "text pairs (a flat list of texts is never read as pairs).", "validation")
            texts = item
        else:
            if not isinstance(item, str):
                raise ApiError(422, f"{where} must be a string" + (": this model classifies single texts, not "
                               "pairs." if isinstance(item, list) else "."), "validation")
            texts = [item]
        if any(not t.strip() for t in texts):
            raise ApiError(400, f"{where} is an empty text.", "empty")
        first.append(texts[0])
        if pairs:
            second.append(texts[1])
    return first, second


def _parameters(parameters, n_labels: int) -> tuple[int, bool]:
    """(top_k, whether function_to_apply is "none", i.e. raw scores). softmax or sigmoid is the run's own:
    sigmoid for multi-label runs, softmax otherwise."""
    if parameters is None:
        return n_labels, False
    if not isinstance(parameters, dict):
        raise ApiError(422, "parameters must be an object such as {\"top_k\": 3}.", "validation")
    unknown = [key for key in parameters if key not in PARAMETER_FIELDS]
    if unknown:
        raise ApiError(422, f"Unknown field parameters.{unknown[0]}; the fields are: "
                       f"{', '.join(PARAMETER_FIELDS)}.", "validation")
    if parameters.get("function_to_apply") not in (None, "softmax", "sigmoid", "none"):
        raise ApiError(422, "parameters.function_to_apply must be softmax, sigmoid or none.", "validation")
    raw = parameters.get("function_to_apply") == "none"
    top_k = parameters.get("top_k")
    if top_k is None:
        return n_labels, raw
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ApiError(422, f"parameters.top_k must be an integer of 1 or more, not {json.dumps(top_k)}.",
                       "validation")
    return min(top_k, n_labels), raw


def _flag(payload: dict, name: str) -> bool:
    value = payload.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(422, f"{name} must be true or false, not {json.dumps(value)}.", "validation")
    return value


def build_app(config: ServeConfig, worker: InferenceWorker, metrics: Metrics):
    """The FastAPI application; `worker` must be started by the caller."""
    from fastapi import FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="bertclf", version=__version__, docs_url="/docs", redoc_url=None)
    state = {"in_flight": 0}

    def error(exc: ApiError, route: str):
        metrics.requests.labels(route, str(exc.status)).inc()
        metrics.errors.labels(str(exc.status)).inc()
        return JSONResponse({"error": exc.message, "error_type": exc.kind}, status_code=exc.status)

    def authorize(request: HttpRequest) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise ApiError(401, "Missing or wrong API key: send the header 'Authorization: Bearer KEY'.",
                           "unauthorized")

    @app.post("/predict")
    async def predict(request: HttpRequest):
        started = time.perf_counter()
        if state["in_flight"] >= config.max_concurrent_requests:
            return error(ApiError(429, f"Too many requests in flight (--max-concurrent-requests "
                                  f"{config.max_concurrent_requests}); retry shortly.", "overloaded"), "/predict")
        state["in_flight"] += 1
        metrics.in_flight.inc()
        try:
            authorize(request)
            parsed = await _parse(request, config, worker)
            loop = asyncio.get_running_loop()
            job = Job(parsed, loop, loop.create_future())
            worker.submit(job)
            result = await job.future
            metrics.requests.labels("/predict", "200").inc()
            metrics.duration.observe(time.perf_counter() - started)
            return JSONResponse(result, headers=_timing(job, started))
        except ApiError as exc:
            return error(exc, "/predict")
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()

    @app.get("/health")
    async def health():
        metrics.requests.labels("/health", "200").inc()
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not worker.ready.is_set():
            return error(ApiError(503, "The model is still loading.", "not_ready"), "/ready")
        metrics.requests.labels("/ready", "200").inc()
        return {"status": "ready"}

    def refused(request: HttpRequest, route: str):
        """The error response when the request may not see `route`, else None (and the request is counted)."""
        try:
            authorize(request)
        except ApiError as exc:
            return error(exc, route)
        metrics.requests.labels(route, "200").inc()
        return None

    @app.get("/info")
    async def info(request: HttpRequest):
        return refused(request, "/info") or JSONResponse(_info(config, worker))

    @app.get("/metrics")
    async def prometheus(request: HttpRequest):
        from prometheus_client import CONTENT_TYPE_LATEST

        return refused(request, "/metrics") or Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _parse(request, config: ServeConfig, worker: InferenceWorker) -> Request:
    """Read the body within --payload-limit, parse it, check the model is ready."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > config.payload_limit:
        raise ApiError(413, f"The body has {int(length)} bytes; at most {config.payload_limit} are allowed "
                       "(--payload-limit).", "payload_limit")
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > config.payload_limit:
            raise ApiError(413, f"The body exceeds {config.payload_limit} bytes (--payload-limit).", "payload_limit")
        body.append(chunk)
    try:
        payload = json.loads(b"".join(body))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError; bad UTF-8 too
        raise ApiError(400, f"The body is not valid JSON: {exc}.", "invalid_json") from None
    if not worker.ready.is_set():
        raise ApiError(503, "The model is still loading; GET /ready answers 200 once it can predict.", "not_ready")
    predictor = worker.predictor
    return parse_request(payload, pairs=predictor.text_pair_column is not None,
                         max_texts=config.max_client_batch_size, n_labels=len(predictor.labels))


def _timing(job: Job, started: float) -> dict[str, str]:
    """TEI's timing headers, in milliseconds."""
    return {"x-compute-time": f"{(time.perf_counter() - started) * 1000:.2f}",
            "x-queue-time": f"{job.queue_seconds * 1000:.2f}",
            "x-inference-time": f"{job.inference_seconds * 1000:.2f}"}


def _info(config: ServeConfig, worker: InferenceWorker) -> dict:
    predictor = worker.predictor
    info = {"model_id": str(config.run_dir), "version": __version__, "backend": config.backend,
            "quantize": config.quantize, "ready": worker.ready.is_set(),
            "max_batch_tokens": config.max_batch_tokens, "max_wait_ms": config.max_wait_ms,
            "max_client_batch_size": config.max_client_batch_size,
            "max_concurrent_requests": config.max_concurrent_requests, "payload_limit": config.payload_limit}
    if predictor is not None:
        labels = predictor.labels
        info.update(task=predictor.manifest.get("task", "single_label"), labels=labels,
                    max_input_length=predictor.max_length, truncation=predictor.truncation,
                    long_text=predictor.spec.long_text, pairs=predictor.text_pair_column is not None,
                    model_type={"classifier": {"id2label": dict(enumerate(labels)),
                                               "label2id": {label: i for i, label in enumerate(labels)}}})
        info["precision"] = predictor.precision.to_dict()
        if predictor.thresholds is not None:
            info["thresholds"] = dict(zip(labels, map(float, predictor.thresholds), strict=True))
    return info


def serve(config: ServeConfig) -> None:
    """Run the server until SIGTERM or Ctrl-C; requests in flight are answered first. A model that fails to
    load stops the server, and its error is raised here (so the CLI exits with its code)."""
    import uvicorn

    _check_before_listening(config)
    metrics = Metrics()
    worker = InferenceWorker(config, metrics)
    app = build_app(config, worker, metrics)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=config.graceful_timeout))

    def stop_server() -> None:
        server.should_exit = True

    worker.on_failure = stop_server
    # uvicorn re-raises the signal that stopped it once it is done; the handlers in place then decide what
    # that does. Do-nothing handlers make a graceful stop exit 0 rather than die of SIGTERM (143).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker.start()
    console.info(f"Serving {config.run_dir} ({config.backend}{', int8' if config.quantize else ''}) on "
                 f"http://{config.host}:{config.port}; loading the model (GET /ready answers 200 once loaded).")
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        worker.stop()
        worker.join(timeout=config.graceful_timeout)
    if worker.failed is not None:
        raise worker.failed
    console.info("Stopped.")


def _check_before_listening(config: ServeConfig) -> None:
    """The checks that fail fast with their own exit code (a missing run or export) before the port opens."""
    from bertclf.model import read_manifest
    from bertclf.onnx_backend import import_onnxruntime, onnx_path

    read_manifest(config.run_dir)
    if config.backend == "onnx":
        import_onnxruntime()
        path = onnx_path(config.run_dir, config.quantize)
        if not path.is_file():
            from bertclf.errors import InputMissingError

            raise InputMissingError(f"{path} does not exist: the run has not been exported.",
                                    hint=f"Export it first: bertclf export {config.run_dir}"
                                    f"{' --quantize int8' if config.quantize else ''}")
