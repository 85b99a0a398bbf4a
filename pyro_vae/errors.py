"""Error types. Every error a user can cause names the problem and the fix."""


class PyroVAEError(Exception):
    """Base class: the CLI prints these as one clear message instead of a traceback."""


class ConfigError(PyroVAEError, ValueError):
    """A config file, a ``--set`` override or a CLI flag is invalid."""


class DataError(PyroVAEError, ValueError):
    """A data set is missing, corrupt, of the wrong shape or outside the likelihood's support."""


class CheckpointError(PyroVAEError, ValueError):
    """A checkpoint or run folder cannot be read or resumed."""


class TrainingError(PyroVAEError, RuntimeError):
    """Training had to stop (a non-finite loss, for example)."""
