# Quick start: `make run` (the whole platform) and `make test` (the test suite).
# Both create .venv and install everything on first use.
.PHONY: run test bench venv clean
ARGS ?=

venv:
	@scripts/bootstrap.sh

run: venv
	.venv/bin/ingest-platform dev $(ARGS)

test: venv
	.venv/bin/python -m pytest -q

bench: venv
	.venv/bin/python -m bench

clean:
	rm -rf .venv .pytest_cache
