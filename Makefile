# The README's two commands: `make demo` (install, then the quick evaluation) and `make test`.
.PHONY: install demo test lint bench
VENV ?= .venv

install:
	bash scripts/install.sh

demo: install
	$(VENV)/bin/raypipe run configs/icp-quick.yaml

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python benchmarks/compare.py --all

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports
