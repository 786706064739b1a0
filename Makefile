# Two commands a user needs: `make demo` and `make test`. Both build .venv first.
PY        ?= python3
VENV      ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
DEMO_OUT  ?= runs/demo

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lymphosort pipeline --out $(DEMO_OUT) --preset quick

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/data_loading.py
	$(BIN)/python benchmarks/synth_difficulty.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
