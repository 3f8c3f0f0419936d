#!/usr/bin/env bash
# The README's test command: set up the environment, then run the default test suite offline.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
# Two workers (one per core of the CI machine; WEYL_TEST_WORKERS=0 runs in one process): most
# tests wait on single-threaded subprocesses. Whole files go to one worker, so module fixtures
# (a shortened demo, the toy-recipe data) are built once.
workers=${WEYL_TEST_WORKERS:-2}
if [ "$workers" -gt 0 ]; then
  set -- -n "$workers" --dist loadfile "$@"
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests (exit 5) — treating as a failure" >&2
  exit 1
fi
exit "$rc"
