"""The `omnic run` and `omnic generate` commands: options, then `runtime_common.runner`, then what mlx-lm prints.

    omnic run specs/nanovlm/original_small.json --runtime mlx --image image=cat.png
    omnic generate tiny.json --tokenizer ./tok --prompt "hello" -n 20 --runtime torch

Both load a spec or an `omnic build` directory, with weights from --weights or drawn from --seed, make the inputs
the model declares (token ids, image placeholders, images from files), and print the timing and the measured peak
memory beside the compiler's predicted inference memory at the same batch and length. No framework is imported
before a runtime is chosen; the compiler core stays framework-free.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import click



def common_options(f):
    opts = [
        click.argument("source", type=click.Path(exists=True)),
        click.option("--runtime", type=click.Choice(["torch", "mlx"]),
                     help="Runtime (default: torch for a spec, the build's for a build directory)."),
        click.option("--weights", type=click.Path(dir_okay=False),
                     help="safetensors file (torch layout, as either runtime's save_weights or omnic build "
                          "--weights write); default: a build directory's model.safetensors, else random."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of random weights and random inputs."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
                     show_default=True, help="Compute dtype."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override a spec value (as in omnic check), e.g. --set decoder.blocks.depth=2."),
        click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size B."),
        click.option("--image", "images", multiple=True, metavar="[NAME=]FILE",
                     help="An image input from a file (.png/.jpg with Pillow, .npy, .safetensors), resized to the "
                          "compiled size and scaled to [0, 1]; NAME= when the model has several image inputs."),
        click.option("--mean", type=float, default=0.0, show_default=True,
                     help="Subtracted from images read from PNG/JPEG (0.5 for SigLIP)."),
        click.option("--std", type=float, default=1.0, show_default=True,
                     help="Divides images read from PNG/JPEG (0.5 for SigLIP)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
        click.option("--threads", type=click.IntRange(min=1),
                     help="torch's CPU threads (torch.set_num_threads); 1 is fastest on a busy machine."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _images(m, values: tuple[str, ...]) -> dict[str, str]:
    from runtime_common.runner import RunError
    takes = [s.name for s in m.specs if s.kind in ("image", "video")]
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            if len(takes) != 1:
                raise RunError(f"--image {v}: the model has {len(takes)} image inputs ({', '.join(takes) or 'none'});"
                               " write --image NAME=FILE")
            name, path = takes[0], v
        out[name] = path
    return out


def _load(source, runtime, weights, seed, dtype, sets, batch, context, threads=None):
    from runtime_common import runner
    m = runner.load(source, runtime, weights, seed, dtype, sets, batch, context)
    if threads and m.runtime == "torch":
        import torch
        torch.set_num_threads(threads)
    return m


def _repredict(m, source: str, sets, batch: int, length: int) -> None:
    """The report at the run's own batch and length (a spec source; a build keeps its report.json)."""
    if os.path.isdir(source):
        return
    from . import compile
    from runtime_common.runner import FORMAT_OF_DTYPE
    c = compile(source, overrides=sets, batch=batch, context=length, format=FORMAT_OF_DTYPE[m.dtype])
    if c.ok and c.report is not None:
        m.report = c.report


def _gb(x: Optional[int]) -> str:
    from .tables import fmt_bytes
    return "?" if x is None else fmt_bytes(x)


def _memory_line(res: dict, m) -> str:
    line = f"Peak memory: {_gb(res['peak'])}"
    if res["predicted"]:
        s = (m.report or {}).get("settings", {})
        at = f" at batch {s.get('batch')}, context {s.get('context')}" if s else ""
        ratio = f", measured/predicted {res['peak'] / res['predicted']:.2f}" if res["peak"] else ""
        line += f" (predicted {_gb(res['predicted'])}{at}{ratio}; {res['peak_how']})"
    return line


def _header(m, source: str) -> str:
    name = (m.report or {}).get("name", os.path.basename(source))
    return f"{name}: {m.runtime}, {m.dtype}, weights {m.weights}"


def _input_line(m, arrays) -> str:
    parts = []
    for s in m.specs:
        a = arrays[s.name]
        extra = "".join(f", {p.count} placeholders of id {p.token_id}" for p in s.placeholders)
        parts.append(f"{s.name} {tuple(a.shape)} {a.dtype}{extra}")
    return "inputs: " + "; ".join(parts)


