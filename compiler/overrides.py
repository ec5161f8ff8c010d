"""The override pass: `--set KEY=VALUE` and `compile(spec, overrides)` set values in the parsed spec by path
(`layers[4].params.num_experts`, `context`, or `<layer id>.<param>`), before it is validated. A path that does not
exist is an error naming it (with the layer ids near it), never a new key.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from .diagnostics import Diagnostics, did_you_mean

_SEG = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

def apply_overrides(data: Any, overrides: dict[str, Any], diag: Diagnostics) -> Any:
    """Set values by path: `layers[4].params.num_experts`, `context`, or `<layer id>.<param>` (into its params)."""
    if not overrides:
        return data
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        segs: list = [int(m.group(2)) if m.group(2) else m.group(1) for m in _SEG.finditer(key)]
        if not segs or not isinstance(data, dict):
            diag.error((), f"override {key!r}: empty or unusable path", code="override")
            continue
        if segs[0] not in data and isinstance(data.get("layers"), list):
            # a layer id, which may itself be dotted (`decoder.blocks`): the longest prefix of the key that names a
            # layer, then `<param>` or `params.<param>` (or a layer key: repeat, frozen, inputs, type, include)
            ids = {l.get("id"): i for i, l in enumerate(data["layers"]) if isinstance(l, dict)
                   and isinstance(l.get("id"), str)}
            idx = n = None
            for n in range(len(segs), 0, -1):
                if all(isinstance(s, str) for s in segs[:n]) and ".".join(segs[:n]) in ids:
                    idx = ids[".".join(segs[:n])]
                    break
            if idx is None:
                head = key.split("[")[0].split("=")[0]
                near = [i for i in ids if head.startswith(i.split(".")[0] + ".") or i.startswith(segs[0] + ".")]
                diag.error((), f"override {key!r}: no top-level key or layer id is a prefix of it",
                           did_you_mean(".".join(s for s in segs[:2] if isinstance(s, str)), list(ids))
                           or ("layer ids starting so: " + ", ".join(near[:8]) if near else
                               "layer ids: " + ", ".join(list(ids)[:12]) if ids else "the spec's layers have no ids"),
                           code="override")
                continue
            rest = segs[n:]
            layer = data["layers"][idx]
            in_params = isinstance(layer.get("params"), dict) and rest and rest[0] in layer["params"]
            if rest and rest[0] != "params" and (rest[0] not in ("repeat", "frozen", "inputs", "type", "include")
                                                 or rest[0] not in layer and in_params):   # the seed's params.repeat
                rest = ["params"] + rest
            segs = ["layers", idx] + rest
        cur = data
        ok = True
        for s in segs[:-1]:
            if isinstance(cur, dict):
                cur = cur.setdefault(s, {}) if not isinstance(s, int) else None
            elif isinstance(cur, list) and isinstance(s, int) and 0 <= s < len(cur):
                cur = cur[s]
            else:
                cur = None
            if cur is None:
                ok = False
                break
        last = segs[-1]
        if not ok or (isinstance(cur, list) and not (isinstance(last, int) and 0 <= last < len(cur))) or \
                not isinstance(cur, (dict, list)):
            diag.error((), f"override {key!r}: path does not exist in the spec", code="override")
            continue
        cur[last] = value
    return data

