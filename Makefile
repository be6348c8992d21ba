# The two commands a newcomer needs: `make demo` and `make test`. Everything else is what they call.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(BIN)/.installed
NODE_STAMP := node_modules/.installed
# The Python set, pinned by PyPI's hashes for Python 3.11 on Linux. uv writes and installs it from a
# virtualenv of its own, so that the console's holds the locked set and nothing else.
LOCK := requirements/dev.lock
TOOLS_LOCK := requirements/tools.lock
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
LOCK_FLAGS := --quiet --generate-hashes --python-version 3.11 --python-platform linux --custom-compile-command 'make lock'

.PHONY: demo test lint format audit bench setup lock slurm-up slurm-down clean

demo: $(STAMP) $(NODE_STAMP)
	bash scripts/demo.sh

test: $(STAMP) $(NODE_STAMP)
	bash scripts/test-prepare.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP) $(NODE_STAMP)

# The virtualenv is synced to the lock whenever it or pyproject.toml changes: every hash checked, whatever the
# lock does not name removed, then the console itself on top. It starts without pip (pip, too, comes from the
# lock). The check fails when pyproject.toml asks for something the lock lacks.
$(STAMP): $(LOCK) pyproject.toml | $(UV)
	bash scripts/install-system.sh
	$(PY) -m venv --without-pip $(VENV)
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes $(LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	$(UV) pip check --quiet --python $(BIN)/python || { echo "$(LOCK) is behind pyproject.toml: make lock" >&2; exit 1; }
	touch $@

# uv itself comes from PyPI, by the hashes in its own lock.
$(UV): $(TOOLS_LOCK)
	bash scripts/install-system.sh
	$(PY) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet --require-hashes -r $(TOOLS_LOCK)
	touch $@

# After a change to pyproject.toml: resolve again, keeping every pin that still fits. To move pins to the
# newest releases in range: `make lock LOCK_ARGS=--upgrade` (or `LOCK_ARGS='--upgrade-package NAME'`).
lock: $(UV)
	$(UV) pip compile requirements/tools.in $(LOCK_FLAGS) $(LOCK_ARGS) -o $(TOOLS_LOCK)
	$(UV) pip compile pyproject.toml --extra dev $(LOCK_FLAGS) $(LOCK_ARGS) -o $(LOCK)

# Browser code and the test IdP come from npm, exactly as the lock file says.
$(NODE_STAMP): package.json package-lock.json
	bash scripts/install-system.sh
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# bandit also runs inside `make test`; pip-audit needs PyPI's vulnerability service, so it runs here only.
audit: $(STAMP)
	$(BIN)/bandit -r clusterra_site accounts access audit clusters jobs terminal clusterra_cli -ll -q -x '*/migrations/*'
	$(BIN)/pip-audit --progress-spinner off

# Speed goals are measured here, as ratios to raw baselines taken in the same run (bench/README.md).
bench: $(STAMP) $(NODE_STAMP)
	bash scripts/test-prepare.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

slurm-up:
	bash scripts/slurm-up.sh

slurm-down:
	bash scripts/slurm-down.sh

clean:
	rm -rf $(VENV) $(UV_VENV) node_modules data/static
