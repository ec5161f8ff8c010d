"""Diagnostics: located messages rendered as `file:line:col: severity: path: message` plus a hint.

Every pass returns or appends `Diagnostic`s instead of raising, so one run reports everything wrong with a file.
A `SpecError` carries diagnostics out of a pass that cannot go on (e.g. the JSON does not parse).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Optional

ERROR, WARNING, NOTE = "error", "warning", "note"
MAX_ERRORS = 100       # past this a collector stops the pass: a hostile spec must not make millions of messages
_ORDER = {ERROR: 0, WARNING: 1, NOTE: 2}


@dataclass(frozen=True)
class Diagnostic:
    severity: str                      # "error" | "warning" | "note"
    message: str
    path: str = ""                     # JSON path in the spec, e.g. "layers[4].params.num_kv_heads"
    file: Optional[str] = None
    line: Optional[int] = None         # 1-based
    col: Optional[int] = None          # 1-based
    hint: Optional[str] = None
    code: str = ""                     # stable machine-readable kind, e.g. "unknown-key"

    def render(self) -> str:
        loc = ""
        if self.file:
            loc = self.file
            if self.line is not None:
                loc += f":{self.line}:{self.col or 1}"
            loc += ": "
        where = f"{self.path}: " if self.path else ""
        text = f"{loc}{self.severity}: {where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def excerpt(self) -> str:
        """The source line and a caret under the column (`  12 | ...` / `     |     ^`), or "" without a file."""
        if not self.file or self.line is None:
            return ""
        import linecache
        text = linecache.getline(self.file, self.line).rstrip("\r\n")
        if not text or len(text) > 400:                   # a minified spec: the caret line would be unreadable
            return ""
        col = max(1, min(self.col or 1, len(text) + 1))
        pad = " " * len(str(self.line))
        return f"  {self.line} | {text.expandtabs(1)}\n  {pad} | {' ' * (col - 1)}^"

    def to_json(self) -> dict:
        return {
            "severity": self.severity, "code": self.code, "message": self.message, "path": self.path,
            "file": self.file, "line": self.line, "column": self.col, "hint": self.hint,
        }


class SpecError(Exception):
    """Raised by a pass that cannot continue; carries the diagnostics gathered so far."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("\n".join(d.render() for d in diagnostics))
        self.diagnostics = diagnostics


@dataclass
class Diagnostics:
    """A collector bound to one source file, turning JSON paths into line:column."""

    file: Optional[str] = None
    locate: Optional[object] = None    # callable(path tuple) -> (line, col) | None
    items: list[Diagnostic] = field(default_factory=list)
    _seen: set = field(default_factory=set, repr=False)
    _errors: int = field(default=0, repr=False)

    def add(self, severity: str, path: tuple | str, message: str, hint: str | None = None, code: str = "") -> None:
        ptuple = path if isinstance(path, tuple) else ()
        pstr = path if isinstance(path, str) else render_path(path)
        line = col = None
        if self.locate is not None and isinstance(path, tuple):
            lc = self.locate(ptuple)
            if lc:
                line, col = lc
        d = Diagnostic(severity, message, pstr, self.file, line, col, hint, code)
        if severity != ERROR and d in self._seen:
            return
        self._seen.add(d)
        self.items.append(d)
        if severity == ERROR:
            self._errors += 1
            if self._errors >= MAX_ERRORS:
                self.items.append(Diagnostic(ERROR, f"{MAX_ERRORS} errors; stopping here", "", self.file, line, col,
                                             "fix these and run again", "limit"))
                raise SpecError(self.items)

    def error(self, path, message, hint=None, code=""):
        self.add(ERROR, path, message, hint, code)

    def warning(self, path, message, hint=None, code=""):
        self.add(WARNING, path, message, hint, code)

    def note(self, path, message, hint=None, code=""):
        self.add(NOTE, path, message, hint, code)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == ERROR for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.line or 10**9, d.col or 0, _ORDER[d.severity]))


def render_path(path: Iterable) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> Optional[str]:
    choices = list(choices)
    m = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not m:
        low = {c.lower(): c for c in choices}
        m2 = difflib.get_close_matches(word.lower(), list(low), n=1, cutoff=0.6)
        m = [low[m2[0]]] if m2 else []
    return f"did you mean '{m[0]}'?" if m else None
