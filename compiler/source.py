"""Reading JSON strictly, with the line and column of every value.

Python's `json` accepts NaN, Infinity and duplicate keys and forgets positions; a spec compiler must reject the first
two and point at every value. This is a small tokenizer (one regular expression) plus a recursive-descent parser that
records `path -> (line, col)` for each value and each key. Limits on size and nesting keep hostile input bounded.
"""
from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .diagnostics import Diagnostic, SpecError, ERROR

MAX_BYTES = 4 * 1024 * 1024        # a spec is a few KiB; 4 MiB leaves room for generated specs
MAX_DEPTH = 64                     # nesting of objects and arrays
MAX_TOKENS = 500_000               # 20,000 layers written out; bounds the parse's time and memory below MAX_BYTES

_TOKEN = re.compile(r"""[ \t\n\r]*(?:
    (?P<punct>[{}\[\]:,])
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<word>true|false|null)
  | (?P<bad>[^ \t\n\r]))
""", re.VERBOSE)   # every non-blank character starts a match, so the matches cover the text but for blanks


@dataclass
class Source:
    """A parsed JSON document with positions."""

    text: str
    file: str | None
    data: Any = None
    locs: dict[tuple, tuple[int, int]] = field(default_factory=dict)      # path -> (line, col) of the value
    key_locs: dict[tuple, tuple[int, int]] = field(default_factory=dict)  # path -> (line, col) of its key

    def locate(self, path: tuple) -> tuple[int, int] | None:
        """Position of `path`, or of its nearest located ancestor (a missing key points at its object)."""
        p = tuple(path)
        while True:
            if p in self.key_locs:
                return self.key_locs[p]
            if p in self.locs:
                return self.locs[p]
            if not p:
                return None
            p = p[:-1]


class _Parser:
    def __init__(self, text: str, file: str | None):
        self.text, self.file = text, file
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tokens = []
        self.i = 0
        self.locs: dict = {}
        self.key_locs: dict = {}

    def pos(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def fail(self, offset: int, message: str, hint: str | None = None):
        line, col = self.pos(offset)
        raise SpecError([Diagnostic(ERROR, message, "", self.file, line, col, hint, "json")])

    def tokenize(self) -> None:
        text, n = self.text, len(self.text)
        toks = self.tokens
        append = toks.append
        for m in _TOKEN.finditer(text):          # one match per token: 4 MiB in seconds, not tens of seconds
            kind = m.lastgroup
            if kind != "bad":
                append((kind, m.group(kind), m.start(kind)))
                if len(toks) > MAX_TOKENS:
                    self.fail(m.start(kind), f"spec has more than {MAX_TOKENS:,} JSON tokens",
                              "a spec describes an architecture; use 'repeat' rather than writing layers out")
            else:
                off = m.start(kind)
                bad = text[off:off + 12].split("\n")[0]
                hint = None
                if bad.startswith(("NaN", "Infinity", "-Infinity")):
                    hint = "JSON has no NaN or Infinity; write a finite number"
                elif bad.startswith(("'",)):
                    hint = "JSON strings use double quotes"
                elif bad.startswith(("//", "/*", "#")):
                    hint = "JSON has no comments; put remarks in a \"note\" field"
                elif bad.startswith('"'):
                    hint = "a string must close on the same line; control characters must be escaped"
                self.fail(off, f"invalid JSON at {bad!r}", hint)
        toks.append(("eof", "", n))

    def next(self):
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, value: str):
        kind, text, off = self.next()
        if text != value or kind != "punct":
            got = "end of file" if kind == "eof" else repr(text)
            self.fail(off, f"expected '{value}' but found {got}")

    def string(self, text: str, off: int) -> str:
        s = json.loads(text)
        if "\\u" in text:
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:                      # a lone surrogate escape cannot be printed or saved
                self.fail(off, f"string {text[:20]}... holds an unpaired surrogate escape",
                          "\\ud800-\\udfff escapes must come in pairs")
        return s

    def value(self, path: tuple, depth: int):
        kind, text, off = self.next()
        if depth > MAX_DEPTH:
            self.fail(off, f"JSON nested deeper than {MAX_DEPTH} levels")
        self.locs[path] = self.pos(off)
        if kind == "string":
            return text[1:-1] if "\\" not in text else self.string(text, off)
        if kind == "number":
            if len(text) > 100:                 # int() refuses > 4300 digits; no dimension needs 100
                self.fail(off, f"number {text[:20]}... has {len(text):,} characters", "use a number of sensible size")
            v = float(text) if "." in text or "e" in text or "E" in text else int(text)
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                self.fail(off, f"number {text} is out of range", "use a finite number")
            return v
        if kind == "word":
            return {"true": True, "false": False, "null": None}[text]
        if kind == "punct" and text == "{":
            obj: dict = {}
            if self.tokens[self.i][1] == "}" and self.tokens[self.i][0] == "punct":
                self.i += 1
                return obj
            while True:
                kkind, ktext, koff = self.next()
                if kkind != "string":
                    got = "end of file" if kkind == "eof" else repr(ktext)
                    self.fail(koff, f"expected a quoted key but found {got}",
                              "a trailing comma is not allowed in JSON" if ktext == "}" else None)
                key = ktext[1:-1] if "\\" not in ktext else self.string(ktext, koff)
                if key in obj:
                    first = self.key_locs.get(path + (key,))
                    where = f" (first at line {first[0]}, column {first[1]})" if first else ""
                    self.fail(koff, f"duplicate key {key!r}{where}", "each key may appear once in an object")
                self.key_locs[path + (key,)] = self.pos(koff)
                self.expect(":")
                obj[key] = self.value(path + (key,), depth + 1)
                kind2, text2, off2 = self.next()
                if kind2 == "punct" and text2 == "}":
                    return obj
                if not (kind2 == "punct" and text2 == ","):
                    got = "end of file" if kind2 == "eof" else repr(text2)
                    self.fail(off2, f"expected ',' or '}}' but found {got}")
        if kind == "punct" and text == "[":
            arr: list = []
            if self.tokens[self.i][1] == "]" and self.tokens[self.i][0] == "punct":
                self.i += 1
                return arr
            while True:
                arr.append(self.value(path + (len(arr),), depth + 1))
                kind2, text2, off2 = self.next()
                if kind2 == "punct" and text2 == "]":
                    return arr
                if not (kind2 == "punct" and text2 == ","):
                    got = "end of file" if kind2 == "eof" else repr(text2)
                    self.fail(off2, f"expected ',' or ']' but found {got}")
        got = "end of file" if kind == "eof" else repr(text)
        self.fail(off, f"expected a JSON value but found {got}",
                  "a trailing comma is not allowed in JSON" if text == "]" and kind == "punct" else None)


