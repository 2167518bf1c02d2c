"""Our Relax graph passes, one per module; see ``registry`` for how they are ordered."""

from .registry import PassSpec, all_passes, get_pass, passes_for, register_pass

__all__ = ["PassSpec", "all_passes", "get_pass", "passes_for", "register_pass"]
