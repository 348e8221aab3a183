# The two commands the README opens with, plus the benchmark. Everything else is in scripts/dev.
.PHONY: run test bench

run:
	./scripts/dev run

test:
	./scripts/dev test

bench:
	./scripts/dev bench
