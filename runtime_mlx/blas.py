"""Which BLAS MLX's CPU kernels call on Linux, made independent of import order.

The `mlx[cpu]` wheel links a bundled reference BLAS/LAPACK (netlib: about 5 GFLOP/s for an fp32 GEMM on a 2-core
EPYC, against about 185 with OpenBLAS; `bench/bench_mlx_gemm.py`). Two ways to make `libmlx.so` call a tuned
OpenBLAS instead (Debian: `apt-get install libopenblas0-pthread`):

1. `preload()`, before `mlx` is imported: load OpenBLAS with RTLD_GLOBAL, so the dynamic linker binds libmlx's BLAS
   and LAPACK symbols to it when libmlx is loaded (the symbols it finds first win).
2. `rebind()`, after `mlx` was imported (a user's `import mlx.core` came first): libmlx calls each BLAS / LAPACK
   function through its global offset table (an ELF JUMP_SLOT or GLOB_DAT entry per symbol). Rewriting the entries
   of the symbols OpenBLAS defines (about 24: cblas_sgemm, sgetrf_, ssyevd_, ...) with OpenBLAS's addresses has the
   same effect as the preload. Entries are found from libmlx's own ELF file (its relocations name the symbols) and
   its load address (dlinfo's link map). Only x86-64 and aarch64 ELF; anything unexpected leaves libmlx untouched
   and says why.

`BLAS` records the outcome (`omnic doctor` prints it). `OMNIC_MLX_OPENBLAS=0` opts out,
`OMNIC_MLX_OPENBLAS=/path/libopenblas.so` names the library.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys

_KNOWN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

#: what happened: {"loaded": bool, "path": str | None, "how": "preload" | "rebind" | None, "reason": str}
BLAS: dict = {"loaded": False, "path": None, "how": None, "reason": "not attempted"}

# relocation types that hold a symbol's address in a GOT slot: (machine) -> {type}
_EM_X86_64, _EM_AARCH64 = 62, 183
_SLOT_TYPES = {_EM_X86_64: {6, 7}, _EM_AARCH64: {1025, 1026}}       # GLOB_DAT, JUMP_SLOT


def find_openblas() -> str | None:
    for p in _KNOWN_PATHS:
        if os.path.exists(p):
            return p
    return ctypes.util.find_library("openblas")


def _wanted() -> tuple[str | None, str | None]:
    """(library path, None) to use, or (None, reason) when there is nothing to do."""
    setting = os.environ.get("OMNIC_MLX_OPENBLAS", "1").strip()
    if sys.platform != "linux":
        return None, "not Linux: MLX uses the platform BLAS (Accelerate on macOS)"
    if setting.lower() in ("0", "false", "no", "off"):
        return None, "disabled by OMNIC_MLX_OPENBLAS=0"
    path = setting if setting.lower() not in ("1", "true", "yes", "on", "") else find_openblas()
    if not path:
        return None, "no OpenBLAS found: MLX runs on its bundled reference BLAS (apt-get install libopenblas0-pthread)"
    return path, None


def preload() -> None:
    """Load OpenBLAS globally before `mlx.core` is imported; if it already was, rebind libmlx's BLAS calls."""
    path, why = _wanted()
    if path is None:
        BLAS.update(reason=why)
        return
    if "mlx.core" in sys.modules:
        rebind(path)
        return
    try:
        ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
    except OSError as e:
        BLAS.update(reason=f"could not load {path}: {e}")
        return
    BLAS.update(loaded=True, path=path, how="preload", reason="loaded with RTLD_GLOBAL before mlx")


# --- after the fact: rewrite libmlx's GOT slots ---------------------------------------------------------------------
def _elf_slots(path: str) -> tuple[int, list[tuple[int, str]]]:
    """(machine, [(GOT slot offset, symbol name)]) for the symbol-bound slots of an ELF64 little-endian library."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    machine, = struct.unpack_from("<H", data, 18)
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    slots = []
    for name, typ, flags, addr, off, size, link, info, align, entsize in secs:
        if typ != 4 or not entsize:                 # SHT_RELA
            continue
        symtab = secs[link]
        strtab = secs[symtab[6]]
        for k in range(size // entsize):
            r_offset, r_info, _ = struct.unpack_from("<QQq", data, off + k * entsize)
            sym, rtype = r_info >> 32, r_info & 0xffffffff
            if rtype not in _SLOT_TYPES.get(machine, ()) or not sym:
                continue
            st_name, = struct.unpack_from("<I", data, symtab[4] + sym * symtab[9])
            end = data.index(b"\0", strtab[4] + st_name)
            slots.append((r_offset, data[strtab[4] + st_name:end].decode()))
    return machine, slots


def _base_address(libc, handle: int) -> int:
    """The load address of a dlopen'ed library (l_addr of its link map; RTLD_DI_LINKMAP = 2)."""
    lm = ctypes.c_void_p()
    if libc.dlinfo(ctypes.c_void_p(handle), 2, ctypes.byref(lm)) != 0:
        raise OSError("dlinfo failed")
    return ctypes.cast(lm, ctypes.POINTER(ctypes.c_size_t))[0]


def rebind(path: str) -> None:
    """Point libmlx's BLAS / LAPACK slots at the OpenBLAS at `path` (mlx is already imported)."""
    import mlx.core  # noqa: F401  (already imported: this only finds its library)
    lib = os.path.join(os.path.dirname(sys.modules["mlx.core"].__file__), "lib", "libmlx.so")
    try:
        blas = ctypes.CDLL(path)
        libc = ctypes.CDLL(None)
        mlx_handle = ctypes.CDLL(lib, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)._handle    # the copy mlx.core loaded
        machine, slots = _elf_slots(lib)
        if machine not in _SLOT_TYPES:
            raise ValueError(f"ELF machine {machine} is not x86-64 or aarch64")
        base = _base_address(libc, mlx_handle)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        page = os.sysconf("SC_PAGE_SIZE")
        todo = []
        for off, name in slots:
            if not (name.startswith("cblas_") or name.endswith("_")):    # BLAS / LAPACK names only
                continue
            try:
                fn = ctypes.cast(getattr(blas, name), ctypes.c_void_p).value
            except AttributeError:
                continue
            todo.append((base + off, fn))
        if not todo:
            raise ValueError("libmlx.so imports no BLAS symbol that OpenBLAS defines")
        for addr, fn in todo:            # GLOB_DAT slots sit in RELRO (read-only): open the page for the write
            start = addr & ~(page - 1)
            if libc.mprotect(start, page * (2 if addr + 8 > start + page else 1), 3) != 0:
                raise OSError(f"mprotect failed (errno {ctypes.get_errno()})")
            ctypes.c_void_p.from_address(addr).value = fn
    except (OSError, ValueError, AttributeError) as e:
        BLAS.update(reason=f"mlx was imported before runtime_mlx and its BLAS calls could not be rebound ({e}); "
                           "import runtime_mlx before mlx")
        return
    BLAS.update(loaded=True, path=path, how="rebind", slots=len(todo),
                reason=f"mlx was imported first: {len(todo)} BLAS/LAPACK entries of libmlx.so rebound to OpenBLAS")


def warn_if_slow() -> None:
    """One loud warning when MLX runs on its reference BLAS although an OpenBLAS is there to use."""
    if not BLAS["loaded"] and sys.platform == "linux" and find_openblas() and "disabled" not in BLAS["reason"]:
        import warnings
        warnings.warn(f"MLX runs on its slow reference BLAS (about 17x slower forwards): {BLAS['reason']}",
                      RuntimeWarning, stacklevel=3)
