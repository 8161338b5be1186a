"""Progress display for long phases (phase, step, members, how many still train and in groups of how many,
member-steps/s counting every member, ETA at the budget) and for evaluations (start, time); silenced by -q. With
`record`, the same is kept in a JSON file (WORKDIR/progress.json, quiet or not) for `fttrace status`.

`times` keeps where a run's time went, by label: each phase's wall time and, within it, the time its host-side
measurements took (sampling and decoding text, probes: `PhaseLoop`'s `measure`); each evaluation's wall time. A
phase run inside an evaluation (reFT's control is trained there) names it (`within`): its time is also part of the
evaluation's. The runner writes `times` to the manifest (`time`), `fttrace status` prints the shares."""
from __future__ import annotations

import contextlib
import io
import sys
import time

from fttrace.engine.results import write_json


class Progress:
    def __init__(self, quiet: bool = False, stream=None, record=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.record = record
        self.times: dict[str, dict] = {}  # label -> {"kind", "wall_s", "measuring_s" and "within" (phases)}
        self._open: list[str] = []  # the evaluations under way, innermost last

    def _record(self, **fields) -> None:
        if self.record is not None:
            write_json(self.record, dict(fields, updated=time.time()))

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        """A line the user must see even in quiet mode (on stderr): something found wrong and worked around."""
        print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def quieted(self):
        """Where quiet, silences what libraries print meanwhile (a dataset builder's lines on stdout, absl's log)."""
        if not self.quiet:
            yield
            return
        import absl.logging
        verbosity = absl.logging.get_verbosity()
        absl.logging.set_verbosity(absl.logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            absl.logging.set_verbosity(verbosity)

    @contextlib.contextmanager
    def step(self, label: str, members: int):
        """Brackets work without steps of its own (an evaluation): a line when it starts and one with its time."""
        self.say(f"{label:<24} {members} members ...")
        self._record(stage=label, kind="evaluation", members=members, started=time.time())
        start = time.perf_counter()
        self._open.append(label)
        try:
            yield
        finally:
            self._open.pop()
        elapsed = time.perf_counter() - start
        self.times[label] = dict(kind="evaluation", wall_s=round(elapsed, 3))
        self.say(f"{label:<24} done in {elapsed:.1f}s")

    def phase(self, label: str, members: int, first_step: int = 0):
        """Returns an `on_chunk(step, total, seconds)` callback for `PhaseLoop.run`; `first_step` is where a resumed
        phase goes on from (rate and ETA count only the steps taken since)."""
        start = time.perf_counter()
        within = {"within": self._open[-1]} if self._open else {}

        def on_chunk(step: int, total: int, seconds: float, training: int | None = None,
                     measuring: float = 0.0, group: int | None = None) -> None:
            """`training`: how many members still train (the others met their criterion or diverged);
            `measuring`: seconds of host-side measurements in the phase so far; `group`: members trained together
            (shown where fewer than all)."""
            elapsed, taken = time.perf_counter() - start, step - first_step
            self.times[label] = dict(kind="phase", wall_s=round(elapsed, 3), measuring_s=round(measuring, 3), **within)
            rate = members * taken / elapsed if elapsed > 0 else 0.0
            eta = elapsed / taken * (total - step)
            self._record(stage=label, kind="phase", step=step, steps=total, members=members, training=training,
                         group=group, member_steps_per_s=round(rate, 1), eta_s=round(eta, 1))
            if self.quiet:
                return
            still = "" if training is None or training == members else f" ({training} training)"
            still += f" in groups of {group}" if group and group < members else ""
            line = (f"{label:<24} step {step:>6}/{total:<6} members {members:<5}{still} "
                    f"{rate:>9.0f} member-steps/s  ETA {eta:6.1f}s")
            end = "\n" if step == total or not self.tty else ""
            print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)

        return on_chunk
