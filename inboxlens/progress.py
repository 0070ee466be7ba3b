"""One progress bar for the long admin commands (``keys rewrap``, ``harvest --once``).

It draws on stderr, redrawn in place only when stderr is a terminal: redirected to
a file or a journal, a bar is a stream of carriage returns nobody reads, so there it
writes its last state once, as one line, when it finishes. stdout stays for the
command's result.
"""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30  # characters of bar
LABEL = 20  # characters of label: longer ones are cut, so the bar does not move


class ProgressBar:
    """``show`` redraws one line in place; ``finish`` ends it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.drawn = False
        self.last = ""

    def show(self, label: str, done: int, total: int, detail: str = "") -> None:
        self.last = render(label, done, total, detail)
        if not self.stream.isatty():
            return
        self.stream.write("\r" + self.last)
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        """Move past the bar, if one was drawn, so what follows starts on its own line."""
        if self.drawn or self.last:
            self.stream.write("\n" if self.drawn else self.last + "\n")
            self.stream.flush()
        self.drawn, self.last = False, ""


def render(label: str, done: int, total: int, detail: str = "") -> str:
    """``label [#####     ] done/total detail``; an empty total is a full bar (nothing to do)."""
    filled = min(WIDTH, WIDTH * done // total) if total > 0 else WIDTH
    text = f"{label[:LABEL]:<{LABEL}} [{'#' * filled}{' ' * (WIDTH - filled)}] {done}/{total}"
    return f"{text} {detail}" if detail else text
