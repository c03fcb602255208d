"""Errors the user can fix, and the one place that turns them into one line and exit code 2.

Every error type of this project derives from :class:`InputError` (a test walks the source tree
and checks it), and its message is a single line naming the file, video, job or flag. Commands run
through :func:`run_command`, which prints such an error as ``error: <line>`` on stderr and returns
2; so does an ``OSError`` (a file that cannot be opened or written names itself). Anything else is
a bug in our code and keeps its traceback.

Jobs use :func:`error_line` too: a failed job's record holds the line, its log the traceback.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Callable

EXIT_INPUT = 2  # the exit code of a bad input, as argparse uses for a bad flag


class InputError(ValueError):
    """Bad input: a malformed file, a missing video, an unknown name, an impossible flag."""


def read_text(path, error: type[InputError] = InputError, what: str = "text file") -> str:
    """A UTF-8 text file's content; a missing, unreadable or binary file is one-line ``error``."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a UTF-8 {what} (undecodable byte at offset {e.start})") from None
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None


def user_error(e: BaseException) -> bool:
    """True for the errors a user fixes by changing the input (printed without a traceback)."""
    return isinstance(e, (InputError, OSError))


def error_line(e: BaseException) -> str:
    """One line for any exception: the message of a user error, ``Type: message`` for the rest."""
    if isinstance(e, OSError) and not isinstance(e, InputError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or type(e).__name__}"
    else:
        text = str(e)
        if not user_error(e):
            text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return one_line(text) or type(e).__name__


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def run_command(func: Callable[..., int | None], *args, **kwargs) -> int:
    """Run one command handler; its return value is the exit code (None = 0). Warnings print as
    ``warning: <message>``, one line each, without the source line Python adds."""
    saved = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {one_line(message)}\n"
    try:
        return func(*args, **kwargs) or 0
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if not user_error(e):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = saved
