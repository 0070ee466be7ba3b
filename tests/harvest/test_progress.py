"""inboxlens.progress: the one bar (keys rewrap, harvest --once), redrawn only on a terminal."""

from __future__ import annotations

import io

import pytest

from inboxlens.config.loader import from_dict
from inboxlens.errors import ConfigError
from inboxlens.progress import ProgressBar, render


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_bar_redrawn_in_place_then_a_newline():
    out = Terminal()
    bar = ProgressBar(out)
    bar.show("INBOX", 5, 10, "fetched, 2 new")
    bar.show("INBOX", 10, 10, "fetched, 4 new")
    bar.finish()
    assert out.getvalue() == f"\r{render('INBOX', 5, 10, 'fetched, 2 new')}\r{render('INBOX', 10, 10, 'fetched, 4 new')}\n"
    assert "[###############               ] 5/10" in render("INBOX", 5, 10)


def test_a_file_or_pipe_gets_only_the_last_state_as_one_line():
    out = io.StringIO()  # not a terminal
    bar = ProgressBar(out)
    bar.show("rewrap", 1, 2)
    assert out.getvalue() == ""
    bar.show("rewrap", 2, 2)
    bar.finish()
    assert out.getvalue() == render("rewrap", 2, 2) + "\n"
    bar.finish()  # nothing more
    assert out.getvalue().count("\n") == 1


@pytest.mark.parametrize("done, total, filled", [(0, 0, 30), (3, 2, 30), (0, 7, 0)])
def test_the_bar_never_overflows(done, total, filled):
    assert render("x", done, total).count("#") == filled


def test_the_harvest_limits_are_range_checked():
    assert from_dict({}).harvest.max_literal_bytes == 256 * 1024
    with pytest.raises(ConfigError, match="harvest.max_literal_bytes: must be from 1024 to 67108864, not 10"):
        from_dict({"harvest": {"max_literal_bytes": 10}})
    with pytest.raises(ConfigError, match="harvest.max_response_bytes: must be from 8388608 to 1073741824, not 1048576"):
        from_dict({"harvest": {"max_response_bytes": 1 << 20}})  # under max_line_bytes
