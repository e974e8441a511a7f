# alertd: developers and CI call the same targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= alertd.toml

.PHONY: run test lint fmt bench demo check clean

$(BIN)/alertd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

run: $(BIN)/alertd ## the daemon on the shipped config, with a local Redis if none answers
	@line="$$($(BIN)/python scripts/ensure_redis.py --config $(CONFIG))" || exit 1; \
	  eval "$$line"; exec $(BIN)/alertd run --config $(CONFIG)

test: $(BIN)/alertd ## the whole suite, and the shipped rules' unit tests
	$(BIN)/alertd rules test rules/default.test.toml
	$(BIN)/pytest -q -n 2

check: $(BIN)/alertd
	$(BIN)/alertd check --config $(CONFIG)

lint: $(BIN)/alertd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check alertd tests
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

fmt: $(BIN)/alertd
	$(BIN)/ruff format alertd tests bench
	$(BIN)/ruff check --fix .

bench: $(BIN)/alertd
	$(BIN)/python -m bench

demo: $(BIN)/alertd
	$(BIN)/python scripts/demo.py

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
