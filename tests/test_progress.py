"""simpersona.progress: the one progress bar of simpersona's own loops (rich, on stderr)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from simpersona.progress import Bar, progress_bar, progress_console, track

PACKAGE = Path(__file__).resolve().parents[1] / "simpersona"


def _file_console() -> tuple[Console, io.StringIO]:
    """A console on a file, as in a pipe, a log file or a Dagster run: not a terminal."""
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=False), out


def test_a_disabled_bar_draws_nothing(capsys) -> None:
    with progress_bar(3, "quiet", enabled=False) as bar:
        assert isinstance(bar, Bar) and not bar.enabled
        bar.advance()
        bar.update(description="still quiet", completed=0)
        bar.note("x", loss="0.1")
    assert list(track([1, 2], "quiet", enabled=False)) == [1, 2]
    assert capsys.readouterr() == ("", "")


def test_off_a_terminal_the_final_state_is_printed_once() -> None:
    console, out = _file_console()
    with progress_bar(4, "vqvae", unit="epochs", console=console) as bar:
        for i in range(4):
            bar.note(loss=f"{1 / (i + 1):.3f}", dead=0)
            bar.advance()
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" not in text  # one line, no redraws
    assert re.search(r"vqvae .* 4/4 epochs .* loss=0\.250, dead=0", text), text


def test_a_transient_bar_leaves_no_bar_off_a_terminal() -> None:
    console, out = _file_console()
    with progress_bar(2, "agents s1", unit="agents", transient=True, console=console) as bar:
        bar.advance(2)
    assert out.getvalue().strip() == ""  # rich ends the line it would have drawn on


def test_phases_fractions_resumes_and_notes() -> None:
    console, out = _file_console()
    with progress_bar(3, "reading csv", completed=1, console=console) as bar:
        bar.advance(0.5)
        bar.advance(1.5)
        bar.note("b.csv")
        bar.update(description="writing lake", completed=3)
    text = out.getvalue()
    assert "writing lake" in text and "3/3" in text and "b.csv" in text and "reading" not in text


def test_track_yields_every_item_and_counts_them() -> None:
    console, out = _file_console()
    assert list(track(["a", "b", "c"], "intent probe", unit="prompts", console=console)) == [
        "a",
        "b",
        "c",
    ]
    assert "3/3 prompts" in out.getvalue()
    console, out = _file_console()
    assert sum(track(iter(range(5)), "no length", console=console)) == 10  # total unknown


def test_bars_nest_on_the_shared_console() -> None:
    assert progress_console() is progress_console()
    assert progress_console().stderr
    console, out = _file_console()
    with progress_bar(2, "outer", console=console) as outer:
        with progress_bar(1, "inner", console=console) as inner:
            inner.advance()
        outer.advance(2)
    text = out.getvalue()
    assert "inner" in text and "outer" in text


def test_simpersona_draws_its_bars_only_through_this_module() -> None:
    """tqdm and rich.progress appear only in simpersona/progress.py (transformers' Trainer
    draws its own tqdm bar; simpersona only switches it with `disable_tqdm`)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "progress.py" and path.parent == PACKAGE:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import) (tqdm|rich\.progress)\b", text, re.MULTILINE):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
