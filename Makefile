# The two commands the README opens with, plus the benchmark and the production check.
# Everything else is in scripts/dev.
.PHONY: run test bench prod-check

# The local stack, the tests and the benchmarks run in the sandbox profile; the settings default
# to production, so it is set here explicitly (scripts/dev sets it too, for direct calls).
export DEALFLOW_PROFILE := sandbox

run:
	./scripts/dev run

test:
	./scripts/dev test

bench:
	./scripts/dev bench

# The real Temporal server on PostgreSQL, two workers, two APIs, faults (README, "Production").
prod-check:
	./scripts/dev prod-check
