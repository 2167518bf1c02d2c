"""Our Relax graph passes, one per module; ``registry`` names them, ``plan`` orders them per backend."""

from .plan import pass_plan, passes_for
from .registry import PassSpec, all_passes, get_pass, register_pass

__all__ = ["PassSpec", "all_passes", "get_pass", "pass_plan", "passes_for", "register_pass"]
