"""Progress of long work, shown with rich: each training phase (step / total, members still training,
member-steps/s, ETA) and each evaluation (sets and members done, members/s, ETA); silenced by -q. On a terminal, live
bars that end in one line each; elsewhere (CI logs, `> file`) plain lines, one per chunk or per evaluated set, with
no carriage returns or colour codes. With `record`, the same is kept in a JSON file (WORKDIR/progress.json, quiet or
not) for `fttrace status`.

Rates and ETAs count the members still training only: a member that met its phase's criterion (or diverged) is no
longer computed (PhaseLoop's compaction), so counting it would overstate the rate and the time left. The arithmetic
is fttrace's own (`PhaseRate`), because no display library knows which members train; rich draws it.

`times` keeps where a run's time went, by label: each phase's wall time and, within it, the time its host-side
measurements took (sampling and decoding text, probes: `PhaseLoop`'s `measure`); each evaluation's wall time. A
phase run inside an evaluation (reFT's control is trained there) names it (`within`): its time is also part of the
evaluation's. The runner writes `times` to the manifest (`time`), `fttrace status` prints the shares."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bars, TextColumn, TimeElapsedColumn
from rich.table import Column

from fttrace.engine.results import write_json


def duration(seconds: float | None) -> str:
    """`1h 05m`, `4m 09s`; `?` where unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def rate(per_s: float) -> str:
    """A rate with three significant digits (a tiny CPU run's too), whole numbers from 100 on."""
    return f"{per_s:.0f}" if per_s >= 100 else f"{per_s:.3g}"


def members_of(n: int) -> str:
    return f"{n} member" if n == 1 else f"{n} members"


@dataclasses.dataclass
class PhaseRate:
    """Member-steps of the members that trained, per second of the phase so far, and the time the members still
    training need to reach the budget at that rate (None while no member has trained yet)."""
    members: int
    step: int  # where the phase (or its resume) starts
    member_steps: int = 0
    stopped_at: int | None = None  # the step at which the last member stopped, once none trains

    def chunk(self, step: int, trained: int | None, training: int | None) -> None:
        """A chunk ended at `step`: `trained` members trained in it, `training` still train (None: unknown, with
        several processes: every member counts)."""
        if self.stopped_at is None and (trained == 0 or training == 0):
            self.stopped_at = self.step if trained == 0 else step  # none trained in the chunk: stopped before it
        self.member_steps += (self.members if trained is None else trained) * (step - self.step)
        self.step = step

    def per_s(self, elapsed: float) -> float:
        return self.member_steps / elapsed if elapsed > 0 else 0.0

    def eta(self, elapsed: float, total: int, training: int | None) -> float | None:
        left = (self.members if training is None else training) * (total - self.step)
        if not left:
            return 0.0
        speed = self.per_s(elapsed)
        return left / speed if speed > 0 else None


@dataclasses.dataclass
class EvaluationCount:
    """An evaluation's work: sets of members announced (`expect`) and done, members/s, ETA."""
    label: str
    start: float
    units: int = 0
    members: int = 0
    units_done: int = 0
    members_done: int = 0
    bar: object = None  # its live bar's update, where there is one

    def per_s(self, elapsed: float) -> float:
        return self.members_done / elapsed if elapsed > 0 else 0.0

    def eta(self, elapsed: float) -> float | None:
        speed, left = self.per_s(elapsed), max(self.members - self.members_done, 0)
        return 0.0 if not left else (left / speed if speed > 0 else None)


