"""Error types. Every error a user can cause names the problem and the fix."""

import os
import sys
import warnings


class PyroVAEError(Exception):
    """Base class: the CLI prints these as one clear message instead of a traceback."""


class ConfigError(PyroVAEError, ValueError):
    """A config file, a ``--set`` override or a CLI flag is invalid."""


class DataError(PyroVAEError, ValueError):
    """A data set is missing, corrupt, of the wrong shape or outside the likelihood's support."""


class CheckpointError(PyroVAEError, ValueError):
    """A checkpoint or run folder cannot be read or resumed."""


def not_a_run_folder(path: "os.PathLike[str]") -> CheckpointError:
    """The error for a path given as a run folder that holds no run (no config.yaml): a file in a
    run folder (its checkpoint, its config) names the folder to pass instead."""
    if os.path.isfile(path):
        return CheckpointError(f"{path} is a file; pass the run folder that holds it ({os.path.dirname(path) or '.'}), as "
                               "`pyro-vae train` wrote it.")
    return CheckpointError(f"{path} is not a run folder (no config.yaml); pass the folder `pyro-vae train` wrote.")


class EstimateError(PyroVAEError, RuntimeError):
    """An estimate came out as no number (NaN or infinite), or could not be written."""


class TrainingError(PyroVAEError, RuntimeError):
    """Training had to stop (a non-finite loss, for example). ``reason`` is what happened, without
    the advice the message adds."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


_PREFIX = "pyro-vae: "
_DECORATORS = ("contextlib.py", "functools.py")  # the standard library's wrappers that pyro-vae is called through


def warn(message: str, category: type = UserWarning) -> None:
    """Warn with ``message`` (starting with ``pyro-vae: ``), attributed to the first caller outside
    pyro-vae, torch and Pyro: the line of the user's script or the command line."""
    internal = tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                     for module in (sys.modules[__package__], sys.modules.get("torch"), sys.modules.get("pyro"))
                     if module is not None and getattr(module, "__file__", None))
    level, frame = 2, sys._getframe(1)
    while frame is not None and (os.path.abspath(frame.f_code.co_filename).startswith(internal)
                                 or os.path.basename(frame.f_code.co_filename) in _DECORATORS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def one_line_warnings() -> None:
    """Print pyro-vae's own warnings (their text starts with ``pyro-vae:``) as one line, as its
    errors are printed; others (torch's, Pyro's) keep Python's format, with the line they come
    from. For processes that are ours (the command, the examples), not for library users."""
    python_format = getattr(warnings.formatwarning, "python_format", warnings.formatwarning)

    def format_warning(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
        text = str(message)
        if text.startswith(_PREFIX):
            return f"pyro-vae: warning: {text[len(_PREFIX):]}\n"
        return python_format(message, category, filename, lineno, line)

    format_warning.python_format = python_format  # type: ignore[attr-defined]  # installing twice is harmless
    warnings.formatwarning = format_warning