def do_run(source, runtime, weights, seed, dtype, sets, batch, images, mean, std, as_json, threads, tokens):
    from runtime_common import runner
    m = _load(source, runtime, weights, seed, dtype, sets, batch, None, threads)
    arrays = runner.make_inputs(m, tokens=tokens, images=_images(m, images), seed=seed, mean=mean, std=std,
                                batch=batch)
    length = next((arrays[s.name].shape[1] for s in m.specs if s.kind == "ids"), None)
    _repredict(m, source, sets, batch, length or int(m.settings.get("context") or 1))
    res = runner.run(m, arrays)
    if as_json:
        click.echo(json.dumps({"source": source, "runtime": m.runtime, "dtype": m.dtype, "weights": m.weights,
                               "inputs": {k: list(v.shape) for k, v in arrays.items()}, **res}, indent=2))
        return
    click.echo(_header(m, source))
    click.echo(_input_line(m, arrays))
    for k, st in res["outputs"].items():
        click.echo(f"  {k}  {tuple(st['shape'])}  mean {st['mean']:.4g}  std {st['std']:.4g}")
    click.echo("=" * 10)
    tps = f", {res['tokens'] / res['seconds']:.1f} tokens-per-sec" if res["tokens"] else ""
    click.echo(f"Forward: {res['seconds']:.3f} s{tps}")
    click.echo(_memory_line(res, m))


def _tokenizer(path: Optional[str]):
    if path is None:
        return None
    from runtime_common.runner import RunError
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise RunError("--tokenizer needs transformers (pip install transformers)") from None
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot load a tokenizer from {path} (a folder with tokenizer.json or the files "
                       f"save_pretrained writes; nothing is downloaded): {str(e).splitlines()[0]}") from None


def do_generate(source, runtime, weights, seed, dtype, sets, batch, images, mean, std, as_json, threads, prompt,
                tokenizer, ids, max_new_tokens, temperature, top_k, eos):
    from runtime_common import runner
    tok = _tokenizer(tokenizer)
    if prompt is not None and tok is None:
        raise runner.RunError("--prompt needs --tokenizer DIR (a local tokenizer folder); or give --ids 1,2,3")
    prompt_ids: Optional[list[int]] = None
    if prompt is not None:
        prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
    elif ids is not None:
        try:
            prompt_ids = [int(x) for x in ids.replace(",", " ").split()]
        except ValueError:
            raise runner.RunError(f"--ids {ids!r}: token ids separated by commas, e.g. --ids 1,2,3") from None
    if eos is None and tok is not None:
        eos = tok.eos_token_id
    m = _load(source, runtime, weights, seed, dtype, sets, batch, None, threads)
    arrays = runner.make_inputs(m, tokens=8, images=_images(m, images), seed=seed, prompt_ids=prompt_ids,
                                mean=mean, std=std, batch=batch)
    length = next(arrays[s.name].shape[1] for s in m.specs if s.kind == "ids")
    vocab = next((s.vocab for s in m.specs if s.kind == "ids"), None)
    if prompt_ids and vocab and max(prompt_ids) >= vocab:
        raise runner.RunError(f"token id {max(prompt_ids)} is outside the model's vocabulary of {vocab} "
                              "(a tokenizer of another model?)")
    _repredict(m, source, sets, batch, length + max_new_tokens)
    res = runner.generate(m, arrays, max_new_tokens, do_sample=temperature > 0, temperature=temperature or 1.0,
                          top_k=top_k, seed=seed, eos_token_id=eos)
    text = [tok.decode(t, skip_special_tokens=True) for t in res["tokens"]] if tok is not None else None
    if as_json:
        click.echo(json.dumps({"source": source, "runtime": m.runtime, "dtype": m.dtype, "weights": m.weights,
                               "text": text, **res}, indent=2))
        return
    click.echo(_header(m, source))
    for row, toks in enumerate(res["tokens"]):
        click.echo(text[row] if text is not None else " ".join(map(str, toks)))
    click.echo("=" * 10)
    ptps = f", {res['prompt_tps']:.1f} tokens-per-sec" if res["prompt_tps"] else ""
    gtps = f", {res['generation_tps']:.1f} tokens-per-sec" if res["generation_tps"] else ""
    click.echo(f"Prompt: {res['prompt_tokens']} tokens{ptps}")
    click.echo(f"Generation: {res['generated']} tokens{gtps}")
    click.echo(_memory_line(res, m))
