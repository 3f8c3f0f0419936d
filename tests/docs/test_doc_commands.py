"""Every command the Markdown files show works as a user types it, through the installed script.

(a) every ``weyl <command>`` / ``make <target>`` the docs show names a command the console
script (or the Makefile) knows, ``weyl <command> --help`` works, and every ``--flag`` the docs
pass to a command appears in its help; (b) every cheap command runs, in a sandbox directory, with
the step-budget overrides below appended to training commands; a command whose docs show its
output must print exactly that. A command that is not run here is listed in :data:`NOT_RUN`
with the reason — nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.doc_commands import REPO, DocCommand, all_commands

WEYL = str(Path(sys.executable).parent / "weyl")
COMMANDS = all_commands()

# Appended to every documented `weyl train` run: the same command, a few steps long.
SHORT_RUN = [
    "trainer.max_steps=3",
    "trainer.eval_every=3",
    "trainer.eval_batches=1",
    "trainer.ckpt_every=3",
    "diagnostics.every=3",
    "diagnostics.attention_maps_every=3",
    "logger.progress=false",
]

PAPER_RECIPE = r"^weyl (torchrun .*)?train (-m )?recipe=(table1|appendix|ablation)/"
# Documented commands that are not run here, by pattern, with the reason.
NOT_RUN: dict[str, str] = {
    r"^make test$": "it is this test suite",
    r"^make demo$": "the full CPU demo (~5 min); its machinery runs shortened in tests/test_demo.py",
    r"^weyl demo\b": "minutes of CPU per run; shortened demos run in tests/test_demo.py",
    r"^weyl prepare openwebtext$": "downloads OpenWebText from the Hub (no network here); the "
    "same preparation from a local corpus (--source) runs in tests/data/",
    r"^weyl atlas( --quick)?( --out \S+)?$": "the default atlas trains 80 runs (~30 min on 2 "
    "cores), --quick 30 (~6 min): measured for the README; the same machinery (grid, pool, "
    "reuse, resume, outputs) runs through the weyl script on 2 methods × 2 LRs × 30 steps in "
    "tests/atlas/test_atlas_cli.py",
    r"^weyl atlas --recipe atlas/": "GPT-2 S on OpenWebText, one GPU per run: the same atlas "
    "(grid, pool or Hydra launcher, outputs) runs on the CPU GPT through the weyl script in "
    "tests/atlas/test_atlas_cli.py, and every method composes with atlas/gpt2_s in "
    "tests/atlas/test_methods_and_grid.py",
    PAPER_RECIPE: "paper scale (GPUs, OpenWebText, ImageNet): the same recipe trains at "
    "scale=toy through the weyl script in tests/recipes/test_toy_recipes.py (checked below)",
}


def not_run_reason(command: DocCommand) -> str | None:
    """Why ``command`` is not run here, or None when it is."""
    if command.is_template:
        return "a template with placeholders (only its command and flags are checked)"
    if command.program == "weyl" and len(command.words) == 2 and command.subcommand != "--help":
        return "names a command in prose (its --help is checked)"
    if command.words[:3] == ["weyl", "train", "-m"] and len(command.words) == 3:
        return "names a flag in prose"
    if "--cfg" in command.words:
        return None
    for pattern, reason in NOT_RUN.items():
        if re.search(pattern, command.text):
            return reason
    return None


def weyl(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [WEYL, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
    )


def known_commands() -> set[str]:
    """Command names listed by the installed script's ``weyl --help``."""
    out = weyl("--help")
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("commands:", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ")}


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


def test_docs_show_the_commands_users_need():
    texts = " | ".join(c.text for c in COMMANDS)
    for needed in ("weyl train", "weyl demo", "weyl prepare", "weyl report", "weyl compare"):
        assert needed in texts
    assert len(COMMANDS) >= 20


def test_every_documented_command_is_known_with_working_help():
    known = known_commands()
    targets = make_targets()
    helps: dict[tuple[str, ...], str] = {}
    problems = []
    for command in COMMANDS:
        if command.program == "make":
            if command.subcommand not in targets:
                problems.append(
                    f"{command.source}: make target {command.subcommand!r} not in Makefile"
                )
            continue
        sub = command.subcommand
        if sub.startswith("-"):
            continue  # weyl --help, checked above
        if sub not in known:
            problems.append(f"{command.source}: `{command.text}`: unknown command {sub!r}")
            continue
        # prepare has one subcommand per data set, each with its own flags.
        key = (sub, command.words[2]) if sub == "prepare" and len(command.words) > 2 else (sub,)
        if key not in helps:
            out = weyl(*key, "--help")
            if out.returncode != 0 or "usage" not in out.stdout.lower():
                problems.append(f"`weyl {' '.join(key)} --help` failed: {out.stderr.strip()[:200]}")
            helps[key] = out.stdout
        for word in command.words[2:]:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag != "--help" and flag not in helps[key]:
                problems.append(f"{command.source}: `{command.text}`: {flag} is not an option")
    assert not problems, "\n".join(problems)


def test_the_not_run_list_has_no_stale_entries():
    used = {p for p in NOT_RUN if any(re.search(p, c.text) for c in COMMANDS)}
    assert used == set(NOT_RUN), f"patterns matching no documented command: {set(NOT_RUN) - used}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A working directory for the documented commands (their relative paths land here)."""
    root = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "WEYL_DATA_DIR": str(root / "data"), "OMP_NUM_THREADS": "1"}
    return root, env


