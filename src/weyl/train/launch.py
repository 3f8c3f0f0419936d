"""Start one run: the single path that ``weyl train``, ``weyl demo`` (and sweeps) go through.

``start_run`` takes the composed, resolved config as plain data and does, in order, what every
launch must do: validate, record the run directory, train, and return the run summary. Keeping
it in one place means a rule about starting runs (locking the run dir, refusing to resume under
a different config, mapping outcomes to exit codes) is written once and holds for every command.
"""

from __future__ import annotations

from typing import Any

from weyl.config.validate import validate


def start_run(
    plain: dict[str, Any], argv: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate ``plain``, prepare its run directory (rank 0) and train; returns the summary."""
    from weyl.train import run_training
    from weyl.train.run_dir import prepare_run_dir

    typed = validate(plain)
    prepare_run_dir(typed.run_dir, plain, argv, extra=extra)
    return run_training(typed)
