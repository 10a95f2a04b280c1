# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: venv demo test bench lint format clean

venv: $(STAMP)

# Reinstalled only when the dependencies change; constraints.txt is the set installed together.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipeline run manifests/demo.yaml --output $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do \
		echo "== $$script"; $(BIN)/python $$script $(BENCH_ARGS); done

lint: $(STAMP)
	$(BIN)/ruff check pipeline translators filters tests benchmarks
	$(BIN)/ruff format --check pipeline translators filters tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format pipeline translators filters tests benchmarks
	$(BIN)/ruff check --fix pipeline translators filters tests benchmarks

clean:
	rm -rf $(VENV) out build *.egg-info
