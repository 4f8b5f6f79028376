# Aliases for the quick-start scripts (scripts/run and scripts/test work without make).
.PHONY: run test bench clean
ARGS ?=

run:
	scripts/run $(ARGS)

test:
	scripts/test $(ARGS)

bench:
	scripts/bootstrap.sh && .venv/bin/python -m bench

clean:
	rm -rf .venv .pytest_cache
