"""One runtime's table of op implementations: `@implements("Linear")` registers a module class for a compiler op.

Each runtime makes one `Implementations` (its name, its module base class, its ops package) and exports its
`implements`, `get` and `all_impls`; the contract an implementation meets is in `runtime_torch/registry.py` and
`runtime_mlx/registry.py`. Implementation modules are imported from the runtime's `ops/*.py` on first use; one
registration per op (a second is refused, as `torch/utils/flop_counter.py` refuses duplicates).
"""
from __future__ import annotations

import importlib
import pkgutil


class Implementations:
    def __init__(self, runtime: str, base: type, base_name: str, ops_package: str):
        self.runtime = runtime            # "torch", in messages
        self.base = base                  # every implementation subclasses it
        self.base_name = base_name        # how messages name the base: "nn.Module"
        self.ops_package = ops_package    # "runtime_torch.ops", imported on first use
        self.impls: dict[str, type] = {}
        self._loaded = False

    def implements(self, op_name: str):
        """Class decorator: register `cls` as this runtime's implementation of compiler op `op_name` (once)."""
        def deco(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"@implements({op_name!r}) decorates an {self.base_name} subclass, not {cls!r}")
            if op_name in self.impls:
                raise ValueError(f"op {op_name} has two {self.runtime} implementations: "
                                 f"{self.impls[op_name].__qualname__} and {cls.__qualname__}")
            self.impls[op_name] = cls
            cls.op_name = op_name
            return cls
        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            ops = importlib.import_module(self.ops_package)
            for m in sorted(pkgutil.iter_modules(ops.__path__), key=lambda m: m.name):
                importlib.import_module(f"{ops.__name__}.{m.name}")

    def get(self, name: str) -> type:
        """The implementation of op `name`; a KeyError that says where to add one if there is none."""
        self._load()
        try:
            return self.impls[name]
        except KeyError:
            raise KeyError(f"op {name!r} has no {self.runtime} implementation: add a class decorated "
                           f"@implements({name!r}) in a file under {self.ops_package.replace('.', '/')}/") from None

    def all(self) -> dict[str, type]:
        self._load()
        return dict(sorted(self.impls.items()))