class Progress:
    def __init__(self, quiet: bool = False, stream=None, record=None, clock=time.perf_counter):
        self.quiet, self.record, self.clock = quiet, record, clock
        stream = stream or sys.stderr
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        # Terminal or not follows the stream alone (not FORCE_COLOR and the like): plain lines wherever it is no
        # terminal. soft_wrap: a line longer than the console is not cut or broken.
        self.console = Console(file=stream, force_terminal=self.tty, force_jupyter=False, soft_wrap=True,
                               highlight=False, markup=False, emoji=False)
        self.live = self.tty and self.console.is_interactive and not quiet  # a dumb terminal gets plain lines
        self.times: dict[str, dict] = {}  # label -> {"kind", "wall_s", "measuring_s" and "within" (phases)}
        self._open: list[EvaluationCount] = []  # the evaluations under way, innermost last
        self._bars: Bars | None = None  # the live bars while any is shown

    def _record(self, **fields) -> None:
        if self.record is not None:
            write_json(self.record, dict(fields, updated=time.time()))

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def warn(self, message: str) -> None:
        """A line the user must see even in quiet mode (on stderr): something found wrong and worked around."""
        print(message, file=sys.stderr, flush=True)  # (while bars are live on stderr, rich prints it above them)

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

    # -- live bars (a terminal only)

    @contextlib.contextmanager
    def _bar(self, label: str):
        """A live bar for `label` while the block runs (None where there are no live bars); the bars are drawn
        while any is open, and vanish when the last one ends (each leaves its final line)."""
        if not self.live:
            yield None
            return
        if self._bars is None:
            self._bars = Bars(TextColumn("{task.description}", table_column=Column(no_wrap=True)),
                              BarColumn(bar_width=20), MofNCompleteColumn(),
                              TextColumn("{task.fields[detail]}", table_column=Column(no_wrap=True)),
                              TimeElapsedColumn(),
                              console=self.console, transient=True, refresh_per_second=4, get_time=self.clock)
            self._bars.start()
        bars = self._bars
        task = bars.add_task(label, total=None, detail="")
        try:
            yield lambda detail, completed, total: bars.update(task, detail=detail, completed=completed, total=total,
                                                               refresh=True)
        finally:
            bars.remove_task(task)
            if not bars.tasks:
                bars.stop()
                self._bars = None

    def _show(self, bar, label: str, done: str, detail: str, completed: float, total: float) -> None:
        """One update: the bar's (`completed` of `total`, then `detail`), or a plain line (`done`, then `detail`)."""
        if self.quiet:
            return
        if bar is not None:
            bar(detail, completed, total)
        else:
            self.console.print(f"{label:<24} {done}, {detail}")

    # -- evaluations

    @contextlib.contextmanager
    def evaluation(self, label: str, timed: bool = True):
        """Brackets an evaluation: a line when it starts, its sets of members as they are done (`expect` announces
        them, `done` counts one), and one with its time. timed=False: measurements a training phase makes at an
        eval step (their time is the phase's `measuring_s`): no line when they start, no entry in `times`."""
        count = EvaluationCount(label, self.clock())
        if timed:
            self.say(f"{label:<24} ...")
        self._record(stage=label, kind="evaluation", members=0, members_done=0, units=0, units_done=0,
                     started=time.time())
        self._open.append(count)
        try:
            with self._bar(label) as bar:
                count.bar = bar
                yield count
        finally:
            self._open.pop()
        elapsed = self.clock() - count.start
        if timed:
            self.times[label] = dict(kind="evaluation", wall_s=round(elapsed, 3))
        sets = (f", {members_of(count.members_done)} in {count.units_done} set{'s' * (count.units_done != 1)}"
                if count.units_done else "")
        self.say(f"{label:<24} done in {elapsed:.1f}s{sets}")

    def expect(self, units: int, members: int) -> None:
        """The evaluation under way will evaluate `units` more sets of `members` members in all (none under way:
        nothing to count)."""
        if self._open:
            self._open[-1].units += units
            self._open[-1].members += members

    def done(self, members: int) -> None:
        """The evaluation under way has evaluated one more set, of `members` members."""
        if not self._open:
            return
        count = self._open[-1]
        count.units_done += 1
        count.members_done += members
        count.units, count.members = max(count.units, count.units_done), max(count.members, count.members_done)
        elapsed = self.clock() - count.start
        per_s, eta = count.per_s(elapsed), count.eta(elapsed)
        self._record(stage=count.label, kind="evaluation", members=count.members, members_done=count.members_done,
                     units=count.units, units_done=count.units_done, members_per_s=round(per_s, 3),
                     eta_s=None if eta is None else round(eta, 1))
        self._show(count.bar, count.label, f"members {count.members_done}/{count.members}",
                   f"set {count.units_done}/{count.units} ({members_of(members)}), {rate(per_s)} members/s, "
                   f"ETA {duration(eta)}", count.members_done, count.members)

    # -- training phases

    @contextlib.contextmanager
    def phase(self, label: str, members: int, first_step: int = 0):
        """Brackets a training phase; yields an `on_chunk(step, total, seconds, training=, trained=, measuring=)`
        callback for `PhaseLoop.run`. `first_step`: where a resumed phase goes on from (the rate and the ETA count
        only the steps taken since)."""
        start, counted = self.clock(), PhaseRate(members, first_step)
        within = {"within": self._open[-1].label} if self._open else {}
        last = []

        def on_chunk(step: int, total: int, seconds: float, training: int | None = None,
                     trained: int | None = None, measuring: float = 0.0, batch: int | None = None) -> None:
            """`trained`: how many members trained in the chunk, `training`: how many still train after it (the
            others met their criterion or diverged); `measuring`: seconds of host-side measurements so far;
            `batch`: members trained together (shown where fewer than all)."""
            elapsed = self.clock() - start
            counted.chunk(step, trained, training)
            per_s, eta = counted.per_s(elapsed), counted.eta(elapsed, total, training)
            self.times[label] = dict(kind="phase", wall_s=round(elapsed, 3), measuring_s=round(measuring, 3), **within)
            self._record(stage=label, kind="phase", step=step, steps=total, members=members, training=training,
                         member_steps_per_s=round(per_s, 1), eta_s=None if eta is None else round(eta, 1),
                         stopped_at=counted.stopped_at, member_batch=batch)
            still = members_of(members) if training is None else f"{training} of {members_of(members)} training"
            still += f" in batches of {batch}" if batch and batch < members else ""
            detail = f"{still}, {rate(per_s)} member-steps/s, ETA {duration(eta)}"
            if counted.stopped_at is not None and counted.stopped_at < total:
                detail += f"; every member stopped by step {counted.stopped_at}"
            last[:] = [f"step {step}/{total}, {detail}"]
            self._show(bar, label, f"step {step}/{total}", detail, step, total)

        with self._bar(label) as bar:
            yield on_chunk
        if bar is not None and last and not self.quiet:
            self.console.print(f"{label:<24} {last[0]}")  # the bar vanishes: its last state stays as a line
