# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench calibrate generate docs lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m symgrad.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

calibrate: $(STAMP)
	$(BIN)/symgrad calibrate

generate: $(STAMP)
	$(BIN)/python -m symgrad.regenerate

# the committed documents are all written again: a merge that changed one leaves its stamp
# stale, and `symgrad doc` overwrites only files whose stamp still matches
docs: $(STAMP)
	rm -f docs/derivations/*.md docs/derivations/*.html docs/derivations/*.tex
	$(BIN)/symgrad doc --all --format all --out docs/derivations

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
