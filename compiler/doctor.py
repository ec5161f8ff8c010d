"""`omnic doctor`: what this installation can do, and what to install for the rest.

One line per part: omnic and Python; torch (version, devices, threads); MLX (version, device, and on Linux which BLAS
its CPU kernels call: the wheel's reference BLAS is about 17x slower for a forward than OpenBLAS); ONNX export; the
tokenizer library used by `omnic generate --tokenizer`; Graphviz for pictures. Each missing part names the command
that installs it from the checkout. Frameworks are imported only here, never by the compiler core.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import shutil
import sys

from .install_hint import pip_command


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _torch() -> tuple[bool, str]:
    if _version("torch") is None:
        return False, f"not installed: {pip_command('torch')}"
    import torch
    dev = ["cpu"] + (["cuda x%d (%s)" % (torch.cuda.device_count(), torch.cuda.get_device_name(0))]
                     if torch.cuda.is_available() else []) + \
        (["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])
    return True, f"{torch.__version__}; devices: {', '.join(dev)}; {torch.get_num_threads()} CPU threads"


def _mlx() -> tuple[bool, str]:
    if importlib.util.find_spec("mlx") is None:
        return False, f"not installed: {pip_command('mlx')}"
    runtime_mlx = importlib.import_module("runtime_mlx")     # first: it chooses the BLAS (looked up by name: the
    import mlx.core as mx                                     # compiler imports no runtime)
    blas = runtime_mlx.BLAS
    text = f"{_version('mlx') or '?'}; device: {mx.default_device()}"
    if sys.platform == "linux":
        if blas["loaded"]:
            text += f"; BLAS: OpenBLAS {blas['path']} ({blas['how']})"
        else:
            text += f"; BLAS: the wheel's reference BLAS, about 17x slower: {blas['reason']}"
        return blas["loaded"], text
    return True, text


def _optional(dist: str, extra: str, what: str) -> tuple[bool, str]:
    v = _version(dist)
    return (True, f"{v}; {what}") if v else (False, f"not installed ({what}): {pip_command(extra)}")


def rows() -> list[tuple[str, bool, str]]:
    """(part, usable, detail) for each part of the installation."""
    from . import __version__
    out = [("omnic", True, f"{__version__}; Python {platform.python_version()} on {platform.platform(terse=True)}")]
    for name, probe in (("torch", _torch), ("mlx", _mlx)):
        try:
            ok, text = probe()
        except Exception as e:       # noqa: BLE001 - a broken install is a finding, not a crash
            ok, text = False, f"installed but fails to import: {type(e).__name__}: {e}"
        out.append((name, ok, text))
    out.append(("onnx", *_optional("onnxruntime", "onnx", "omnic build --target onnx")))
    out.append(("transformers", *_optional("transformers", "test", "omnic generate --tokenizer, import-hf checks")))
    dot = shutil.which("dot")
    out.append(("graphviz", dot is not None and _version("graphviz") is not None,
                f"dot at {dot}" if dot else "no `dot` program: omnic graph writes .dot/.mmd only (apt-get install "
                                             "graphviz; brew install graphviz)"))
    return out
