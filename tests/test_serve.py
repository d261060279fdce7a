"""`bertclf serve` as clients use it: the real server process on 127.0.0.1, a real HTTP client (httpx).

Answers are checked against `bertclf predict` on the same texts; every error code; /metrics counting what
happened; 429 and a graceful SIGTERM with requests in flight (on the ONNX backend); and a bounded load of 500
requests from 16 concurrent clients with no error and no mixed-up answer. Every wait is bounded.
"""

import csv
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import EXAMPLES, ROOT

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = [row["text"] for row in csv.DictReader((EXAMPLES / "en_topics_test.csv").open(encoding="utf-8"))][:40]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, run, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could fill and block the server
        self.process = subprocess.Popen([sys.executable, "-m", "bertclf", "serve", str(run), "--port",
                                         str(self.port), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=self.stderr, text=True)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not get ready in time")

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.client.close()
            self.stderr.close()

    def metrics(self) -> dict[str, float]:
        text = self.client.get("/metrics", headers=AUTH).text
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}


@pytest.fixture(scope="module")
def expected(tiny_run, cli):
    """`bertclf predict --all-probs --precision fp32` on TEXTS: text -> {label: probability}."""
    return _predicted(tiny_run, cli, "fp32")


def _predicted(run, cli, precision: str) -> dict[str, dict[str, float]]:
    args = [a for text in TEXTS for a in ("--text", text)]
    code, stdout, stderr = cli("predict", run, *args, "--all-probs", "--precision", precision)
    assert code == 0, stderr
    return {text: json.loads(line)["probs"] for text, line in zip(TEXTS, stdout.splitlines(), strict=True)}


@pytest.fixture(scope="module")
def server(tiny_run):
    # fp32: answers must equal predict's to 1e-5 whatever the batch a text is served in. In bf16 a text's scores
    # move in the fourth decimal with its batch's shape (test_bf16_serving_keeps_the_labels_of_predict).
    server = Server(tiny_run, "--api-key", KEY, "--max-client-batch-size", "8", "--payload-limit", "20000",
                    "--precision", "fp32")
    try:
        server.wait_ready()
        yield server
    finally:
        assert server.stop() == 0


def _check(answer: list[dict], probs: dict[str, float]) -> None:
    assert [a["label"] for a in answer] == sorted(probs, key=lambda k: -probs[k])[:len(answer)]
    for entry in answer:
        assert entry["score"] == pytest.approx(probs[entry["label"]], abs=1e-5)


def test_predict_answers_as_bertclf_predict_does(server, expected):
    response = server.client.post("/predict", json={"inputs": TEXTS[0]}, headers=AUTH)
    assert response.status_code == 200 and "x-queue-time" in response.headers
    answer = response.json()
    assert len(answer) == len(expected[TEXTS[0]])  # every label, sorted by score (as TEI)
    _check(answer, expected[TEXTS[0]])
    batch = server.client.post("/predict", json={"inputs": TEXTS[:8], "parameters": {"top_k": 2}},
                               headers=AUTH).json()
    assert len(batch) == 8 and all(len(a) == 2 for a in batch)
    for text, answer in zip(TEXTS[:8], batch, strict=True):
        _check(answer, expected[text])
    raw = server.client.post("/predict", json={"inputs": TEXTS[1], "raw_scores": True}, headers=AUTH).json()
    total = sum(math.exp(a["score"]) for a in raw)
    for entry in raw:  # logits: their softmax is the probability
        assert math.exp(entry["score"]) / total == pytest.approx(expected[TEXTS[1]][entry["label"]], abs=1e-5)


