"""Step 1 of a tuning run: the database folder, the fused module, its tasks, their search spaces.

Everything the later steps (baselines, search, verify, in-model check) share is
gathered in one ``Prepared`` value, so no step reaches back into another's locals.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AutoGLMError
from ..native_log import native_stderr_to_file
from . import database as dbmod
from .progress import ProgressLine
from .result import skipped_json


@dataclass
class Prepared:
    """A run's fixed context: where records go, which kernels are tuned and which are not (and why)."""

    spec: object  # targets.TargetSpec
    tvm_target: object
    work_dir: Path
    line: ProgressLine
    build: object  # pipeline.RelaxBuild of the module compile would schedule
    keep: list  # tasks.Task to tune, costliest first
    skipped: list[dict]  # result rows of the tasks left to their default schedules
    database: object  # the open JSONDatabase
    records_before: int
    start_wall: float = field(default_factory=time.monotonic)

    @property
    def native_log(self) -> Path:
        return self.work_dir / "logs" / "tvm_native.log"

    def say(self, text: str) -> None:
        """A progress message that is always shown (not rate-limited)."""
        self.line.update(text, force=True)


def open_work_dir(tuning_db, spec) -> Path:
    """The database folder (``tuning_db`` or the target's default), created with its ``logs/``."""
    work_dir = Path(tuning_db) if tuning_db else dbmod.default_dir(spec.name)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "logs").mkdir(exist_ok=True)
    except OSError as err:
        raise AutoGLMError(f"cannot create tuning database folder {work_dir}: {err.strerror}") from None
    return work_dir


def build_for_tuning(model, spec, opt_level, input_shapes, quantize: str):
    """The fused module whose kernels compile would schedule, at the requested precision.

    """
    from ..pipeline import compile_model

    return compile_model(model, spec, opt_level, input_shapes, quantize=quantize or "none", until="relax").build


def prepare(model, spec, work_dir: Path, line: ProgressLine, *, opt_level: int, input_shapes, quantize: str,
            min_share: float, max_tasks: int | None, use_shipped_schedules: bool, start_wall: float) -> Prepared:
    """Builds the module, extracts and ranks its tasks, opens the database (seeded from shipped schedules)."""
    from . import tasks as taskmod

    tvm_target = spec.tvm_target()
    line.update("building the fused module ...", force=True)
    build = build_for_tuning(model, spec, opt_level, input_shapes, quantize)
    keep, skip = taskmod.extract(build.mod, tvm_target, min_share=min_share)
    if max_tasks is not None:
        keep, rest = taskmod.top_tasks(keep, max_tasks)
        skip = sorted(skip + rest, key=lambda t: -t.share)
    database = dbmod.open_db(work_dir)
    if use_shipped_schedules and opt_level >= 3:
        _seed_from_shipped(spec, database, keep)
    return Prepared(spec, tvm_target, work_dir, line, build, keep, [skipped_json(t) for t in skip], database,
                    dbmod.count_records(work_dir), start_wall)


def _seed_from_shipped(spec, database, keep) -> None:
    """Start from the shipped schedules: their best records seed the search."""
    from .apply import shipped_databases

    for shipped in shipped_databases(spec):
        try:
            src = dbmod.open_db(shipped, create=False)
            dbmod.copy_best(src, database, [t.mod for t in keep], k=1)
        except Exception:  # noqa: BLE001 - a bad shipped DB must not stop tuning
            continue


def cores_of(spec) -> int:
    """Build/measure workers: the target's ``num-cores``, else this host's CPUs."""
    cores = int(spec.tvm_config.get("num-cores", 0) or 0) if hasattr(spec, "tvm_config") else 0
    return cores or os.cpu_count() or 1


def tune_contexts(prep: Prepared, seed: int, rule_space: bool) -> tuple[list, list]:
    """(MetaSchedule TuneContexts, task weights) of the kernels MetaSchedule can search.

    Some fused kernels (e.g. GEMM + reshape/transpose epilogues) make MetaSchedule's default
    rules fail while building the design space, which aborts the whole scheduler. They are
    found here, moved from ``prep.keep`` to ``prep.skipped`` and left to the default schedules.
    """
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    from .fastimport import preload_tensor_intrin
    from .rule_space import union_space

    _quiet_ms_console()
    prep.say("loading MetaSchedule intrinsics ...")
    preload_tensor_intrin()
    # One search thread: MetaSchedule hands population samples to threads dynamically, each
    # with its own random state, so with more threads the same seed gives different choices.
    # Building and measuring (the costly part) still use every core.
    # rule_space: the search also walks our Matmul rule's decisions (tuning/rule_space.py);
    # off by default: on bert-base FFN kernels it found nothing faster than the default rule.
    contexts, weights = extracted_tasks_to_tune_contexts(
        [t.extracted for t in prep.keep], work_dir=str(prep.work_dir), seed=seed, num_threads=1,
        space=union_space(prep.tvm_target) if rule_space else "post-order-apply",
    )
    _drop_ms_console_handlers()
    good = []
    for i, ctx in enumerate(contexts):
        try:
            with native_stderr_to_file(prep.native_log):
                spaces = ctx.generate_design_space()
            if spaces:
                good.append(i)
                continue
            why = "no design space"
        except Exception as err:  # noqa: BLE001 - any failure here means "not tunable by MetaSchedule"
            why = type(err).__name__
        prep.skipped.append(skipped_json(prep.keep[i], f"MetaSchedule cannot build a search space ({why})"))
    if len(good) < len(contexts):
        prep.say(f"{len(contexts) - len(good)} kernel(s) not tunable by MetaSchedule; they keep default schedules")
    prep.keep = [prep.keep[i] for i in good]
    return [contexts[i] for i in good], [weights[i] for i in good]


def _drop_ms_console_handlers() -> None:
    """MetaSchedule's loggers were just configured; keep their files, drop the console."""
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("tvm.s_tir.meta_schedule")]:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)


def _quiet_ms_console() -> None:
    # create_loggers gives the console handler the global logger's level: WARNING keeps
    # the per-task INFO/DEBUG chatter in the log files only.
    lg = logging.getLogger("tvm.s_tir.meta_schedule")
    # It also re-lists the handlers already there by name and fails on an unnamed one
    # (a second tune() in one process); start each run from a clean logger.
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()
    if lg.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
        lg.setLevel(logging.WARNING)
