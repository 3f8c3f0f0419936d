# The two commands of the README's quick start, and helpers.
.PHONY: setup demo test lint

setup:
	scripts/setup_env.sh

demo: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline .venv/bin/weyl demo

test:
	scripts/run_tests.sh

lint: setup
	.venv/bin/ruff check .