def parse_text(text: str, file: str | None = None) -> Source:
    if len(text) > MAX_BYTES:
        raise SpecError([Diagnostic(ERROR, f"spec is {len(text):,} characters; the limit is {MAX_BYTES:,}", "",
                                    file, 1, 1, "a spec describes an architecture; weights do not belong in it",
                                    "limit")])
    if not text.strip():
        raise SpecError([Diagnostic(ERROR, "empty spec", "", file, 1, 1, "a spec is a JSON object with 'layers'",
                                    "json")])
    p = _Parser(text, file)
    p.tokenize()
    data = p.value((), 0)
    kind, t, off = p.next()
    if kind != "eof":
        p.fail(off, f"unexpected {t!r} after the end of the JSON document")
    return Source(text, file, data, p.locs, p.key_locs)


def parse_bytes(raw: bytes, file: str | None = None) -> Source:
    if len(raw) > MAX_BYTES:
        raise SpecError([Diagnostic(ERROR, f"spec is {len(raw):,} bytes; the limit is {MAX_BYTES:,}", "", file,
                                    1, 1, "a spec describes an architecture; weights do not belong in it", "limit")])
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError([Diagnostic(ERROR, f"not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}", "", file,
                                    line, col, "save the spec as UTF-8", "encoding")]) from None
    return parse_text(text, file)


def read_file(path: str) -> Source:
    import os
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise SpecError([Diagnostic(ERROR, f"spec is {size:,} bytes; the limit is {MAX_BYTES:,}", "", path,
                                        1, 1, "a spec describes an architecture", "limit")])
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except (OSError, ValueError) as e:                   # ValueError: a NUL in the path
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecError([Diagnostic(ERROR, f"cannot read spec: {why}", "", path, None, None, None, "io")]) \
            from None
    return parse_bytes(raw, path)
