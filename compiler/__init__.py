"""omnic: a declarative JSON-spec model compiler.

`compile(spec)` reads a spec (path, JSON text or dict), checks it, builds the typed layer graph, infers shapes and
accounts parameters, FLOPs and memory. It imports neither torch nor mlx; `Compiled.to_torch()` / `.to_mlx()` do.
"""
from .diagnostics import Diagnostic, SpecError
from .pipeline import Compiled, compile, load_source

__all__ = ["compile", "Compiled", "Diagnostic", "SpecError", "load_source"]
__version__ = "0.1.0"
