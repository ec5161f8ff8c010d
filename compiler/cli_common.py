"""What the `omnic` commands share: exit codes, option parsers and option groups, diagnostics and JSON output, and
compiling a spec with `--set` overrides. compiler/cli.py and the command modules beside it (cli_parallel.py) import
it; it imports none of them."""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Optional

import click

EXIT_OK, EXIT_UNMET, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3
TARGETS = ("torch", "mlx", "onnx", "onnx-decode", "gguf")


class UserError(click.ClickException):
    """A problem with the user's input or environment: message, no traceback, exit 2."""

    exit_code = EXIT_INVALID


# --- option parsing --------------------------------------------------------------------------------------------------
def parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; VALUE is read as JSON (`2`, `true`, `[1, 2]`, `"x"`), else taken as a plain string."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. decoder.blocks.depth=2)", param_hint="--set")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out


def _format_option(ctx, param, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    from .formats import get_format, suggest
    try:
        return get_format(value).name
    except KeyError:
        raise click.BadParameter(f"unknown storage format {value!r}; {suggest(value)}")


def _size_option(ctx, param, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    from .spec import parse_size
    try:
        if parse_size(value) <= 0:
            raise ValueError("the limit must be positive")
    except ValueError as e:
        raise click.BadParameter(str(e))
    return value


set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Override a spec value before compiling, e.g. --set decoder.blocks.depth=2 or "
                               "--set 'layers[4].params.num_experts=4' (VALUE is JSON, else a string).")
size_options = [
    click.option("--batch", type=click.IntRange(min=1), help="Batch size B (default: the spec's)."),
    click.option("--context", type=click.IntRange(min=1), help="Text length T (default: the spec's)."),
    click.option("--frames", type=click.IntRange(min=1), help="Video frames F (default: the spec's)."),
]


def _options(opts):
    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


# --- output helpers --------------------------------------------------------------------------------------------------
_COLORS = {"error": "red", "warning": "yellow", "note": "cyan"}


def echo_diagnostics(diags, verbose: bool = False, quiet: bool = False) -> None:
    """Errors always; warnings unless quiet; notes only when verbose. On stderr."""
    for d in diags:
        if d.severity == "note" and not verbose or d.severity == "warning" and quiet:
            continue
        head, _, rest = d.render().partition(f"{d.severity}:")
        first, nl, hint = rest.partition("\n")
        src = d.excerpt() if d.severity == "error" else ""
        click.echo(head + click.style(d.severity + ":", fg=_COLORS.get(d.severity), bold=True) + first
                   + (f"\n{src}" if src else "") + nl + hint, err=True)


def console():
    from rich.console import Console
    return Console(markup=False, highlight=False, emoji=False, soft_wrap=False,
                   width=None if sys.stdout.isatty() else 220)


def _finite(x: Any) -> Any:
    """JSON has no inf / nan: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def dump_json(obj: Any) -> str:
    return json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False)


def spec_exit_code(compiled) -> int:
    if not compiled.ok or compiled.report is None:
        return EXIT_INVALID
    rep = compiled.report
    b = rep.get("budget")
    if (b and b["verdict"] != "pass") or any(not e["ok"] for e in rep.get("expect") or []):
        return EXIT_UNMET
    return EXIT_OK


def _compile(spec: str, sets: tuple[str, ...], **kw):
    from . import compile
    return compile(spec, overrides=parse_sets(sets), **kw)
