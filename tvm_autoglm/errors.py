"""Errors reported as one line, and the one place that turns any exception into one.

Two kinds, told apart by the exit code so that tests and fuzzing can separate a
bad model from a compiler bug:

- ``AutoGLMError`` and its user-error subclasses: a problem with the user's
  input (bad file, unsupported op, bad flag, bad run-time input). Exit 2.
- ``InternalError``: something failed *after* the input was accepted (the
  support check passed) - in import, our passes, scheduling, codegen. That is
  our bug, not the user's: "internal compiler error in <stage>: ... please
  report". Exit 3.

The CLI prints either as one line on stderr; it never shows a traceback from
deep inside TVM (``AUTOGLM_DEBUG=1`` does).
"""

from __future__ import annotations

import contextlib
import re


class AutoGLMError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class ModelLoadError(AutoGLMError):
    """The ONNX file is missing, truncated, or not ONNX."""


class UnsupportedModelError(AutoGLMError):
    """The model uses ops the frontend cannot convert."""


class TargetError(AutoGLMError):
    """Unknown or unusable target."""


class InputError(AutoGLMError):
    """Inputs given at run time do not match the manifest."""


class ArtifactError(AutoGLMError):
    """A compiled artifact is missing, tampered with, or inconsistent."""


class CompileError(AutoGLMError):
    """The user's request cannot be built as given (names what to change), e.g. a symbolic output shape."""


class DeviceError(AutoGLMError):
    """The artifact needs a device this machine does not have."""


class InternalError(AutoGLMError):
    """A compiler bug: a stage failed on input that the checks had accepted. Exit code 3.

    It subclasses ``AutoGLMError`` so that every front end that already prints
    one line for our errors prints this one too; code that must tell a bug from
    a bad model (the fuzzer) checks ``isinstance(err, InternalError)`` first.
    """

    exit_code = 3

    def __init__(self, stage: str, detail: str, *, hint: str | None = None):
        super().__init__(f"internal compiler error in {stage}: {detail}", hint=hint)
        self.stage = stage
        self.detail = detail

    def one_line(self) -> str:
        extra = f"; {' '.join(self.hint.split())}" if self.hint else ""
        return f"{' '.join(self.message.split())} (please report it{extra}; AUTOGLM_DEBUG=1 shows the traceback)"


class ScheduleRuleWarning(UserWarning):
    """A default schedule rule raised (or produced a schedule that does not lower) on a kernel.

    The kernel still builds - with the next rule's, usually slower, schedule - so this is a
    warning for users; the test suite runs with ``AUTOGLM_STRICT_RULES=1``, which raises instead.
    """


#: Lines that open a TVMScript dump inside an error message (TVM appends the offending IR).
_DUMP_START = ("# from tvm.script", "# Metadata omitted", "from tvm.script", "@I.ir_module", "@R.function", "@T.prim_func", "# from tvm.tirx")
#: Lines of a Python/C++ traceback rather than of the message.
_TRACE = ("File ", "Traceback", "at ", "^", "~")
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception)\s*:\s*\S")
_CHECK = re.compile(r"check failed", re.IGNORECASE)
#: Relax type-inference errors start with the repr of the whole op ("In ir.Op(span=..., name="relax.multiply", ...)").
_OP_REPR = re.compile(r'ir\.Op\(.*?name="([\w.]+)".*?support_level=\d+\)')
MAX_LINE = 400


def error_summary(err: BaseException) -> str:
    """The one line of ``err`` that says what failed, never a TVMScript dump or a traceback frame.

    TVM errors put the reason first ("Check failed: (cond) is false: msg") and
    often append the IR they failed on; old-style TVM and nested Python errors
    end with "SomeError: msg" after the traceback frames. Preference: the first
    "check failed" line, else the last "XError: msg" line, else the first line
    of text; all before the first TVMScript dump line.
    """
    if isinstance(err, AutoGLMError):
        return err.one_line()
    lines = []
    for raw in str(err).splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(_DUMP_START):
            break
        if raw[:1].isspace() and lines:  # indented: a traceback frame body or IR, not a message line
            continue
        if line.startswith(_TRACE):
            continue
        lines.append(line)
    if not lines:
        return type(err).__name__
    chosen = next((line for line in lines if _CHECK.search(line)), None)
    if chosen is None:
        chosen = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), lines[0])
    return _OP_REPR.sub(r"\1", chosen)[:MAX_LINE]


def describe(err: BaseException) -> str:
    """``"ErrorType: the line that says what failed"``: how test harnesses (difftest, conformance) record an outcome."""
    return f"{type(err).__name__}: {error_summary(err)}"[:MAX_LINE]


def as_internal(stage: str, err: BaseException, *, hint: str | None = None) -> AutoGLMError:
    """``err`` as the one-line error to report: our own errors unchanged, anything else an ``InternalError``."""
    if isinstance(err, AutoGLMError):
        return err
    return InternalError(stage, f"{type(err).__name__}: {error_summary(err)}", hint=hint)


@contextlib.contextmanager
def stage_errors(stage: str, *, hint: str | None = None):
    """Within the block, an exception that is not already ours becomes an ``InternalError`` naming ``stage``."""
    try:
        yield
    except AutoGLMError:
        raise
    except Exception as err:  # noqa: BLE001 - the point: no raw exception reaches the user
        raise as_internal(stage, err, hint=hint) from err
