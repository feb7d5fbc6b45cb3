"""One family of errors for everything a user can get wrong: bad files, bad settings, bad outputs.

Library code raises a `GroundtuneError` subclass whose message names the file, record or key and says what to
do; the `groundtune` command prints it as one line, `error: <message>`, and exits 2, with no traceback. Each
subclass is also a `ValueError`, so code that caught ValueError before still does.
"""

from __future__ import annotations


class GroundtuneError(ValueError):
    """Bad input or a refused action. The message names the file, record or key and the fix."""


class DataError(GroundtuneError):
    """A data file that cannot be read as asked. The message names the file, the record and the fix."""


class ConfigError(GroundtuneError):
    """A run, sweep or task config that cannot be used as written: the message names the file and the key."""


class OutputError(GroundtuneError):
    """An output that would destroy something (an input, or a non-empty folder without overwrite)."""


class ResumeError(ConfigError):
    """A resume whose settings differ from the run being resumed in a way that changes the result."""


class TrainingDiverged(GroundtuneError):
    """The loss or a trainable parameter became inf or nan; the last good checkpoint is kept."""


class ModelNotFound(GroundtuneError, FileNotFoundError):
    """A model that is not where it was asked for (a path, an embedded name, a package that is not installed).
    Also a FileNotFoundError, as it was before it joined this family, so code that caught that still does."""
