"""Progress of long operations on the `say` lines: a "still …, N s" line while one runs, and its time when it ends."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# Often enough that a terminal or a CI log shows the run is alive, seldom enough not to bury the other lines.
EVERY = 15.0


class Progress:
    """One operation under way. Call it as `say`: a line said through it counts as a sign of life, so the next
    "still" line waits a whole interval after it. `done` is the end line's text (None: no end line); the body may
    change it once it knows more (a size). `seconds` is the time since it began.

    Once the operation is over, lines said through it are dropped: they could only come from threads it left
    running (a converge's hosts after Ctrl-C), and would land below the error or the next operation's lines.
    """

    def __init__(self, say: Callable[[str], None], doing: str | Callable[[], str], done: str | None,
                 clock: Callable[[], float]) -> None:
        self.done = done
        self._say = say
        self._doing = doing
        self._clock = clock
        self._started = self._last = clock()
        self._over = threading.Event()

    def __call__(self, message: str) -> None:
        if self._over.is_set():
            return
        self._last = self._clock()
        self._say(message)

    @property
    def seconds(self) -> float:
        return self._clock() - self._started

    def _tick(self, every: float) -> None:
        wait = every
        # Event.wait returns at once when the operation ends: the thread never delays the caller, nor Ctrl-C.
        while not self._over.wait(wait):
            now = self._clock()
            quiet = now - self._last
            if quiet < every:  # the operation said something meanwhile
                wait = every - quiet
                continue
            doing = self._doing() if callable(self._doing) else self._doing
            if doing and not self._over.is_set():
                self._say(f"still {doing}, {now - self._started:.0f} s")
            self._last = now
            wait = every


@contextmanager
def elapsed(say: Callable[[str], None], doing: str | Callable[[], str], done: str | None = None,
            every: float | None = EVERY, clock: Callable[[], float] = time.monotonic) -> Iterator[Progress]:
    """Run the body as one operation: every `every` seconds without a line from it, say "still {doing}, N s"
    (doing may be a function, asked at each tick, returning "" for no line); when the body returns, say
    "{done} in N s". Plain lines, for a terminal and a CI log alike; every=None says only the end line.

    An exception (Ctrl-C too) stops the ticker and goes on unchanged, without an end line: the error says what
    happened. The ticker is joined before the with statement ends, so it never speaks after the operation.
    """
    progress = Progress(say, doing, done, clock)
    ticker = None
    if every is not None:
        ticker = threading.Thread(target=progress._tick, args=(every,), name="lab-progress", daemon=True)
        ticker.start()
    try:
        yield progress
    finally:
        progress._over.set()
        if ticker is not None:
            ticker.join()  # a line it is saying right now is finished before the operation counts as over
    if progress.done:
        say(f"{progress.done} in {progress.seconds:.1f} s")
