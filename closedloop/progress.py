"""Progress display for long operations (replay, calibrate, bench, report), on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int, description: str, *, disable: bool = False) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a rich progress bar on a terminal, a line every ~5 s otherwise.

    The display refreshes on its own schedule, so calling ``advance`` per chunk stays cheap.
    """
    if disable:
        yield lambda n: None
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            done = [0, 0]

            def advance(n: int) -> None:
                done[0] += n
                if done[0] - done[1] >= total // 200 + 1:
                    bar.update(task, completed=done[0])
                    done[1] = done[0]

            yield advance
        return
    state = {"done": 0, "last": time.monotonic()}

    def advance_plain(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        if now - state["last"] >= 5.0:
            state["last"] = now
            print(f"{description}: {100.0 * state['done'] / max(total, 1):.0f}%", file=sys.stderr, flush=True)

    yield advance_plain
