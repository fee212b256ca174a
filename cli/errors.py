"""Turning exceptions into one-line messages and exit codes."""
from __future__ import annotations

import sys
import traceback

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def report(err: BaseException, debug: bool) -> int:
    from experiments.errors import UserError

    if debug:
        traceback.print_exception(err)
    if isinstance(err, KeyboardInterrupt):
        print("nnrun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, UserError):
        print(f"nnrun: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    first = one_line((str(err).strip().splitlines() or [""])[0])
    print(f"nnrun: error: {type(err).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
    return EXIT_FAILED


def one_line(text: str) -> str:
    """The message as one terminal line: control and invisible characters that came from
    the user's input (a newline or carriage return in an override) are shown escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
