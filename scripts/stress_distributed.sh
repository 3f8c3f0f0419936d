#!/usr/bin/env bash
# Run the torchrun tests (DDP, FSDP2, sharded checkpoints) N times in a row (default 30) against a competing CPU load, counting
# failures: the check that a busy machine does not make the distributed tests flaky.
#   scripts/stress_distributed.sh [N]
# stress-ng (Debian package) makes the load; it is installed with apt-get when missing and we
# are root. The load and the tests both run under `nice -n 19`: they compete with each other
# without starving anything else on the machine. Per-run pytest output: $STRESS_LOG_DIR
# (default a fresh temp dir), kept for the failed runs.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=/work/main/.venv/bin/python
[ -x "$python" ] || { echo "stress: no Python with torch at .venv/bin/python; set PYTHON=" >&2; exit 2; }

if ! command -v stress-ng >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "stress: installing stress-ng (apt-get)"
    apt-get install -y --no-install-recommends stress-ng >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends stress-ng >/dev/null 2>&1; }
  fi
  if ! command -v stress-ng >/dev/null; then
    echo "stress: SKIPPED — stress-ng is not installed and cannot be (needs root and apt-get);" \
      "install it (apt-get install stress-ng) and run again" >&2
    exit 2
  fi
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
logs="${STRESS_LOG_DIR:-$(mktemp -d -t weyl-stress.XXXXXX)}"
mkdir -p "$logs"

nice -n 19 stress-ng --cpu 2 --quiet &
load=$!
trap 'kill "$load" 2>/dev/null; wait "$load" 2>/dev/null' EXIT

failed=0
for i in $(seq 1 "$runs"); do
  log="$logs/run$i.log"
  start=$SECONDS
  if nice -n 19 "$python" -m pytest -q -p no:cacheprovider \
      tests/optim/test_distributed.py tests/train/test_train_distributed.py \
      tests/train/test_sharded_distributed.py >"$log" 2>&1; then
    echo "stress: run $i/$runs passed ($((SECONDS - start)) s)"
    rm -f "$log"
  else
    failed=$((failed + 1))
    echo "stress: run $i/$runs FAILED ($((SECONDS - start)) s), log: $log"
    grep -E "^(FAILED|ERROR)|terminate called|Signal [0-9]+" "$log" | head -5 | sed 's/^/    /'
  fi
done
echo "stress: $((runs - failed))/$runs passed"
[ "$failed" -eq 0 ]
