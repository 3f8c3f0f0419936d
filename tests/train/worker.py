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
from weyl.train import fault_injection, run_training
from weyl.train.distributed import exit_launched_worker


class DumpRestoredState(fault_injection.NoFaults):
    """``WEYL_TEST_DUMP_RESTORED=FILE``: after set-up (and the resume), rank 0 writes the full
    model and optimizer state dicts (gathered under FSDP2, keyed by parameter name) to FILE."""

    def __init__(self, path: str, models: list, optimizers: list) -> None:
        self.path, self.models, self.optimizers = path, models, optimizers

    def after_setup(self) -> None:
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        model, opt = self.models[0], self.optimizers[0]
        full = dist.is_initialized()
        opts = StateDictOptions(full_state_dict=full, cpu_offload=full)
        state = {
            "model": get_model_state_dict(model, options=opts),
            "optim": get_optimizer_state_dict(model, opt, options=opts),
        }
        if not full or dist.get_rank() == 0:
            torch.save(state, self.path)


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
    optimizers = []
    build_optimizer = factories.build_optimizer
    factories.build_optimizer = lambda m, c: (
        optimizers.append(build_optimizer(m, c)) or optimizers[-1]
    )
    if os.environ.get("WEYL_TEST_DUMP_RESTORED"):
        fault_injection.hooks = DumpRestoredState(
            os.environ["WEYL_TEST_DUMP_RESTORED"], built, optimizers
        )
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
