# Benchmarks (see BENCHMARKS.md). Needs slapd (Debian), PostgreSQL on 127.0.0.1:5432 and `pip install -e .[bench]`.
PYTHON ?= .venv/bin/python
# The image's lock files: `make lock` after any change to pyproject.toml's dependencies or build-system (needs uv:
# `.venv/bin/pip install uv`). Every wheel's hash for every platform, so the image installs with --require-hashes.
UV ?= .venv/bin/uv
LOCK_FLAGS = --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock" --quiet
# the container image as CI builds it (scripts/podman: runc, no default ulimits; scripts/container-base: the base)
IMAGE ?= localhost/syncd:latest

.PHONY: bench bench-quick lock image

bench:
	$(PYTHON) -m bench

bench-quick:
	$(PYTHON) -m bench --quick

lock:
	$(UV) pip compile pyproject.toml --extra ldap --extra postgres $(LOCK_FLAGS) -o requirements.lock
	$(PYTHON) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" \
	  | $(UV) pip compile - $(LOCK_FLAGS) -o requirements-build.lock

image:
	scripts/container-base
	scripts/podman build --format docker --pull=never --network host \
	  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro -t $(IMAGE) .
