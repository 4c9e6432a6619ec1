# Benchmarks (see BENCHMARKS.md). Needs slapd (Debian), PostgreSQL on 127.0.0.1:5432 and `pip install -e .[bench]`.
PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick

bench:
	$(PYTHON) -m bench

bench-quick:
	$(PYTHON) -m bench --quick
