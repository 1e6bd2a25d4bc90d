# The README's two commands. Each one does all of its own set-up (idempotent, fast when already done).
.PHONY: demo test setup bench

demo: setup
	.venv/bin/dtnode devnet

test: setup
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

bench: setup
	bash scripts/bench.sh
