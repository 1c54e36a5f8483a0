"""``wasmai doctor``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command, shown
from wasmai.cli.options import JsonOpt

if TYPE_CHECKING:
    from wasmai.doctor import DoctorReport


def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="First install what `wasmai build` is missing "
                                      "(the same as `wasmai toolchain install`), then check.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check what the pipeline needs (toolchain, Python packages, ONNX Runtime, native host) and how to fix
    what is missing. Exit 1 if a required item is missing.

    Examples:

      [dim]# a table of what is there and how to get what is not[/dim]
      wasmai doctor

      [dim]# install the missing guest toolchain, then check[/dim]
      wasmai doctor --fix

      [dim]# in CI: fail the job early, with the report as JSON[/dim]
      wasmai doctor --json > doctor.json
    """
    from wasmai.doctor import doctor as run_doctor

    if fix:
        import sys

        from wasmai.toolchain import install

        def echo(line: str) -> None:
            print(line, file=sys.stderr if json_out else sys.stdout)

        run_command(lambda: install(echo=echo), json_out=False)

    def render(report: DoctorReport) -> None:
        from rich.table import Table

        table = Table(title=f"wasmai doctor (guest toolchain: {report.toolchain_mode})")
        for col in ("", "item", "found", "fix"):
            table.add_column(col)
        for c in report.checks:
            mark = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.required else "[yellow]optional[/]")
            table.add_row(mark, shown(c.name), shown(c.detail), "" if c.ok else shown(c.fix))
        console().print(table)
        if not report.toolchain_complete:
            console().print("`wasmai build` needs the missing guest toolchain items above: "
                            "[bold]wasmai toolchain install[/] installs them "
                            "([bold]--dry-run[/] prints the commands first).")

    report = run_command(run_doctor, json_out=json_out, render=render)
    if not report.ok:
        raise typer.Exit(1)
