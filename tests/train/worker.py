"""Subprocess entry for the trainer tests: ``python -m tests.train.worker cfg.json``.

Runs :func:`weyl.train.run_training` on the tiny config and exits with the summary's exit
code, the way ``weyl train`` does; prints the summary as one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from tests.train.fixtures import config_from_dict, synthetic_factories
from weyl.train import run_training
from weyl.train.distributed import exit_launched_worker


def main() -> int:
    torch.set_num_threads(1)
    cfg = config_from_dict(json.loads(Path(sys.argv[1]).read_text()))
    # so a test can signal one particular rank
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run_dir) / f"pid.rank{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
    factories = synthetic_factories(cfg.diagnostics.enabled)
    built = []
    build_model = factories.build_model
    factories.build_model = lambda c: built.append(build_model(c)) or built[-1]
    summary = run_training(cfg, factories=factories)
    print("SUMMARY " + json.dumps(summary, default=str), flush=True)
    if cfg.trainer.strategy == "ddp":  # a digest of this rank's final weights
        digest = hashlib.sha256()
        for p in built[0].parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        print(f"PARAMS rank={os.environ.get('RANK', '0')} {digest.hexdigest()}", flush=True)
    return int(summary["exit_code"])


if __name__ == "__main__":
    code = main()
    exit_launched_worker(code)  # as `weyl train` does
    sys.exit(code)