def test_bf16_serving_keeps_the_labels_of_predict(tiny_run, cli):
    """--precision auto, the default: bf16 where this CPU has it natively and training checked its labels; the
    same labels as predict in the same precision, scores within a few thousandths, /info saying which."""
    from bertclf.precision import native_bf16

    manifest = json.loads((tiny_run / "bertclf.json").read_text())
    expected = _predicted(tiny_run, cli, "auto")
    server = Server(tiny_run)
    try:
        server.wait_ready()
        precision = server.client.get("/info").json()["precision"]
        bf16 = native_bf16("cpu") and manifest["inference"]["bf16"]["label_agreement"] >= 0.995
        assert precision["precision"] == ("bf16" if bf16 else "fp32"), precision
        with ThreadPoolExecutor(8) as pool:  # concurrent: batches of other shapes than predict's
            answers = list(pool.map(lambda t: server.client.post("/predict", json={"inputs": t}).json(), TEXTS))
        for text, answer in zip(TEXTS, answers, strict=True):
            probs = expected[text]
            assert answer[0]["label"] == max(probs, key=probs.get)
            for entry in answer:
                assert entry["score"] == pytest.approx(probs[entry["label"]], abs=5e-3)
    finally:
        assert server.stop() == 0


def test_health_ready_and_info(server, tiny_run):
    assert server.client.get("/health").json() == {"status": "ok"}
    assert server.client.get("/ready").status_code == 200
    info = server.client.get("/info", headers=AUTH).json()
    manifest = json.loads((tiny_run / "bertclf.json").read_text())
    assert info["labels"] == manifest["labels"] and info["task"] == "single_label" and info["backend"] == "torch"
    assert info["max_client_batch_size"] == 8 and info["model_type"]["classifier"]["id2label"]["0"] == info["labels"][0]


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "not valid JSON"),
    (b'{"inputs": []}', 400, "inputs is empty"),
    (b'{"inputs": ["fine", " "]}', 400, "inputs[1] is an empty text"),
    (b'{"text": "hello"}', 422, "'text'"),
    (b'{"parameters": {}}', 422, "'inputs' is missing"),
    (b'{"inputs": ["fine", 3]}', 422, "inputs[1] must be a string"),
    (b'{"inputs": [["a", "b"]]}', 422, "single texts, not pairs"),
    (b'{"inputs": "fine", "parameters": {"top_k": 0}}', 422, "parameters.top_k"),
    (b'{"inputs": "fine", "parameters": {"k": 1}}', 422, "parameters.k"),
    (b'{"inputs": "fine", "raw_scores": "yes"}', 422, "raw_scores"),
    (b"[1, 2]", 422, "JSON object"),
    (json.dumps({"inputs": ["a text"] * 9}).encode(), 413, "--max-client-batch-size"),
    (json.dumps({"inputs": "word " * 5000}).encode(), 413, "--payload-limit"),
])
def test_every_error_is_json_naming_the_field(server, body, status, field):
    response = server.client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert field in response.json()["error"]


