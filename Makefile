# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench docs clean

$(BIN)/llmlog: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Record 2,000 calls through the real SDKs into the default store, with copies of them over the
# 30 days before (about ten times as many rows), then show them.
demo: $(BIN)/llmlog
	$(BIN)/llmlog demo
	$(BIN)/llmlog calls -n 15
	$(BIN)/llmlog query "SELECT model, COUNT(*), SUM(cost_usd) FROM calls GROUP BY model"
	$(BIN)/llmlog query "SELECT prompt_template_version, AVG(output_tokens) FROM calls GROUP BY 1 ORDER BY 1"
	$(BIN)/llmlog query "SELECT id, timestamp, model, error FROM calls WHERE error IS NOT NULL ORDER BY timestamp DESC LIMIT 5"

# Capture overhead, ingest speed, storage and query latency; updates BENCHMARKS.md.
bench: $(BIN)/llmlog
	$(BIN)/python -m bench.run

# docs/cli.md is every command's --help; tests/test_cli_docs.py fails when it is behind.
docs: $(BIN)/llmlog
	$(BIN)/python -m llmlog.cli.docs > docs/cli.md

lint: $(BIN)/llmlog
	$(BIN)/ruff check llmlog tests bench
	$(BIN)/ruff format --check llmlog tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Two workers: most tests wait on servers, subprocesses and the database; two halve the
# suite's time on the two cores CI has (17 min to 9 here).
test: lint
	$(BIN)/pytest -q -n 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
