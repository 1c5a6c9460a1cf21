"""The error types for bad user input that the CLI reports as one line, and the one check of an
input path that every reader runs before opening it."""
import stat
from pathlib import Path


class UserError(ValueError):
    """Bad input from the user (file, flag, shape, value); the message says what and how to fix."""


class UndefinedMetric(UserError):
    """A metric has no value for this table (isotropy with n_items <= d, a silhouette of identical
    rows, ...); the message says why. A metric function called alone raises it like any UserError;
    ``collapse_kit.analyze`` reports the metric as null with this message and goes on."""


def check_regular_file(path: Path, what: str = "file") -> None:
    """Refuse, before opening it, anything but an existing regular file (or a link to one).

    A FIFO would block the reader for ever and a device such as /dev/zero never ends.
    Raises FileNotFoundError if ``path`` does not exist, UserError otherwise.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(2, "No such file", str(path)) from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path} is a directory; give the {what} file inside it")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device"
                if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise UserError(f"{path} is {kind}, not a regular file; give the {what} file itself "
                        "(copy a stream to a file first)")
