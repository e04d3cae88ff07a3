# Shortcuts; each target does its own set-up (scripts/setup is quick when all is there).
.PHONY: bench bench-all test

# The whole service against typst alone (RabbitMQ, worker, typst); writes BENCHMARKS.md.
bench:
	./scripts/setup
	cargo bench --bench service

# Every benchmark: the service, then summary, render and PostgreSQL at 100k/1M/10M facts.
bench-all: bench
	cargo bench --bench summary
	cargo bench --bench render
	cargo bench --bench postgres

test:
	./scripts/setup test
	cargo test
