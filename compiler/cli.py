"""The `omnic` command line: check, summary, schema, build, import-hf. No logic of its own.

Each command parses options, calls the library (`compiler.compile`, `compiler.schema`, `compiler.emit.build`),
and prints: diagnostics on stderr as `file:line:col: severity: path: message`, tables on stdout (rich), or with
`--json` one JSON document on stdout. Exit codes (docs/cli.md):
  0  every spec is valid and meets its budget and expectations
  1  a budget or an expectation is not met
  2  invalid spec or usage (any error diagnostic, a bad option, a missing optional dependency)
  3  internal error: a bug in omnic; `main()` prints one line instead of a traceback (OMNIC_DEBUG=1 shows it)
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Optional

import click

from .cli_common import (  # noqa: F401  (names the commands and tests use as compiler.cli.X)
    EXIT_OK, EXIT_UNMET, EXIT_INVALID, EXIT_INTERNAL, TARGETS, UserError, parse_sets, _format_option, _size_option,
    set_option, size_options, _options, echo_diagnostics, console, dump_json, spec_exit_code, _compile)
from .cli_parallel import fit, parallel_options


def _run_options(f):
    from .cli_run import common_options
    return common_options(f)


# --- commands --------------------------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(None, "-V", "--version", package_name="omnic", prog_name="omnic")
def cli() -> None:
    """omnic: compile declarative JSON model specs; check budgets; build PyTorch / MLX / ONNX models."""


@cli.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path())
@click.option("--budget", callback=_size_option, metavar="SIZE",
              help="Memory limit, e.g. 6GiB or 8GB; replaces the spec's budget limit (or creates a budget).")
@click.option("--format", "fmt", callback=_format_option, metavar="FORMAT",
              help="Storage format of the weights for the budget and training figures: bf16, fp16, fp32, fp8, int8, "
                   "nf4, nf4-dq, gptq-int4, awq-int4, mlx-4bit, mlx-8bit, torchao-int8, torchao-int4, q4_k, q8_0; "
                   "grouped ones with another group size as mlx-4bit-g32, torchao-int4-g64.")
@click.option("--mode", type=click.Choice(["inference", "training"]), help="What the budget limits.")
@click.option("--stage", help="Training stage whose frozen set applies (with --mode training).")
@_options(size_options)
@click.option("--recompute", is_flag=True, help="Training memory with activation recomputation.")
@_options(parallel_options)
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/report-format.md).")
@click.option("--output-format", "doc_fmt", type=click.Choice(["text", "markdown", "junit", "json"]),
              help="A document for CI (docs/ci-gate.md): markdown (a pull-request comment), junit (XML, one "
                   "testcase per spec) or json; on stdout, or into --output.")
@click.option("--output", "doc_out", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the document to FILE instead of stdout, which keeps the usual tables and verdicts; "
                   "repeatable; without --output-format the format follows the extension (.md, .xml, .json).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and verdicts (no tables, no warnings).")
@click.option("-v", "--verbose", is_flag=True, help="Also print notes (e.g. every inferred input).")
def check(specs, budget, fmt, mode, stage, batch, context, frames, recompute, devices, strategy, grad_accum, sets,
          as_json, doc_fmt, doc_out, quiet, verbose):
    """Compile each SPEC: diagnostics, parameter / FLOP / memory tables, expectations and the budget verdict.

    A SPEC may be a directory: it is searched recursively for *.json specs (skipping components/, schema.json and
    JSON files without "layers"). Exit 0 when all pass, 1 when a budget or expectation is not met, 2 when a spec is
    invalid.
    """
    from .ci_outputs import document, find_specs, plan_outputs, write_text
    if as_json and doc_fmt not in (None, "json"):
        raise click.BadParameter("--json is --output-format json", param_hint="--output-format")
    try:
        docs = plan_outputs(doc_out, "json" if as_json else doc_fmt)    # [(file or None for stdout, format)]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--output")
    as_json = any(f is None for f, _ in docs)    # a document on stdout replaces the tables
    specs, skipped = find_specs(specs)
    if skipped and not quiet:
        click.echo(f"skipped {len(skipped)} JSON file(s) without \"layers\": {', '.join(skipped)}", err=True)
    if not specs:
        raise UserError("no specs found (directories are searched for *.json files with \"layers\")")
    over = {k: v for k, v in {"vram": budget, "format": fmt, "mode": mode, "stage": stage}.items() if v is not None}
    results = []
    code = EXIT_OK
    out = None if as_json or quiet else console()   # rich is imported only to print tables
    for path in specs:
        c = _compile(path, sets, batch=batch, context=context, frames=frames, format=fmt, recompute=recompute,
                     budget=over or None, devices=devices, strategy=strategy, grad_accum=grad_accum)
        rc = spec_exit_code(c)
        code = max(code, rc)
        results.append({"file": path, "ok": rc == EXIT_OK, "exit_code": rc,
                        "report": c.report,     # an invalid spec's report is partial ("partial": true)
                        "diagnostics": [d.to_json() for d in c.diagnostics]})
        if as_json:
            continue
        if len(specs) > 1 and out is not None:
            out.rule(path)
        echo_diagnostics(c.diagnostics, verbose, quiet)
        name = f"{path}: " if len(specs) > 1 else ""      # over several specs each verdict line names its spec
        if rc == EXIT_INVALID:
            n = len(c.errors)
            if c.report is not None and out is not None and verbose:    # what could be counted: only when asked
                from .tables import check_tables
                out.print(f"partial report: the parts that could not be wired are counted by their weights only "
                          f"({', '.join(c.report.get('unaccounted') or []) or 'none'} without shapes or FLOPs)")
                for t in check_tables(c.report):
                    out.print(t)
            click.echo(f"{path}: " + click.style("invalid spec", fg="red", bold=True)
                       + f" ({n} error{'s' if n != 1 else ''})", err=True)
            continue
        _print_verdicts(out, c, budget, quiet, name)
        if quiet and name and not c.report.get("budget") and not any(not e["ok"] for e in c.report.get("expect") or []):
            click.echo(f"{name}" + click.style("ok", fg="green", bold=True) + " (no budget; expectations met)")
    if len(specs) > 1 and not as_json:
        n = {k: sum(r["exit_code"] == k for r in results) for k in (EXIT_OK, EXIT_UNMET, EXIT_INVALID)}
        click.echo(f"{len(specs)} specs: {n[EXIT_OK]} pass, {n[EXIT_UNMET]} FAIL, {n[EXIT_INVALID]} invalid")
    for file, kind in docs:
        text = document(results, kind, dump_json)
        if file:
            write_text(file, text)
        else:
            click.echo(text, nl=False)
    sys.exit(code)


def _verdict_colour(line: str) -> str:
    """`: pass` green, `: FAIL` red (on a terminal; click drops the colour elsewhere)."""
    for word, colour in ((": pass", "green"), (": FAIL", "red"), (": ok", "green")):
        head, sep, tail = line.rpartition(word)
        if sep and (not tail or tail.startswith(" (")):
            return head + ": " + click.style(word[2:], fg=colour, bold=True) + tail
    return line


def _print_verdicts(out, c, budget_text: Optional[str], quiet: bool, name: str = "") -> None:
    from .tables import budget_line, check_tables, expect_line
    rep = c.report
    if out is not None:
        for t in check_tables(rep):
            out.print(t)
    for e in rep.get("expect") or []:
        if not e["ok"]:
            click.echo(_verdict_colour(f"{name}expect {expect_line(e)}"))
    b = rep.get("budget")
    if b:
        limit = budget_text or (c.doc.budget.vram if c.doc and c.doc.budget else None)
        click.echo(_verdict_colour(f"{name}budget {budget_line(b, rep, str(limit) if limit is not None else None)}"))
    elif not quiet:
        click.echo(f"{name}budget: none (set one with --budget 6GiB or a 'budget' in the spec)")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--depth", type=click.IntRange(min=1), help="Collapse rows to this many dotted name components.")
@_options(size_options)
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Also print notes, and a \"connected to\" column.")
def summary(spec, depth, batch, context, frames, sets, as_json, verbose):
    """Per-layer table of SPEC: type, output shape, params, active params, prefill FLOPs, output memory.

    Repeated layers (one `repeat` group) collapse into one row "name (xN)"; --depth collapses by name prefix.
    """
    from .formats import get_format
    from .tables import summary_json, summary_rows, summary_table
    c = _compile(spec, sets, batch=batch, context=context, frames=frames, with_nodes=True)
    if not as_json:
        echo_diagnostics(c.diagnostics, verbose)
    if c.report is None or not c.ok:
        if as_json:
            click.echo(dump_json({"file": spec, "ok": False, "diagnostics": [d.to_json() for d in c.diagnostics]}))
        else:
            click.echo(f"{spec}: invalid spec ({len(c.errors)} errors)", err=True)
        sys.exit(EXIT_INVALID)
    rep = c.report
    rows = summary_rows(rep, depth, get_format(rep["settings"]["format"]).compute_bytes)
    if as_json:
        click.echo(dump_json({"file": spec, "ok": True, **summary_json(rep, rows)}))
    else:
        out = console()
        out.print(summary_table(rep, rows, out.width, connections=verbose))


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Picture file; its extension picks the format: .svg .png .pdf (Graphviz), .dot .gv (DOT text), "
                   ".mmd (Mermaid), .md (Mermaid in Markdown).")
@click.option("--depth", type=click.IntRange(min=1), help="Collapse boxes to this many dotted name components.")
@set_option
@click.option("-v", "--verbose", is_flag=True, help="Also print notes.")
def graph(spec, out_file, depth, sets, verbose):
    """Draw the layer graph of SPEC: type, output shape and parameters per box, repeated blocks as one box
    "name xN", inferred wiring dashed, model inputs and outputs marked (compiler.picture)."""
    from .picture import PictureError, write
    c = _compile(spec, sets)
    echo_diagnostics(c.diagnostics, verbose)
    if not c.ok or c.graph is None:
        click.echo(f"{spec}: invalid spec, nothing drawn", err=True)
        sys.exit(EXIT_INVALID)
    try:
        fmt = write(c, out_file, depth)
    except PictureError as e:
        raise UserError(str(e))
    click.echo(f"wrote {out_file} ({fmt})")


@cli.command()
@click.argument("spec_a", metavar="A", type=click.Path(dir_okay=False))
@click.argument("spec_b", metavar="B", type=click.Path(dir_okay=False))
@click.option("--budget", callback=_size_option, metavar="SIZE", help="Memory limit applied to both sides.")
@set_option
@click.option("--set-a", "sets_a", multiple=True, metavar="KEY=VALUE", help="Override in A only.")
@click.option("--set-b", "sets_b", multiple=True, metavar="KEY=VALUE", help="Override in B only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (docs/ci-gate.md).")
@click.option("-v", "--verbose", is_flag=True, help="Also print warnings and notes of both specs.")
def diff(spec_a, spec_b, budget, sets, sets_a, sets_b, as_json, verbose):
    """What changed from spec A to spec B: layers added / removed / changed (parameter by parameter, repeated
    blocks as one row), parameters, FLOPs, memory and budget verdicts, with deltas (compiler.diff).

    Exit 0 whatever changed; 2 when a spec is invalid. `omnic diff m.json m.json --set-b decoder.blocks.depth=32`
    compares a spec with a variant of itself.
    """
    from .diff import diff as do_diff, tables
    over = {"vram": budget} if budget else None
    sides = [_compile(p, sets + extra, budget=over) for p, extra in ((spec_a, sets_a), (spec_b, sets_b))]
    for path, c in zip((spec_a, spec_b), sides):
        echo_diagnostics(c.diagnostics, verbose, quiet=not verbose)
        if not c.ok or c.report is None:
            click.echo(f"{path}: invalid spec ({len(c.errors)} errors), nothing compared", err=True)
    if not all(c.ok and c.report is not None for c in sides):
        sys.exit(EXIT_INVALID)
    d = do_diff(*sides, files=(spec_a, spec_b))
    if as_json:
        click.echo(dump_json(d))
        return
    out = console()
    for t in tables(d):
        out.print(t)


@cli.command()
def schema():
    """Print the JSON Schema of specs (committed as specs/schema.json: `omnic schema > specs/schema.json`)."""
    from .schema import schema_text
    click.echo(schema_text(), nl=False)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(TARGETS), required=True, help="What to generate.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory; replaced atomically (only if empty or written by omnic build).")
@click.option("--weights", is_flag=True, help="Also write initialised weights (safetensors).")
@click.option("--weights-from", "weights_from", type=click.Path(exists=True),
              help="Write the weights of this checkpoint folder (config.json + safetensors, single or sharded) "
                   "in omnic's layout, loaded strictly through its family's key map.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weight initialisation.")
@click.option("--force", is_flag=True, help="Replace the output directory of an earlier build.")
@click.option("--quantize", metavar="Q", help="A quantised build (implies --weights): mlx 4 | 8 (mlx.nn.quantize), "
              "torch int8 | int4 (torchao weight-only), gguf q8_0 (the default for gguf). See docs/quantisation.md.")
@click.option("--group-size", type=click.IntRange(min=1), metavar="N",
              help="Weights per scale group: mlx 32 | 64 (default) | 128; torch int4 32 | 64 | 128 (default) | 256.")
@set_option
@click.option("-v", "--verbose", is_flag=True, help="Also print notes.")
def build(spec, target, out_dir, weights, weights_from, seed, force, quantize, group_size, sets, verbose):
    """Compile SPEC and write a model for TARGET into DIR (atomically: DIR is untouched on failure).

    A quantised build prints the bytes its weights hold, which are the report's memory.weights[FORMAT], and the
    budget verdict for the format it built."""
    from .emit.build import BuildError, build as do_build
    from .quantise import QuantError, quant_plan
    c = _compile(spec, sets)
    echo_diagnostics(c.diagnostics, verbose)
    if not c.ok or c.report is None:
        click.echo(f"{spec}: invalid spec, nothing built", err=True)
        sys.exit(EXIT_INVALID)
    if group_size is not None and quantize is None and target != "gguf":
        raise click.BadParameter("--group-size goes with --quantize (e.g. --quantize 4 --group-size 32)",
                                 param_hint="--group-size")
    plan = None
    if quantize is not None or group_size is not None or target == "gguf":
        try:
            plan = quant_plan(c, target, quantize or "q8_0", group_size)
        except QuantError as e:
            raise UserError(str(e))
        c = _compile(spec, sets, format=plan.fmt.name, budget={"format": plan.fmt.name})
    key_map = ()
    if weights_from is not None:
        from .importers.folder import FolderError, key_map_of_folder
        try:
            key_map = key_map_of_folder(weights_from)
        except FolderError as e:
            raise UserError(str(e))
    try:
        files = do_build(c, target, out_dir, weights=weights, seed=seed, weights_from=weights_from,
                         key_map=key_map, force=force, quant=plan)
    except (BuildError, QuantError) as e:
        raise UserError(str(e))
    click.echo(f"built {c.report['name']!r} for {target} in {out_dir} ({len(files)} files)")
    if plan is not None:
        from .tables import budget_line
        click.echo(f"weights {plan.fmt.name}: {plan.expected_bytes:,} B = memory.weights[{plan.fmt.name}] "
                   f"({len(plan.quantised)} tensors quantised by {plan.scheme.engine}, {len(plan.kept)} kept)")
        b = c.report.get("budget")
        if b:
            click.echo(f"budget {budget_line(b, c.report)}")
    from runtime_common.input_spec import describe
    click.echo("inputs (model.py's INPUTS):")
    for spec in describe(c.graph):
        click.echo(f"  {spec.describe()}")


@cli.command("import-hf")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False),
              help="Spec file to write (default: <the model's name>.json here).")
@click.option("--name", help="The spec's name (default: the config's _name_or_path or architectures).")
@click.option("--force", is_flag=True, help="Overwrite an existing spec file.")
def import_hf(source, out_file, name, force):
    """Write a spec for a checkpoint folder's config.json (or a config file): transformers model types (llama,
    gemma3, lfm2, qwen2_moe, mixtral, siglip, dinov2, dinov3_vit, ...) and nanoVLM configs; then check it."""
    from .importers.folder import FolderError, default_out, spec_of_folder, write_spec
    from . import compile
    try:
        spec = spec_of_folder(source, name)
        out_file = out_file or default_out(spec)
        c = compile(spec)
        echo_diagnostics(c.diagnostics)
        if not c.ok or c.report is None:
            click.echo(f"{source}: the imported spec does not compile (see above); nothing written", err=True)
            sys.exit(EXIT_INVALID)
        write_spec(spec, out_file, force)
    except FolderError as e:
        raise UserError(str(e))
    click.echo(f"wrote {out_file}: {c.report['name']}, {c.report['params']['total']:,} parameters")


def _guard(fn, *args: Any) -> None:
    """Run a run / generate body: bad files, spec errors, inputs that do not fit (in shape or in memory) and a missing
    framework are one line and exit 2."""
    from .diagnostics import SpecError
    try:
        fn(*args)
    except SpecError as e:
        echo_diagnostics(e.diagnostics)
        raise UserError(f"{args[0]}: invalid spec, nothing run")
    except ModuleNotFoundError as e:
        from .install_hint import pip_command
        root = (e.name or "").split(".")[0]
        if root in ("torch", "mlx", "numpy", "safetensors"):
            raise UserError(f"{root} is not installed: {pip_command('mlx' if root == 'mlx' else 'torch')}")
        raise
    except ValueError as e:                      # RunError is one too: a file or input that does not fit
        raise UserError(str(e))
    except MemoryError as e:                     # an allocation refused before it was made (MLX's attention)
        raise UserError(str(e) or "out of memory") from None


@cli.command("run")
@_run_options
@click.option("--tokens", type=click.IntRange(min=1), default=16, show_default=True,
              help="Random text tokens per example (after any image placeholders).")
def run_cmd(**kw):
    """Run SPEC (or an omnic build directory) once on inputs it declares: output shapes, time, measured peak memory
    beside the predicted one (compiler.cli_run)."""
    from .cli_run import do_run
    kw["sets"] = parse_sets(kw["sets"])
    _guard(do_run, *(kw[k] for k in ("source", "runtime", "weights", "seed", "dtype", "sets", "batch", "images",
                                    "mean", "std", "as_json", "threads", "tokens")))


@cli.command("generate")
@_run_options
@click.option("--prompt", help="Text of the prompt (needs --tokenizer).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False),
              help="A local tokenizer folder (transformers' save_pretrained files); nothing is downloaded.")
@click.option("--ids", help="The prompt as token ids, e.g. 1,2,3 (default: 8 random ids).")
@click.option("-n", "--max-new-tokens", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="0: greedy; above 0: sampling at this temperature (seeded by --seed).")
@click.option("--top-k", type=click.IntRange(min=1), help="Sample from the k most likely tokens only.")
@click.option("--eos", type=int, help="Stop token id (default: the tokenizer's).")
def generate_cmd(**kw):
    """Decode from SPEC (or an omnic build directory) with a KV cache: the tokens (or text), prompt and generation
    tokens-per-sec, and measured peak memory beside the predicted one, as mlx-lm's generate prints (compiler.cli_run)."""
    from .cli_run import do_generate
    kw["sets"] = parse_sets(kw["sets"])
    _guard(do_generate, *(kw[k] for k in ("source", "runtime", "weights", "seed", "dtype", "sets", "batch", "images",
                                         "mean", "std", "as_json", "threads", "prompt", "tokenizer", "ids",
                                         "max_new_tokens", "temperature", "top_k", "eos")))


