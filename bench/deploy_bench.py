"""Deployment benchmark (issue 15): predict on torch fp32 / torch int8 / ONNX fp32 / ONNX int8, and serving:
a hand-written FastAPI + transformers `pipeline` server against `bertclf serve` (torch fp32, ONNX int8).

    .venv/bin/bertclf train ../shared/data/en_wordnet_verbs/train.csv -m all-MiniLM-L6-v2 --max-steps 150 \\
        --cpu -o /tmp/e_run
    .venv/bin/python bench/deploy_bench.py /tmp/e_run            # exports the run first if it has no onnx/

Predict: `Predictor.predict_proba` on every text of the test file (load excluded), variants interleaved
ABCD DCBA ABCD in one process, median texts/s, accuracy of each. Serving: each server in its own process on
127.0.0.1; closed-loop clients (each sends its next single-text request when the last is answered) at
concurrency 1, 4 and 16, a fixed number of requests after a warm-up, the servers' turns rotated at each level;
texts/s, p50/p99 latency, errors; RSS of `bertclf serve` (ONNX int8) after 500 and 5,000 requests. The
machine's load average is recorded with every figure (it is shared: read ratios, not absolute numbers).
Results: printed as Markdown tables and written to bench/results/deploy-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = ROOT.parent / "shared" / "data" / "en_wordnet_verbs" / "test.csv"
VARIANTS = {"torch fp32": ("torch", None), "torch int8": ("torch", "int8"), "onnx fp32": ("onnx", None),
            "onnx int8": ("onnx", "int8")}

HANDWRITTEN = '''
import sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

classifier = pipeline("text-classification", model=sys.argv[1], device=-1, truncation=True, max_length=128)
app = FastAPI()


class Body(BaseModel):
    inputs: str


@app.post("/predict")
async def predict(body: Body):
    return classifier(body.inputs, top_k=None)


@app.get("/ready")
async def ready():
    return {"status": "ready"}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def read_test(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def bench_predict(run: Path, texts: list[str], gold: list[str], repeats: int) -> dict:
    import numpy as np

    from bertclf.predict import Predictor

    predictors = {name: Predictor.from_dir(run, cpu=True, backend=b, quantize=q, precision="fp32")
                  for name, (b, q) in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    accuracy = {}
    names = list(VARIANTS)
    for name in names:  # warm-up, and accuracy (the same every time)
        probs = predictors[name].predict_proba(texts[:64])
        probs = predictors[name].predict_proba(texts)
        labels = [predictors[name].labels[i] for i in np.argmax(probs, axis=1)]
        accuracy[name] = sum(a == b for a, b in zip(labels, gold, strict=True)) / len(gold)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            started = time.perf_counter()
            predictors[name].predict_proba(texts)
            times[name].append(time.perf_counter() - started)
    result = {name: {"texts_per_second": round(len(texts) / statistics.median(times[name]), 1),
                     "accuracy": round(accuracy[name], 4), "seconds": [round(t, 3) for t in times[name]]}
              for name in names}
    base = result["torch fp32"]["texts_per_second"]
    for name in names:
        result[name]["vs_torch_fp32"] = round(result[name]["texts_per_second"] / base, 2)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, run: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "hand-written":
        argv = [sys.executable, "-c", HANDWRITTEN, str(run), str(port)]
    else:
        backend, quantize = {"bertclf serve torch": ("torch", None), "bertclf serve onnx int8": ("onnx", "int8")}[kind]
        argv = [sys.executable, "-m", "bertclf", "serve", str(run), "--port", str(port), "--backend", backend,
                *(["--quantize", quantize] if quantize else []), "--precision", "fp32"]  # as the README's figures
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server {url} exited with {process.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server {url} not ready after {timeout} s")


async def closed_loop(url: str, texts: list[str], concurrency: int, requests: int, warmup: int) -> dict:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = {"next": 0}

    async def client(http: httpx.AsyncClient, measured: bool, total: int) -> None:
        nonlocal errors
        while counter["next"] < total:
            i = counter["next"]
            counter["next"] += 1
            started = time.perf_counter()
            try:
                response = await http.post("/predict", json={"inputs": texts[i % len(texts)]})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if measured:
                latencies.append(time.perf_counter() - started)
                errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http, False, warmup) for _ in range(concurrency)))
        counter["next"] = 0
        started = time.perf_counter()
        await asyncio.gather(*(client(http, True, requests) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"texts_per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
            "errors": errors, "requests": len(latencies), "load_average": round(os.getloadavg()[0], 2)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_serve(run: Path, texts: list[str], requests: int, soak: bool) -> dict:
    kinds = ["hand-written", "bertclf serve torch", "bertclf serve onnx int8"]
    servers = {kind: start_server(kind, run) for kind in kinds}
    result: dict = {kind: {} for kind in kinds}
    try:
        for kind, (process, url) in servers.items():
            result[kind]["ready_seconds"] = round(wait_ready(url, process), 1)
        for level, concurrency in enumerate((1, 4, 16)):
            order = kinds[level % 3:] + kinds[:level % 3]  # rotate who goes first
            for kind in order:
                count = requests if concurrency > 1 else requests // 2
                result[kind][f"c{concurrency}"] = asyncio.run(closed_loop(servers[kind][1], texts, concurrency,
                                                                          count, warmup=4 * concurrency))
        if soak:
            process, url = servers["bertclf serve onnx int8"]
            asyncio.run(closed_loop(url, texts, 16, 500, warmup=0))
            after_500 = rss_mb(process.pid)
            asyncio.run(closed_loop(url, texts, 16, 4500, warmup=0))
            after_5000 = rss_mb(process.pid)
            result["bertclf serve onnx int8"]["rss_mb"] = {"after_500": round(after_500, 1),
                                                          "after_5000": round(after_5000, 1),
                                                          "growth": round(after_5000 / after_500 - 1, 4)}
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    return result


def ensure_exported(run: Path) -> None:
    if not (run / "onnx" / "model_quantized.onnx").is_file():
        subprocess.run([sys.executable, "-m", "bertclf", "export", str(run), "--quantize", "int8", "--check-data",
                        str(TEST_FILE)], cwd=ROOT, check=True)


def tables(report: dict) -> str:
    lines = ["| predict backend | texts/s | vs torch fp32 | accuracy |", "| --- | ---: | ---: | ---: |"]
    for name, row in report.get("predict", {}).items():
        lines.append(f"| {name} | {row['texts_per_second']} | {row['vs_torch_fp32']}x | {row['accuracy']:.4f} |")
    if "serve" in report:
        lines += ["", "| server | concurrency | texts/s | p50 ms | p99 ms | errors |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for concurrency in (1, 4, 16):
            for kind, row in report["serve"].items():
                cell = row.get(f"c{concurrency}")
                if cell:
                    lines.append(f"| {kind} | {concurrency} | {cell['texts_per_second']} | {cell['p50_ms']} | "
                                 f"{cell['p99_ms']} | {cell['errors']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=320, help="measured requests per server and level")
    parser.add_argument("--only", choices=["predict", "serve"], default=None)
    parser.add_argument("--no-soak", action="store_true", help="skip the 5,000-request RSS check")
    args = parser.parse_args()
    texts, gold = read_test(TEST_FILE)
    ensure_exported(args.run)
    report = {"run": str(args.run), "test_file": str(TEST_FILE), "texts": len(texts), "cpus": os.cpu_count(),
              "load_average_start": os.getloadavg()}
    if args.only in (None, "predict"):
        report["predict"] = bench_predict(args.run, texts, gold, args.repeats)
        report["load_average_after_predict"] = os.getloadavg()
    if args.only in (None, "serve"):
        report["serve"] = bench_serve(args.run, texts, args.requests, not args.no_soak)
        report["load_average_after_serve"] = os.getloadavg()
    out = ROOT / "bench" / "results" / f"deploy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(tables(report))
    print(f"\nWritten to {out}")


if __name__ == "__main__":
    main()
