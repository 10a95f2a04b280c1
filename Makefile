# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo
MODELS ?= models

.PHONY: venv demo test bench lint format clean model model-base model-nllb clip-model

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
	$(BIN)/python -m standins.demo --output $(DEMO_OUT)
	$(BIN)/python -m pipeline report $(DEMO_OUT)

test: $(STAMP) runner-deps
	$(BIN)/python -m pytest -q

# The runner tests (tests/runners: the demo on the multi-processing, portable, Flink and Spark
# runners) need Beam's job servers and a Flink distribution, cached in the ignored .cache/: the
# job-server jars of the pinned Beam by their Maven coordinates or, where the Maven repository
# lacks them, assembled from Beam's runner artifacts (tests/runners/job-servers/); and the
# apache-flink wheel in a venv of its own (its dependencies clash with ours) for a standalone
# Flink cluster. A part that cannot be had (no java or mvn, offline) leaves its tests skipped.
# `make test` runs these tests too (about 3 minutes); `make test-runners` runs only them.
BEAM_VERSION := $(shell sed -n 's/^apache-beam==//p' constraints.txt)
BEAM_JARS := .cache/beam-jars
FLINK_VENV := .cache/flink-venv
FLINK_PYPI := 1.19.3
MVN := mvn -q -B -Dstyle.color=never
.PHONY: test-runners runner-deps

test-runners: $(STAMP) runner-deps
	$(BIN)/python -m pytest -q -m runners

runner-deps:
	@mkdir -p $(BEAM_JARS)
	@for server in flink-1.19 spark-3; do \
		jar=beam-runners-$$server-job-server; \
		ls $(BEAM_JARS)/$$jar-*.jar >/dev/null 2>&1 \
		|| $(MVN) org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
			-Dartifact=org.apache.beam:$$jar:$(BEAM_VERSION) -DoutputDirectory=$(BEAM_JARS) \
			>$(BEAM_JARS)/$$jar.log 2>&1 \
		|| (echo "$$jar:$(BEAM_VERSION) cannot be fetched: assembling it from Beam's artifacts" \
			&& $(MVN) -f tests/runners/job-servers/$${server%-*}.pom.xml package) \
		|| echo "no $$jar: its tests will be skipped"; \
	done
	@test -f $(FLINK_VENV)/.installed || ($(PYTHON) -m venv $(FLINK_VENV) \
		&& $(FLINK_VENV)/bin/pip install --quiet apache-flink==$(FLINK_PYPI) \
		&& touch $(FLINK_VENV)/.installed) \
		|| echo "no Flink distribution: the session-cluster test will be skipped"

# The benchmarks compare against Hugging Face on torch: the `bench` extra (large) is installed here.
# img2dataset, the images baseline, lives in a venv of its own (.bench/i2d), never in ours.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	test -x .bench/i2d/bin/python || ($(PYTHON) -m venv .bench/i2d && \
		.bench/i2d/bin/python -m pip install --quiet img2dataset==1.47.0)
	@set -e; for script in benchmarks/*.py; do \
		test $$script = benchmarks/measure.py && continue; \
		echo "== $$script"; $(BIN)/python $$script $(BENCH_ARGS); done

lint: $(STAMP)
	$(BIN)/ruff check pipeline translators filters standins tests benchmarks
	$(BIN)/ruff format --check pipeline translators filters standins tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format pipeline translators filters standins tests benchmarks
	$(BIN)/ruff check --fix pipeline translators filters standins tests benchmarks

# Real translation models (need internet; never run by the tests), README "Translation models".
# The converter needs the `convert` extra (torch, transformers). `make model` converts the
# default, Helsinki-NLP/opus-mt-tc-big-en-ar (transformer-big, FLORES-200 eng-ara chrF++ 57.8);
# `make model-base` the smaller, faster opus-mt-en-ar, `make model-nllb` NLLB-200 distilled 600M.
# Both OPUS-MT models are multi-target: give the manifest `source_prefix: ">>ara<<"` (a run
# without it is refused). NLLB takes `source_prefix: eng_Latn` and `target_prefix: arb_Arab`.
model: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[convert]'
	$(BIN)/ct2-transformers-converter --model Helsinki-NLP/opus-mt-tc-big-en-ar \
		--output_dir $(MODELS)/opus-mt-tc-big-en-ar-ct2 --quantization int8 \
		--copy_files source.spm target.spm --force

model-base: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[convert]'
	$(BIN)/ct2-transformers-converter --model Helsinki-NLP/opus-mt-en-ar \
		--output_dir $(MODELS)/opus-mt-en-ar-ct2 --quantization int8 \
		--copy_files source.spm target.spm --force

model-nllb: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[convert]'
	$(BIN)/ct2-transformers-converter --model facebook/nllb-200-distilled-600M \
		--output_dir $(MODELS)/nllb-200-distilled-600M-ct2 --quantization int8 \
		--copy_files sentencepiece.bpe.model --force

# The multilingual CLIP of the scoring stage, exported to ONNX (needs internet and the `convert`
# extra; the pipeline then needs only onnxruntime): `make clip-model` for
# google/siglip-base-patch16-256-multilingual, `make clip-model CLIP=xlmr` for open_clip's faster
# xlm-roberta-base-ViT-B-32 (laion5b_s13b_b90k). The export checks itself against torch.
CLIP ?= siglip
CLIP_FOLDER_siglip := siglip-base-patch16-256-multilingual-onnx
CLIP_FOLDER_xlmr := xlm-roberta-base-ViT-B-32-onnx
clip-model: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[convert]'
	$(BIN)/python -m pipeline.scoring.export $(MODELS)/$(CLIP_FOLDER_$(CLIP)) --model $(CLIP)

clean:
	rm -rf $(VENV) out build *.egg-info
