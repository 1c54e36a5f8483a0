"""``wasmai toolchain``: check or install the guest toolchain `wasmai build` needs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from wasmai.cli._common import run_command
from wasmai.cli.options import JsonOpt


class Action(StrEnum):
    """What ``wasmai toolchain`` does."""

    CHECK = "check"
    INSTALL = "install"


def toolchain(
    action: Annotated[Action, typer.Argument(help="check: report what `wasmai build` is missing; "
                                             "install: install it.")] = Action.CHECK,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="install: print the exact commands, run nothing.")]
    = False,
    json_out: JsonOpt = False,
) -> None:
    """Check or install the guest toolchain: the wasm32-wasip1 std (rustup target, or Debian's build-std
    packages where rustup cannot provide it), cargo-component (pinned, --locked) and wasm-tools. Idempotent:
    installs only what is missing. Exit 1 if the toolchain is (still) incomplete.

    Examples:

      [dim]# what would be installed, without installing anything[/dim]
      wasmai toolchain install --dry-run

      [dim]# install it (apt-get may ask for sudo; cargo-component compiles for a few minutes)[/dim]
      wasmai toolchain install
    """
    import sys

    from wasmai.toolchain import detect, install

    def act() -> dict[str, object]:
        done = []
        if action is Action.INSTALL:
            echo = (lambda line: print(line, file=sys.stderr)) if json_out else print
            done = install(dry_run=dry_run, echo=echo)
        tc = detect()
        return {"mode": tc.mode, "complete": all(c.ok for c in tc.checks if c.required),
                "steps": [{"reason": s.reason, "commands": s.shell(),
                           "fallback": s.fallback.shell() if s.fallback else None} for s in done],
                "dry_run": dry_run, "checks": tc.checks}

    def render(result: dict[str, object]) -> None:
        tc = detect()
        print(f"guest toolchain: {tc.mode}")
        for c in tc.checks:
            print(f"{'ok     ' if c.ok else 'missing'} {c.name}: {c.detail}" + ("" if c.ok else f"  -> {c.fix}"))

    result = run_command(act, json_out=json_out, render=render)
    if not result["complete"] and not (action is Action.INSTALL and dry_run):
        raise typer.Exit(1)
