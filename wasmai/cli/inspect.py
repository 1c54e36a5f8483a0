"""``wasmai inspect``: what a component is (thin front over :func:`wasmai.runtime.inspect_component`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wasmai.cli._common import console, run_command, shown
from wasmai.cli.options import JsonOpt

if TYPE_CHECKING:
    from wasmai.runtime import InspectResult


def inspect(
    component: Annotated[Path, typer.Argument(help="The component (.wasm) to describe.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a component's WIT imports/exports, metadata.info, size, sha256 and signature bundle.

    [bold]Examples:[/bold]

    [dim]# what it imports and exports, its tensors, labels, preprocessing and toolchain[/dim]
    wasmai inspect model.wasm

    [dim]# the same as JSON (size_breakdown: code, data - where an embedded model lives - and other)[/dim]
    wasmai inspect model.wasm --json
    """

    def work() -> InspectResult:
        from wasmai.runtime import inspect_component

        return inspect_component(component)

    run_command(work, json_out=json_out, render=_render)


def _render(r: InspectResult) -> None:
    """The inspect result as text and a rich table of the tensors."""
    from rich.table import Table

    out = console()
    out.print(f"[bold]{shown(r.component)}[/bold]  {r.size_bytes:,} bytes  sha256 {r.sha256}")
    sizes = r.size_breakdown
    out.print(f"size: code {sizes['code']:,} B, data {sizes['data']:,} B (an embedded model is here), "
              f"other {sizes['other']:,} B")
    out.print("imports: " + (shown(", ".join(r.imports)) or "none"))
    out.print("exports: " + (shown(", ".join(r.exports)) or "none"))
    if r.info is None:
        out.print(f"metadata.info: unavailable ({shown(r.info_error)})")
    else:
        i = r.info
        out.print(f"model {shown(i['name'])} {shown(i['version'])}  task {shown(i['task'])}  "
                  f"placement {shown(i['placement'])}  model sha256 {shown(i['model_sha256'])}  "
                  f"wasmai {shown(i['wasmai_version'])}")
        table = Table(title="tensors")
        for col in ("", "name", "dtype", "shape"):
            table.add_column(col)
        for kind in ("inputs", "outputs"):
            for s in i[kind]:
                table.add_row(kind[:-1], shown(s["name"]), s["dtype"], shown(s["shape"]))
        out.print(table)
        if i["labels"]:
            more = ", …" if len(i["labels"]) > 5 else ""
            out.print(f"labels: {len(i['labels'])} ({shown(', '.join(i['labels'][:5]))}{more})")
        if i["preprocess"]:
            out.print(f"preprocess: {shown(i['preprocess'])}")
        if i["toolchain"]:
            out.print("toolchain: " + shown(", ".join(f"{a} {b}" for a, b in i["toolchain"])))
    sig = r.signature
    if sig is None:
        out.print("signature: no bundle")
    elif isinstance(sig, dict) and "kind" in sig:
        who = sig.get("identity") or sig.get("key_hint") or sig.get("error") or ""
        matches = sig.get("digest_matches")
        match = "digest matches" if matches is True else "DIGEST MISMATCH" if matches is False else ""
        out.print(f"signature: {shown(sig['kind'])} bundle {shown(sig.get('bundle', ''))} {shown(who)} {match} "
                  "(not verified; use wasmai verify)")
    else:
        out.print(f"signature: {shown(sig)}")