def seed_run(run_dir: Path, env: dict[str, str]) -> None:
    """A short real run where a documented report/compare command expects one."""
    if (run_dir / "metrics.jsonl").is_file():
        return
    recipe = f"cpu/{run_dir.name.removeprefix('cpu_')}"
    if not (REPO / "recipes" / f"{recipe}.yaml").is_file():
        recipe = "smoke/gpt_tiny"
    warmup = ["schedule.warmup_steps=1"] if "warmup" in recipe.replace("nowarmup", "") else []
    out = weyl("train", f"recipe={recipe}", f"run_dir={run_dir}", *SHORT_RUN, *warmup, env=env)
    assert out.returncode == 0, out.stderr


RUNNABLE = [c for c in COMMANDS if not_run_reason(c) is None]


def test_not_run_commands_are_listed_with_a_reason():
    for command in COMMANDS:
        if command not in RUNNABLE:
            assert not_run_reason(command)
    assert len(RUNNABLE) >= 8


@pytest.mark.parametrize("command", RUNNABLE, ids=[c.text for c in RUNNABLE])
def test_documented_command_runs(command: DocCommand, sandbox):
    root, env = sandbox
    args = list(command.words[1:])
    if command.program == "make":
        pytest.fail(f"no rule to run `{command.text}` here; add it to NOT_RUN with the reason")
    if args[0] in ("report", "compare"):
        for word in args[1:]:
            if word.startswith("runs/") and word != "runs/cmp":
                seed_run(root / word, env)
    trains = args[0] == "train" and not {"--cfg", "--help"} & set(args)
    if trains:
        args += SHORT_RUN
    out = weyl(*args, cwd=root, env=env)
    if command.output:  # the docs show what it prints: an error line, exit code 2
        assert out.returncode == 2, out.stdout + out.stderr
        shown = command.output[0].split("...")[0]
        assert out.stderr.strip().startswith(shown), (out.stderr, command.output)
        assert "\n" not in out.stderr.strip()
        return
    assert out.returncode == 0, f"`{command.text}` exited {out.returncode}: {out.stderr[-2000:]}"
    if trains:
        run_dirs = [p.parent for p in (root / "runs").rglob("status.json")]
        assert run_dirs
        for run_dir in run_dirs:
            assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    if args[0] == "report":
        report_dir = root / args[1] / "report"
        assert (report_dir / "report.md").is_file()
        assert len(list(report_dir.glob("*.png"))) >= 3
    if args[0] == "compare":
        out_dir = root / args[args.index("--out") + 1]
        assert (out_dir / "compare.png").stat().st_size > 10_000
    if args[0] == "modes":
        assert list((root / args[args.index("--out") + 1]).glob("*.png"))
    if args[0] == "prepare":
        assert any((root / "data").rglob("meta.json"))
    shutil.rmtree(root / "outputs", ignore_errors=True)


def test_documented_paper_recipes_are_the_ones_the_toy_test_trains():
    from tests.recipes import test_toy_recipes as toy
    from tests.recipes.composition import default_method, is_base, named_run

    trained = set(toy.TEXT_RECIPES) | set(toy.IMAGE_RECIPES)
    composed_only = set(toy.ABLATION_RECIPES)

    def values(command: DocCommand, key: str) -> list[str]:
        word = next((w for w in command.words if w.startswith(f"{key}=")), None)
        return word.split("=", 1)[1].split(",") if word else []

    for command in COMMANDS:
        if re.search(PAPER_RECIPE, command.text):
            for recipe in values(command, "recipe"):
                # A model's base with method=...: each cell is a named run (the resolved-config
                # test proves they are the same config), which the toy test trains.
                methods = values(command, "method") or [default_method(recipe)]
                runs = [named_run(recipe, m) for m in methods] if is_base(recipe) else [recipe]
                for run in runs:
                    assert run in trained | composed_only, f"{command.source}: {recipe} not covered"
