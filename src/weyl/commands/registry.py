"""The one list of ``weyl`` subcommands: name → where its entry point lives, and its help line.

Each subcommand is a function ``main(argv: list[str]) -> int`` named as ``module`` (its
``main``) or ``module:function``; adding one is one entry in :data:`COMMANDS`. The modules
are imported only when their command runs (see :mod:`weyl.cli`), so ``weyl --help`` stays fast.
"""

from __future__ import annotations

# name → (module path, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "weyl.commands.demo",
        "the main job: AdamW vs AdamW+warmup vs AdamW² without warmup, on CPU in minutes",
    ),
    "atlas": (
        "weyl.commands.atlas",
        "stability atlas: every warmup-free stabilizer's LR sensitivity on one model, side by side",
    ),
    "train": (
        "weyl.commands.train",
        "train a recipe (Hydra app: weyl train recipe=... key=value, -m for sweeps)",
    ),
    "torchrun": (
        "weyl.commands.torchrun",
        "run a weyl command in N processes (torchrun's options, weyl's exit codes and one-line endings)",
    ),
    "prepare": (
        "weyl.commands.prepare",
        "create or check a data set (openwebtext, kjv, imagenet, digits, fashion_mnist)",
    ),
    "report": (
        "weyl.commands.report",
        "draw a run directory's figures (Fig. 1, 2/3, 4, 15) and a Markdown summary",
    ),
    "compare": (
        "weyl.commands.compare",
        "overlay several runs (e.g. warmup vs no-warmup) and print a comparison table",
    ),
    "export": (
        "weyl.commands.export",
        "write a checkpoint's model weights as one torch.save file (from sharded DCP shards)",
    ),
    "modes": (
        "weyl.commands.modes",
        "simulate Appendix G's three attention modes and their SEC / entropy signatures",
    ),
}
