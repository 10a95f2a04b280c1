# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo
MODELS ?= models

.PHONY: venv demo test bench lint format clean model model-nllb

venv: $(STAMP)

# Reinstalled only when the dependencies change; constraints.txt is the set installed together.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Builds a tiny offline translation model on first use and serves the sample images locally;
# then writes the report of the output and prints its path (`report: out/demo/report.html`).
demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --output $(DEMO_OUT)
	$(BIN)/python -m pipeline report $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The benchmarks compare against Hugging Face on torch: the `bench` extra (large) is installed here.
# img2dataset, the images baseline, lives in a venv of its own (.bench/i2d), never in ours.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	test -x .bench/i2d/bin/python || ($(PYTHON) -m venv .bench/i2d && \
		.bench/i2d/bin/python -m pip install --quiet img2dataset==1.47.0)
	@set -e; for script in benchmarks/*.py; do \
		echo "== $$script"; $(BIN)/python $$script $(BENCH_ARGS); done

lint: $(STAMP)
	$(BIN)/ruff check pipeline translators filters tests benchmarks
	$(BIN)/ruff format --check pipeline translators filters tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format pipeline translators filters tests benchmarks
	$(BIN)/ruff check --fix pipeline translators filters tests benchmarks

# Real translation models (need internet; never run by the tests). The converter needs the
# `convert` extra (torch, transformers). OPUS-MT en-ar is multi-target: give the manifest
# `source_prefix: ">>ara<<"`. NLLB needs `source_prefix: eng_Latn` and `target_prefix: arb_Arab`.
model: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[convert]'
	$(BIN)/ct2-transformers-converter --model Helsinki-NLP/opus-mt-en-ar \
		--output_dir $(MODELS)/opus-mt-en-ar-ct2 --quantization int8 \
		--copy_files source.spm target.spm --force

model-nllb: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[convert]'
	$(BIN)/ct2-transformers-converter --model facebook/nllb-200-distilled-600M \
		--output_dir $(MODELS)/nllb-200-distilled-600M-ct2 --quantization int8 \
		--copy_files sentencepiece.bpe.model --force

clean:
	rm -rf $(VENV) out build *.egg-info
