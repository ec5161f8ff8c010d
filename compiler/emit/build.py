"""`omnic build`: run a target's writer into a fresh directory, then swap it in for the output directory.

Targets and their writers (imported only when used, so the core never imports torch or mlx):
  torch  runtime_torch.emit.write(compiled, dir, weights=..., seed=...)
  mlx    runtime_mlx.emit.write(...)
  onnx   compiler.emit.onnx.write(...)
  onnx-decode  compiler.emit.onnx_decode.write(...)   (a decoder LM with past_key_values in and out)
  gguf   compiler.emit.gguf.write(...)       (a quantised llama-family LM; weights from runtime_torch)
A quantised build (`quant`, a plan of `compiler.quantise`) is passed on to the writer.
Atomicity: the writer fills a temporary directory beside DIR (same filesystem, so renames are atomic); then the old
DIR is renamed aside, the new one renamed in, and the old one deleted. If anything fails before the swap, DIR is
untouched; if the second rename fails, the old DIR is put back. An existing DIR is replaced only when it is empty or
holds the marker file of an earlier build, so `-o ~` cannot delete a home directory, and an earlier build only with
`force`. With `weights_from` (a checkpoint file or folder) and its `key_map`, model.safetensors holds that checkpoint's
weights, loaded strictly: a checkpoint that does not fit the spec is a BuildError listing every differing name.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import secrets
import shutil

WRITERS = {"torch": "runtime_torch.emit", "mlx": "runtime_mlx.emit", "onnx": "compiler.emit.onnx",
           "onnx-decode": "compiler.emit.onnx_decode", "gguf": "compiler.emit.gguf"}
# modules whose absence means "the optional dependencies of this target are not installed"
_OPTIONAL = {"torch", "mlx", "onnx", "onnxscript", "onnxruntime", "safetensors", "numpy", "gguf", "torchao"}
_EXTRA = {"gguf": "quant", "onnx-decode": "onnx"}
MARKER = ".omnic-build.json"


class BuildError(Exception):
    """A build that cannot run (missing dependency, unusable output directory); the message says what to do."""


def writer(target: str):
    if target not in WRITERS:
        raise BuildError(f"unknown target {target!r}; targets: {', '.join(WRITERS)}")
    mod = WRITERS[target]
    try:
        return importlib.import_module(mod).write
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root in _OPTIONAL or (e.name and mod.startswith(e.name)):
            from ..install_hint import pip_command
            raise BuildError(f"target {target} needs `{pip_command(_EXTRA.get(target, target))}` ({e})") from None
        raise
    except AttributeError:
        raise BuildError(f"target {target}: {mod} has no write() yet") from None


def _check_out(out: str, force: bool) -> None:
    if os.path.lexists(out) and not os.path.isdir(out):
        raise BuildError(f"{out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, MARKER)):
        raise BuildError(f"refusing to replace {out}: it is not empty and was not written by `omnic build` "
                         f"(no {MARKER}); remove it or choose another -o")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise BuildError(f"{out} holds an earlier build; pass --force to replace it")
    if os.path.realpath(out) in (os.path.realpath(os.getcwd()), os.path.realpath(os.path.expanduser("~")), "/"):
        raise BuildError(f"refusing to replace {out}: choose a directory of its own")


def build(compiled, target: str, out: str, *, weights: bool = False, seed: int = 0, weights_from: str | None = None,
          key_map=(), force: bool = False, quant=None) -> list[str]:
    """Write `compiled` for `target` into directory `out`; return the files written (relative to `out`)."""
    write = writer(target)
    out = os.path.normpath(out)
    _check_out(out, force)
    extra = {}
    if weights_from is not None:
        extra = dict(weights_from=weights_from, key_map=key_map)
    if quant is not None:
        extra["quant"] = quant
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(os.path.abspath(out))
    tmp = _fresh_dir(parent, f".{base}.new-")
    try:
        try:
            write(compiled, tmp, weights=weights, seed=seed, **extra)
        except ValueError as e:            # a checkpoint that does not fit (WeightsMismatch) or cannot be read
            if weights_from is None:
                raise
            raise BuildError(str(e)) from None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise BuildError(f"cannot write the build: {e.strerror or e}") from None
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump({"target": target, "name": compiled.report["name"] if compiled.report else None,
                       "weights": weights or weights_from is not None or quant is not None, "seed": seed,
                       **({"weights_from": os.path.abspath(weights_from)} if weights_from else {}),
                       **({"format": quant.fmt.name} if quant is not None else {})},
                      f, indent=1, sort_keys=True)
        files = sorted(os.path.relpath(os.path.join(d, n), tmp) for d, _, ns in os.walk(tmp) for n in ns)
        _swap(tmp, out, parent, base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _fresh_dir(parent: str, prefix: str) -> str:
    """A new empty directory (mode from the umask, unlike tempfile.mkdtemp's 0700: it becomes the output)."""
    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def _swap(new: str, out: str, parent: str, base: str) -> None:
    if not os.path.isdir(out):
        os.rename(new, out)
        return
    old = _fresh_dir(parent, f".{base}.old-")
    os.rename(out, old)          # onto an empty directory: atomic replace on POSIX
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
