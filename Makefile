# Everything runs from a local .venv built from pyproject.toml + constraints.txt.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-diff lint test bench traces clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (set PYTHON=...)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vtdtrace view traces/s1-usb-rmrr.direct-nocx16.vtdt

demo-diff: $(STAMP)
	$(BIN)/vtdtrace view traces/s1-usb-rmrr.legacy.vtdt traces/s1-usb-rmrr.direct.vtdt

# Static checks first: a lint or type error fails `make test` (and .ci/run)
# before the slow suite starts.  Configuration: pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

traces: $(STAMP)
	$(BIN)/python -m tracer.regen

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
