"""Progress of long steps (cache build, training, fine-tuning, evaluation) that a user can read anywhere.

On a terminal it is a rich progress bar. Elsewhere (a log file, CI, `make demo > log 2>&1`) rich
hides its bar, so a long step would print nothing for minutes; there it prints a plain line
instead, at most every `interval_s` seconds and once at the end:

    fine-tuning: 120/500 (24%), 0:00:41 elapsed, 2.9 steps/s, ETA 0:02:11, loss 0.4123, 93 ex/s

Both go to stderr, so `--json` output on stdout stays clean.
What it is not: logging. It only reports how far a step has come.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 5.0


class StepProgress:
    """Progress over `total` steps; a context manager. `advance` moves it on and updates its fields.

    fields: a format string over the keyword values given to `__init__`/`advance` (e.g.
    "loss {loss:.4f}, {rate:.0f} ex/s"), shown after the counts; empty for none.
    console: the rich Console to write to (default: stderr); the plain mode is chosen when it is not
    a terminal. clock: seconds, monotonic (a parameter so that tests can drive it).
    """

    def __init__(
        self,
        description: str,
        total: int,
        *,
        fields: str = "",
        enabled: bool = True,
        interval_s: float = DEFAULT_INTERVAL_S,
        completed: int = 0,
        unit: str = "steps",
        transient: bool = False,
        console: Any = None,
        clock: Callable[[], float] = time.monotonic,
        **values: Any,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.description, self.total, self.unit = description, total, unit
        self.fields, self.values = fields, values
        self.enabled, self.interval_s, self.transient, self.clock = enabled, interval_s, transient, clock
        self.completed = self._start_completed = completed
        self._console = console
        self._bar: Any = None
        self._plain = False
        self._printed: int | None = None  # `completed` at the last plain line

    def __enter__(self) -> StepProgress:
        if not self.enabled:
            return self
        from rich.console import Console

        console = self._console if self._console is not None else Console(stderr=True)
        self._plain = not (console.is_terminal or console.is_jupyter)
        self._console = console
        self._start = self._last = self.clock()
        if not self._plain:
            self._bar = _rich_bar(console, self.transient)
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.description, total=self.total, completed=self.completed, text=self._text()
            )
        return self

    def advance(self, steps: int = 1, **values: Any) -> None:
        """Move on by `steps` and update the shown field values."""
        self.completed += steps
        self.values.update(values)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, text=self._text())
        elif self.clock() - self._last >= self.interval_s:
            self._print_line()

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif exc[0] is None and self._printed != self.completed:
            self._print_line()  # the final line, whatever the interval

    def line(self) -> str:
        """The plain progress line for the current state."""
        now = self.clock()
        elapsed = now - self._start
        done = self.completed - self._start_completed
        parts = [f"{self.description}: {self.completed}/{self.total}"]
        if self.total > 0:
            parts[0] += f" ({self.completed / self.total:.0%})"
        parts.append(f"{_clock(elapsed)} elapsed")
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            parts.append(f"{rate:.1f} {self.unit}/s")
            if self.completed < self.total:
                parts.append(f"ETA {_clock((self.total - self.completed) / rate)}")
        text = self._text()
        if text:
            parts.append(text)
        return ", ".join(parts)

    def _print_line(self) -> None:
        self._last, self._printed = self.clock(), self.completed
        print(self.line(), file=self._console.file, flush=True)

    def _text(self) -> str:
        try:
            return self.fields.format(**self.values)
        except (KeyError, ValueError, TypeError):
            return ""  # a field not known yet (e.g. no loss before the first step)


def track(
    items: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    enabled: bool = True,
    interval_s: float = DEFAULT_INTERVAL_S,
    unit: str = "steps",
    console: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Iterate over `items`, showing progress as StepProgress does (a transient bar on a terminal)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with StepProgress(
        description, total, enabled=enabled, interval_s=interval_s, unit=unit,
        transient=True, console=console, clock=clock,
    ) as progress:  # fmt: skip
        for item in items:
            yield item
            progress.advance()


def _rich_bar(console: Any, transient: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[text]}"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
