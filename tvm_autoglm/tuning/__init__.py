"""MetaSchedule tuning: databases, the tuning driver and applying records.

``tune`` is imported lazily so ``tvm_autoglm.tuning.apply`` (used by every
compile) does not pull in the tuning machinery.
"""

__all__ = ["tune", "TuneResult", "parse_duration"]


def __getattr__(name):
    if name in __all__:
        from . import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'tvm_autoglm.tuning' has no attribute {name!r}")
