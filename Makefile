# Two commands a user needs: `make demo` and `make test`. Both build .venv first.
PY        ?= python3
VENV      ?= .venv
# The torch build, one variable: TORCH=cpu (default), cu126, rocm6.4, ... picks the wheel index
# download.pytorch.org/whl/$(TORCH) when it is reachable; otherwise pip's own index (or a
# local wheel) gives torch==$(TORCH_VERSION). TORCH_SPEC overrides the requirement itself.
TORCH     ?= cpu
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH)
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
DEMO_OUT  ?= runs/demo

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
	if $(BIN)/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/', timeout=5)" "$(TORCH_INDEX)" 2>/dev/null; \
	then $(BIN)/pip install --quiet "$(TORCH_SPEC)" --index-url "$(TORCH_INDEX)" --extra-index-url https://pypi.org/simple; \
	else echo "$(TORCH_INDEX) not reachable: torch from pip's index"; $(BIN)/pip install --quiet "$(TORCH_SPEC)"; fi
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
