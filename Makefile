# The two commands the README opens with, plus the benchmark. Everything else is in scripts/dev.
.PHONY: run test bench

# The local stack, the tests and the benchmarks run in the sandbox profile; the settings default
# to production, so it is set here explicitly (scripts/dev sets it too, for direct calls).
export DEALFLOW_PROFILE := sandbox

run:
	./scripts/dev run

test:
	./scripts/dev test

bench:
	./scripts/dev bench
