"""Importers: other frameworks' configs -> omnic specs (torch-free: they read JSON and write JSON)."""
from .hf import IMPORTERS, hf_key_map, import_hf, spec_from_hf_config

__all__ = ["IMPORTERS", "hf_key_map", "import_hf", "spec_from_hf_config"]
