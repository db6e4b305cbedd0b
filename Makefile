# One-command setup, demo and tests. Needs Python 3.11+, gcc and make; nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Models and data load from local paths only: no hub access at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint bench clean

# The stamp is rebuilt when pyproject.toml changes. torch==2.13.0 goes in first: pinned, it
# takes the CPU build cached on our machines, where an unpinned torch pulls several GB of CUDA.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/recsys demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/import_speed.py
	$(BIN)/python benchmarks/baselines.py
	$(BIN)/recsys data import movielens ../shared/data/movielens --out data/movielens
	$(BIN)/recsys evaluate --data data/movielens --baselines --report reports/movielens
	$(BIN)/python benchmarks/render_report.py reports/movielens/report.html
	$(BIN)/python benchmarks/text_training.py
	$(BIN)/python benchmarks/text_encoding.py --data ../shared/data/movielens
	$(BIN)/recsys train --config training/configs/movielens_text.yaml

clean:
	rm -rf $(VENV) demo_data data reports .pytest_cache
