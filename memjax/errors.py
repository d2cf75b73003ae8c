"""User-facing errors: one clear line that names the bad value and the fix."""


class MemjaxError(Exception):
    """An error caused by input the user can fix (config, data, run directory).

    `memjax.main` prints its message as a single line and exits non-zero, without
    a traceback. The message must name the offending value and say how to fix it.
    """


class ConfigError(MemjaxError):
    """A config value is invalid."""


class DataNotFoundError(MemjaxError):
    """A data set is not available locally; the message gives the commands that fix it."""


class RunDirectoryError(MemjaxError):
    """The work directory holds something that must not be overwritten."""


class FileSystemError(MemjaxError):
    """Writing to the work directory failed (full, read-only, ...); the message says where and why.

    `memjax.main` exits with status 4. Nothing half-written looks complete, so
    rerunning the same command once the cause is fixed resumes the run.
    """


class DivergedError(MemjaxError):
    """A replica's loss or parameters became non-finite."""
