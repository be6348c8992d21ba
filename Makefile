# The two commands a newcomer needs: `make demo` and `make test`. Everything else is what they call.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(BIN)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test lint format audit bench setup slurm-up slurm-down clean

demo: $(STAMP) $(NODE_STAMP)
	bash scripts/demo.sh

test: $(STAMP) $(NODE_STAMP)
	bash scripts/test-prepare.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP) $(NODE_STAMP)

# The virtualenv is rebuilt when the declared dependencies change.
$(STAMP): pyproject.toml
	bash scripts/install-system.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

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
	rm -rf $(VENV) node_modules data/static