@cli.command("ops")
@click.argument("type_", metavar="[TYPE]", required=False)
def ops_cmd(type_):
    """List the layer types, or print one: its params (type, default, description), inputs, outputs
    (compiler.op_docs; docs/ops.md has them all, with a minimal spec each)."""
    from .diagnostics import did_you_mean
    from .op_docs import find, index, ops, text
    if type_ is None:
        click.echo(index(), nl=False)
        return
    op = find(type_)
    if op is None:
        raise UserError(f"unknown layer type {type_!r}; " + (did_you_mean(type_, ops()) or "`omnic ops` lists them"))
    click.echo(text(op), nl=False)


@cli.command()
def doctor():
    """What this installation can do: versions, devices, MLX's BLAS, and the command for each missing part."""
    from .doctor import rows
    for part, ok, text in rows():
        click.echo(f"{click.style('ok ' if ok else '-- ', fg='green' if ok else 'yellow', bold=True)} {part:<13} {text}")


cli.add_command(fit)


# --- entry point -----------------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: click handles usage errors (exit 2); anything unexpected is an internal error (3).
    SIGTERM unwinds like Ctrl-C, so `omnic build` removes its temporary directory."""
    # pydantic looks up plugins in every installed package's metadata when it builds its first validator (a scan of
    # the environment at each start); the omnic command runs none, so it skips the scan unless told otherwise
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        cli.main(args=argv, prog_name="omnic")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug in omnic, not in the spec: one line, no traceback
        if os.environ.get("OMNIC_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        click.echo(f"omnic: internal error (please report): {type(e).__name__}: {msg}", err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