def test_api_key_is_required_except_for_health(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = server.client.post("/predict", json={"inputs": "rain"}, headers=headers)
        assert response.status_code == 401 and "Bearer" in response.json()["error"]
        assert server.client.get("/info", headers=headers).status_code == 401
    assert server.client.get("/health").status_code == 200


def test_metrics_count_requests_errors_and_batches(server):
    before = server.metrics()
    for text in TEXTS[:5]:
        assert server.client.post("/predict", json={"inputs": text}, headers=AUTH).status_code == 200
    assert server.client.post("/predict", json={"inputs": 1}, headers=AUTH).status_code == 422
    after = server.metrics()

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert grew('bertclf_requests_total{code="200",route="/predict"}') == 5
    assert grew('bertclf_errors_total{code="422"}') == 1
    assert grew("bertclf_texts_total") == 5 and grew("bertclf_request_duration_seconds_count") == 5
    assert grew("bertclf_queue_duration_seconds_count") == 5 and grew("bertclf_batch_size_sum") == 5
    assert 1 <= grew("bertclf_batch_tokens_count") <= 5 and grew("bertclf_batch_tokens_sum") > 5


def test_500_requests_from_16_clients_get_their_own_answers(server, expected):
    def client_loop(worker: int) -> list[tuple[str, int, list]]:
        results = []
        with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as client:
            for i in range(worker, 500, 16):
                text = TEXTS[(i * 7) % len(TEXTS)]
                response = client.post("/predict", json={"inputs": text, "parameters": {"top_k": 3}})
                results.append((text, response.status_code, response.json()))
        return results

    with ThreadPoolExecutor(16) as pool:
        results = [r for chunk in pool.map(client_loop, range(16)) for r in chunk]
    assert len(results) == 500 and all(status == 200 for _, status, _ in results)
    for text, _, answer in results:
        _check(answer, expected[text])
    assert server.metrics()["bertclf_batch_size_count"] < 500  # requests shared inference rounds


@pytest.fixture(scope="module")
def onnx_run(tiny_run, tmp_path_factory, cli):
    run = tmp_path_factory.mktemp("serve-onnx") / "run"
    shutil.copytree(tiny_run, run)
    code, _, stderr = cli("export", run, "--check-rows", "32")
    assert code == 0, stderr
    return run


def test_429_beyond_the_limit_and_sigterm_answers_requests_in_flight(onnx_run, expected):
    # A long --max-wait-ms keeps the first requests queued, so the test sees them in flight without timing.
    server = Server(onnx_run, "--backend", "onnx", "--max-concurrent-requests", "2", "--max-wait-ms", "2500")
    try:
        server.wait_ready()
        assert server.client.get("/info").json()["backend"] == "onnx"
        answers: dict[str, object] = {}

        def ask(text: str) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                answers[text] = client.post("/predict", json={"inputs": text})

        threads = [threading.Thread(target=ask, args=(text,)) for text in TEXTS[:2]]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while server.metrics().get("bertclf_requests_in_flight", 0) < 2:
            assert time.monotonic() < deadline, "the two requests never got in flight"
            time.sleep(0.05)
        refused = server.client.post("/predict", json={"inputs": TEXTS[2]})
        assert refused.status_code == 429 and "--max-concurrent-requests" in refused.json()["error"]
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        for text in TEXTS[:2]:
            assert answers[text].status_code == 200
            _check(answers[text].json(), expected[text])
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


def test_parse_request_reads_pairs_only_from_explicit_pairs():
    from bertclf.serving import ApiError, parse_request

    request = parse_request({"inputs": [["q", "a"], ["q2", "a2"]]}, pairs=True, max_texts=8, n_labels=3)
    assert request.first == ["q", "q2"] and request.second == ["a", "a2"] and not request.single
    for inputs in (["q", "a"], "q", [["q", "a", "b"]]):
        with pytest.raises(ApiError) as error:
            parse_request({"inputs": inputs}, pairs=True, max_texts=8, n_labels=3)
        assert error.value.status == 422 and "pair" in error.value.message
    assert parse_request({"inputs": "x", "parameters": {"top_k": 9}}, pairs=False, max_texts=8, n_labels=3).top_k == 3


def test_multi_label_answers_carry_the_chosen_labels():
    import numpy as np

    from bertclf.labels import LabelSpace
    from bertclf.serving import Request, answer

    class Fake:
        labels = ["a", "b", "c"]
        space = LabelSpace(("a", "b", "c"), multi_label=True)
        thresholds = np.asarray([0.5, 0.3, 0.9])

    probs = np.asarray([[0.6, 0.35, 0.8]])
    result = answer(Fake(), probs, np.log(probs / (1 - probs)), Request(["t"], None, True, 3, False))
    assert result == {"labels": ["a", "b"], "scores": [{"label": "c", "score": 0.8}, {"label": "a", "score": 0.6},
                                                       {"label": "b", "score": 0.35}]}


@pytest.mark.parametrize("command", ["serve", "export"])
def test_help_imports_neither_the_server_nor_onnxruntime(command):
    code = ("import sys\nfrom bertclf.cli import app\ntry:\n"
            f"    app([{command!r}, '--help'], prog_name='bertclf')\nexcept SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "heavy = ('torch', 'fastapi', 'uvicorn', 'onnxruntime', 'onnx', 'prometheus_client')\n"
            "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_serve_refuses_a_missing_run_or_export_before_listening(tiny_run, tmp_path):
    from conftest import run_bertclf

    result = run_bertclf("serve", tmp_path / "nothing", "--port", str(_free_port()), timeout=120)
    assert result.returncode == 66 and "does not exist" in result.stderr
    result = run_bertclf("serve", tiny_run, "--backend", "onnx", "--port", str(_free_port()), timeout=120)
    assert result.returncode == 66 and "bertclf export" in result.stderr


def test_a_request_that_cannot_be_tokenized_gets_422_and_the_round_goes_on(tmp_path):
    import asyncio
    from types import SimpleNamespace

    from bertclf.encoding import EncodingSpec
    from bertclf.serving import ApiError, InferenceWorker, Job, Metrics, Request, ServeConfig

    class BrokenTokenizer:
        cls_token_id, sep_token_id = 2, 3

        def __call__(self, *args, **kwargs):
            raise RuntimeError("broken tokenizer")

    worker = InferenceWorker(ServeConfig(run_dir=tmp_path, max_wait_ms=0), Metrics())
    worker.predictor = SimpleNamespace(tokenizer=BrokenTokenizer(), spec=EncodingSpec())

    async def one_round():
        loop = asyncio.get_running_loop()
        job = Job(Request(["a text"], None, True, 1, False), loop, loop.create_future())
        jobs, stopping = worker._collect(job)
        worker._run(jobs)
        with pytest.raises(ApiError) as error:
            await asyncio.wait_for(job.future, timeout=10)
        return error.value, stopping

    error, stopping = asyncio.run(one_round())
    assert error.status == 422 and "broken tokenizer" in error.message and not stopping


@pytest.mark.parametrize("task", ["pairs", "multi_label"])
def test_pair_and_multi_label_runs_serve_what_predict_writes(task, tiny_model_dir, cli, tmp_path):
    """The server of a sentence-pair run reads [text, text_pair] inputs, and that of a multi-label run answers
    the labels at or above their tuned thresholds: both as `bertclf predict` on the same rows."""
    train, test, columns = {
        "pairs": ("en_topics_pairs.csv", "en_topics_test_pairs.csv", ["--text-column", "text_a",
                                                                      "--text-pair-column", "text_b"]),
        "multi_label": ("en_topics_multilabel.csv", "en_topics_test_multilabel.csv", ["--multi-label"])}[task]
    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / train, *columns, "-m", tiny_model_dir, "-o", run, "--max-steps", "6",
                          "--cpu")
    assert code == 0, stderr
    rows = list(csv.DictReader((EXAMPLES / test).open(encoding="utf-8")))[:12]
    code, stdout, stderr = cli("predict", run, EXAMPLES / test, "--all-probs", "--precision", "fp32")
    assert code == 0, stderr
    predicted = [json.loads(line) for line in stdout.splitlines()][:12]
    inputs = [[r["text_a"], r["text_b"]] for r in rows] if task == "pairs" else [r["text"] for r in rows]
    server = Server(run, "--precision", "fp32")
    try:
        server.wait_ready()
        answers = server.client.post("/predict", json={"inputs": inputs}).json()
        if task == "pairs":  # a flat text is refused: a pair model never guesses how to split it
            flat = server.client.post("/predict", json={"inputs": rows[0]["text_a"]})
            assert flat.status_code == 422 and "text_pair" in flat.json()["error"]
    finally:
        assert server.stop() == 0
    assert len(answers) == len(predicted) == 12
    for answer, expected_row in zip(answers, predicted, strict=True):
        if task == "multi_label":
            assert answer["labels"] == sorted(expected_row["labels"], key=lambda k: -expected_row["probs"][k])
            answer = answer["scores"]
        _check(answer, expected_row["probs"])
