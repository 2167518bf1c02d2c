"""Sizes shared by the generation tests (a module of its own: ``conftest`` names clash across test folders)."""

MAX_CONTEXT = 80
PREFILL_CHUNK = 16
ARCHS = ("gpt-neox", "gpt2", "llama")
