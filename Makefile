# The two commands: `make dev` (serve on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The lock: every package that CI, `make test`, `make dev` and the image install, pinned.
LOCK := constraints.txt

.PHONY: dev test lint typecheck pytest bench migrate crds crd-schemas operator lock clean

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.dev: $(VENV)/.python pyproject.toml $(LOCK)
	$(PY) -m pip install --quiet --constraint $(LOCK) -e '.[embedded]'
	touch $@

$(VENV)/.test: $(VENV)/.python pyproject.toml $(LOCK)
	$(PY) -m pip install --quiet --constraint $(LOCK) -e '.[test]'
	touch $@ $(VENV)/.dev

# Pin what pyproject.toml asks for (keeping the pins that still fit it); LOCK_ARGS=--upgrade
# moves every pin to the newest release. The tool is not in the lock (nothing runs it), nor
# is the project (its path would be pinned).
lock: $(VENV)/.python
	$(PY) -m pip install --quiet --constraint $(LOCK) pip-tools==7.6.2
	CUSTOM_COMPILE_COMMAND="make lock" $(PY) -m piptools compile --quiet --extra test --extra embedded --strip-extras \
		--no-emit-find-links --annotation-style line --unsafe-package minio-backup-operator \
		$(LOCK_ARGS) -o $(LOCK) pyproject.toml

dev: $(VENV)/.dev
	$(PY) -m backup_operator dev

migrate: $(VENV)/.dev
	$(PY) -m backup_operator migrate

# Against the current kubeconfig: install the CRDs, run the operator.
crds:
	kubectl apply -f crds/

# Regenerate the CRDs written from the specs (backup_operator/specs/); a test fails when
# crds/ or the chart's copy differ from them.
crd-schemas: $(VENV)/.dev
	$(PY) -m backup_operator.specs.crds

operator: $(VENV)/.dev
	$(PY) -m backup_operator operator $(OPERATOR_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(VENV)/.test
	$(VENV)/bin/mypy backup_operator

# The real Kubernetes test servers, built from Go modules the first time (tests/k8s/).
pytest: $(VENV)/.test
	K8S_SERVERS_DIR="$$(bash tests/k8s/build.sh)" $(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The engine benchmark compares with Debian's restic and rclone.
bench: $(VENV)/.test
	@command -v restic >/dev/null && command -v rclone >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq restic rclone; }
	$(PY) bench/catalog_bench.py $(CATALOG_BENCH_ARGS)
	$(PY) bench/engine_bench.py $(ENGINE_BENCH_ARGS)
	$(PY) bench/lineage_bench.py $(LINEAGE_BENCH_ARGS)
	$(PY) bench/retention_bench.py $(RETENTION_BENCH_ARGS)
	K8S_SERVERS_DIR="$$(bash tests/k8s/build.sh)" $(PY) bench/operator_bench.py $(OPERATOR_BENCH_ARGS)

clean:
	rm -rf $(VENV) .dev-data .pytest_cache .mypy_cache .ruff_cache
