"""User-facing errors.

Every problem a user can cause (bad file, bad flag, bad input) is raised as an
``AutoGLMError`` with a message that names the thing at fault. The CLI prints
that message as one line on stderr and exits with ``exit_code``; it never shows
a traceback from deep inside TVM for these.
"""


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
    """The compiler could not build the model (names the stage that failed)."""


class DeviceError(AutoGLMError):
    """The artifact needs a device this machine does not have."""
