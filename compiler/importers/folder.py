"""A checkpoint folder (config.json + safetensors) as `omnic import-hf DIR` and `omnic build --weights-from DIR`
read it: its config, the spec it imports to, and the key map its weights load through.

  read_config(src)            the config dict of a folder (its config.json) or of a config file
  spec_of_folder(src, name)   the spec: transformers configs (`model_type`) through compiler/importers/hf.py,
                              nanoVLM configs (`vit_architecture` / `lm_base_vocab_size`) through nanovlm.py
  key_map_of_folder(src)      the key map of the folder's weights (compiler/importers/keymaps.py)
  write_spec(spec, out, force)  the spec as JSON, atomically; an existing file only with force
Errors are FolderError (a ValueError) naming the file and what was expected. Torch-free.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional


class FolderError(ValueError):
    """A checkpoint folder or config that cannot be imported; the message names the file."""


def config_path(src: str) -> str:
    path = os.path.join(src, "config.json") if os.path.isdir(src) else src
    if not os.path.isfile(path):
        raise FolderError(f"{src}: no config.json" if os.path.isdir(src) else f"{src}: no such file")
    return path


def read_config(src: str) -> dict[str, Any]:
    path = config_path(src)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise FolderError(f"{path}: cannot read the config: {e}")
    if not isinstance(cfg, dict):
        raise FolderError(f"{path}: a config.json is a JSON object")
    return cfg


def _is_nanovlm(cfg: dict) -> bool:
    return "model_type" not in cfg and ("vit_architecture" in cfg or "lm_base_vocab_size" in cfg)


def spec_of_folder(src: str, name: Optional[str] = None) -> dict[str, Any]:
    """The spec of a folder's (or a file's) config; `name` overrides the name the config gives."""
    cfg = read_config(src)
    try:
        if _is_nanovlm(cfg):
            from .nanovlm import spec_from_nanovlm_config
            return spec_from_nanovlm_config(cfg, name=name or cfg.get("hf_repo_name") or "nanoVLM")
        from .hf import spec_from_hf_config
        return spec_from_hf_config(cfg, name=name)
    except ValueError as e:
        raise FolderError(f"{config_path(src)}: {e}")


def key_map_of_folder(src: str) -> list:
    """The key map of the weights in folder `src`, chosen by its config.json."""
    cfg = read_config(src)
    if _is_nanovlm(cfg):
        from .nanovlm import nanovlm_key_map
        return nanovlm_key_map()
    from .keymaps import key_map
    mt = cfg.get("model_type")
    try:
        return key_map(mt)
    except ValueError as e:
        raise FolderError(f"{config_path(src)}: model_type {mt!r}: {e}")


def write_spec(spec: dict, out: str, force: bool = False) -> None:
    """Write `spec` to `out` (indent 2) through a temporary file; an existing `out` only with `force`."""
    if os.path.exists(out) and not force:
        raise FolderError(f"{out} exists; pass --force to overwrite it")
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def default_out(spec: dict) -> str:
    """`<last part of the spec's name>.json` in the current folder."""
    base = os.path.basename(str(spec.get("name", "model")).rstrip("/")) or "model"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in base) + ".json"
