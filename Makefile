# The README's two commands: `make demo` (install, then the quick evaluation) and `make test`.
.PHONY: install demo test lint bench
VENV ?= .venv

install:
	bash scripts/install.sh

demo: install
	$(VENV)/bin/raypipe run configs/icp-quick.yaml

# Two workers, a test module to each at a time, longest first (tests/conftest.py): the suite's subprocess
# drivers and killed nodes wait more than they compute, and the other worker uses those cores.
test: install
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

bench: install
	$(VENV)/bin/python benchmarks/compare.py --all

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports
