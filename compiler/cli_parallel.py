"""The command line of scale-out: the `--devices / --strategy / --grad-accum` options of `omnic check`, and
`omnic fit`. Registered by compiler/cli.py; the logic is compiler/parallel.py and compiler/fit.py."""
from __future__ import annotations

import sys

import click

from .cli_common import EXIT_INVALID, UserError, _compile, _format_option, console, dump_json, echo_diagnostics


def _strategy_option(ctx, param, value):
    if value is None:
        return None
    from .parallel import LayoutError, parse_layout
    try:
        parse_layout(value, ctx.params.get("devices") or 1)
    except LayoutError as e:
        raise click.BadParameter(e.message + (f" ({e.hint})" if e.hint else ""))
    return value


parallel_options = [
    click.option("--devices", type=click.IntRange(min=1), is_eager=True,
                 help="Devices training together: training memory per device (docs/scale-out.md)."),
    click.option("--strategy", callback=_strategy_option, metavar="STRATEGY",
                 help="How devices share the model: ddp, zero1, zero2, fsdp (default with --devices) or hsdp:R "
                      "(R replica groups, each sharding over devices / R)."),
    click.option("--grad-accum", type=click.IntRange(min=1), help="Micro-batches per optimizer step (--batch is "
                                                                  "one micro-batch per device)."),
]


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--budget", default="80GB", show_default=True, metavar="SIZE",
              help="Memory per device for the largest-batch table.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True, is_eager=True,
              help="Devices training together.")
@click.option("--strategy", "strategies", multiple=True, callback=lambda c, p, v: [_strategy_option(c, p, s)
                                                                                   for s in v], metavar="STRATEGY",
              help="Repeatable; default ddp, zero1, zero2, fsdp (one device: ddp only).")
@click.option("--format", "formats", multiple=True, metavar="FORMAT",
              help="Storage format of frozen weights (and fp32 for fp32 compute); repeatable; default bf16, and "
                   "also int8 and nf4 when the stage freezes something.")
@click.option("--stage", help="Training stage (default: everything not frozen trains).")
@click.option("--batch", type=click.IntRange(min=1), help="Micro-batch of the device table (default: the spec's).")
@click.option("--context", type=click.IntRange(min=1), help="Context of the device table (default: the spec's).")
@click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True,
              help="Micro-batches per optimizer step (for the step time).")
@click.option("--recompute", is_flag=True, help="Activation recomputation per block.")
@click.option("--mfu", type=click.FloatRange(min=0, min_open=True, max=1), default=0.4, show_default=True,
              help="Model FLOPs utilisation assumed for the step time.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a spec value (as in check).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def fit(spec, budget, devices, strategies, formats, stage, batch, context, grad_accum, recompute, mfu, sets,
        as_json):
    """What fits where: the largest micro-batch per device at each context, per storage format and strategy,
    within --budget on --devices devices; and common devices (H100, H200, A100, L4, RTX 4090, Apple M-series):
    fits or not at the spec's batch and context, with an estimated time per training step."""
    from .fit import fit as do_fit, tables
    from .parallel import parse_layout
    from .spec import parse_size
    try:
        limit = parse_size(budget)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--budget")
    c = _compile(spec, sets, batch=batch, context=context)
    if not as_json:
        echo_diagnostics(c.diagnostics)
    if not c.ok or c.report is None:
        click.echo(f"{spec}: invalid spec", err=True)
        sys.exit(EXIT_INVALID)
    if stage is not None and stage not in (c.doc.stages or {}):
        raise UserError(f"unknown stage {stage!r}; " + ("stages: " + ", ".join(c.doc.stages) if c.doc.stages
                                                        else "the spec declares no 'stages'"))
    names = list(strategies) or (["ddp", "zero1", "zero2", "fsdp"] if devices > 1 else ["ddp"])
    layouts = [parse_layout(s, devices) for s in dict.fromkeys(names)]
    frozen = c.report["memory"]["training"][stage or "all"]["frozen_weights"] > 0
    fmts = [_format_option(None, None, f) for f in formats] or (["bf16", "int8", "nf4"] if frozen else ["bf16"])
    s = c.report["settings"]
    doc = do_fit(c, limit=limit, layouts=layouts, formats=fmts, batch=s["batch"], context=s["context"],
                 grad_accum=grad_accum, stage=stage, recompute=recompute, mfu=mfu)
    if len(doc["errors"]) == len(layouts):
        raise UserError("no strategy can be laid out: " + "; ".join(f"{k}: {v}" for k, v in doc["errors"].items()))
    if as_json:
        click.echo(dump_json(doc))
        return
    for k, v in doc["errors"].items():
        click.echo(f"{k}: {v}", err=True)
    out = console()
    for t in tables(doc):
        out.print(t)
