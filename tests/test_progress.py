"""revmux.progress: a rich bar on a terminal; elsewhere a plain line every interval_s seconds and one at the end."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from revmux.progress import StepProgress, track
from revmux.train.cache import build_cache
from tests.train import one_thread, toy_task, toy_view


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, force_jupyter=False, width=120), out


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_not_a_terminal_prints_a_line_per_interval_and_one_at_the_end():
    console, out = _console(terminal=False)
    clock = FakeClock()
    fields = "loss {loss:.2f}"
    with StepProgress("train", 12, fields=fields, interval_s=5.0, console=console, clock=clock) as bar:
        for step in range(12):
            clock.now += 1.0
            bar.advance(loss=1.0 / (step + 1))
            if step == 3:
                assert _lines(out) == []  # 4 s in: nothing yet
    assert _lines(out) == [
        "train: 5/12 (42%), 0:00:05 elapsed, 1.0 steps/s, ETA 0:00:07, loss 0.20",
        "train: 10/12 (83%), 0:00:10 elapsed, 1.0 steps/s, ETA 0:00:02, loss 0.10",
        "train: 12/12 (100%), 0:00:12 elapsed, 1.0 steps/s, loss 0.08",
    ]


def test_the_interval_is_a_parameter_and_resumed_progress_counts_from_where_it_was():
    console, out = _console(terminal=False)
    clock = FakeClock()
    with StepProgress(
        "rows", 100, unit="rows", completed=40, interval_s=30.0, console=console, clock=clock
    ) as bar:
        for _ in range(6):
            clock.now += 10.0
            bar.advance(10)
    assert _lines(out) == [
        "rows: 70/100 (70%), 0:00:30 elapsed, 1.0 rows/s, ETA 0:00:30",
        "rows: 100/100 (100%), 0:01:00 elapsed, 1.0 rows/s",
    ]


def test_a_terminal_gets_the_rich_bar_and_no_plain_lines():
    console, out = _console(terminal=True)
    clock = FakeClock()
    with StepProgress(
        "train", 12, fields="loss {loss:.2f}", interval_s=5.0, console=console, clock=clock
    ) as bar:
        for _ in range(12):
            clock.now += 1.0
            bar.advance(loss=0.5)
    text = out.getvalue()
    assert "12/12" in text  # the bar's M/N column
    assert "elapsed" not in text and "steps/s" not in text


def test_disabled_prints_nothing():
    console, out = _console(terminal=False)
    with StepProgress("train", 3, enabled=False, console=console) as bar:
        for _ in range(3):
            bar.advance()
    assert out.getvalue() == ""


def test_a_failed_step_prints_no_final_line():
    console, out = _console(terminal=False)
    with pytest.raises(RuntimeError), StepProgress("train", 3, console=console, clock=FakeClock()) as bar:
        bar.advance()
        raise RuntimeError("boom")
    assert out.getvalue() == ""


def test_track_yields_every_item_and_reports_at_the_end():
    console, out = _console(terminal=False)
    assert list(track(range(4), "groupings", console=console, clock=FakeClock())) == [0, 1, 2, 3]
    assert _lines(out) == ["groupings: 4/4 (100%), 0:00:00 elapsed"]


def test_a_field_unknown_before_the_first_step_is_left_out():
    bar = StepProgress("train", 2, fields="loss {loss:.2f}", clock=FakeClock())
    with bar:
        assert "loss" not in bar.line()


def test_the_cache_build_prints_its_line_when_stderr_is_not_a_terminal(minilm_path, tmp_path, capsys):
    with one_thread():
        view = toy_view(minilm_path, steps=1)  # any teacher will do
        build_cache(view, 1, toy_task(rows=20), 16, cache_root=tmp_path, batch_size=8, progress=True)
    err = capsys.readouterr().err
    assert "prefill cache: 20/20 (100%)" in err
