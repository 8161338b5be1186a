"""The progress display (fttrace/engine/progress.py): rates and ETAs of the members still training, evaluations' sets,
plain lines off a terminal, live bars on one, and the record `fttrace status` reads."""
import io
import json
import re

from fttrace.engine.progress import PhaseRate, Progress, duration


class Terminal(io.StringIO):
    def isatty(self):
        return True


def ticking(*times):
    clock = iter(times)
    return lambda: next(clock)


def test_rate_and_eta_count_only_the_members_still_training(tmp_path):
    """40 members; after the first 100 steps 30 have met their criterion: the rate counts the member-steps of the
    members that trained, the ETA the members still training; once none trains the ETA is 0 and the phase says
    when the last one stopped (the record too)."""
    record = tmp_path / "progress.json"
    stream = io.StringIO()
    progress = Progress(stream=stream, record=record, clock=ticking(0.0, 2.0, 3.0, 3.5, 3.6))
    with progress.phase("group 0 finetune", 40) as on_chunk:
        on_chunk(100, 1000, 2.0, training=10, trained=40)  # 4000 member-steps in 2 s; 10 x 900 left
        assert json.loads(record.read_text())["eta_s"] == 4.5
        on_chunk(200, 1000, 1.0, training=10, trained=10)  # 5000 in 3 s; 10 x 800 left
        saved = json.loads(record.read_text())
        assert (saved["member_steps_per_s"], saved["eta_s"], saved["training"]) == (1666.7, 4.8, 10)
        on_chunk(300, 1000, 0.5, training=0, trained=10)  # the last ten stop at step 300
        on_chunk(1000, 1000, 0.1, training=0, trained=0)  # the phase ends: nothing trained in the rest
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("group 0 finetune         step 100/1000, 10 of 40 members training, 2000 member-steps/s, "
                        "ETA 0m 04s")
    assert lines[1].endswith("step 200/1000, 10 of 40 members training, 1667 member-steps/s, ETA 0m 05s")
    assert lines[2].endswith("0 of 40 members training, 1714 member-steps/s, ETA 0m 00s; every member stopped by "
                             "step 300")
    assert lines[3].startswith("group 0 finetune         step 1000/1000, 0 of 40 members training, 1667 ")
    saved = json.loads(record.read_text())
    assert saved["stopped_at"] == 300 and saved["eta_s"] == 0.0 and saved["step"] == 1000
    assert progress.times["group 0 finetune"]["wall_s"] == 3.6


def test_a_phase_whose_members_had_all_stopped_before_its_first_chunk():
    """Every member stopped at its first evaluation (step 0): the phase's one report says so, with no rate."""
    rate = PhaseRate(members=4, step=0)
    rate.chunk(500, trained=0, training=0)
    assert rate.stopped_at == 0 and rate.per_s(1.0) == 0.0 and rate.eta(1.0, 500, 0) == 0.0
    rate = PhaseRate(members=4, step=0)
    assert rate.eta(1.0, 500, None) is None  # nothing trained yet: no rate, no ETA
    assert duration(None) == "?" and duration(3725) == "1h 02m" and duration(61) == "1m 01s"


def test_evaluation_progress_counts_sets_and_members(tmp_path):
    record = tmp_path / "progress.json"
    stream = io.StringIO()
    progress = Progress(stream=stream, record=record, clock=ticking(0.0, 4.0, 5.0, 6.0, 10.0, 11.0, 12.0))
    progress.done(8)  # outside an evaluation: nothing to count, nothing shown
    with progress.evaluation("group 0 prune"):
        progress.expect(2, 50)  # two sets, 50 members in all
        progress.done(40)
        saved = json.loads(record.read_text())
        assert (saved["units_done"], saved["units"], saved["members_done"], saved["members"]) == (1, 2, 40, 50)
        assert saved["members_per_s"] == 10.0 and saved["eta_s"] == 1.0
        progress.done(10)
    assert stream.getvalue().splitlines() == [
        "group 0 prune            ...",
        "group 0 prune            members 40/50, set 1/2 (40 members), 10 members/s, ETA 0m 01s",
        "group 0 prune            members 50/50, set 2/2 (10 members), 10 members/s, ETA 0m 00s",
        "group 0 prune            done in 6.0s, 50 members in 2 sets"]
    assert progress.times == {"group 0 prune": dict(kind="evaluation", wall_s=6.0)}
    # Measurements a phase makes at an eval step: counted alike, but no opening line and no time of their own.
    stream.seek(0), stream.truncate()
    with progress.evaluation("group 0 finetune step 10", timed=False):
        progress.expect(1, 4)
        progress.done(4)
    assert len(stream.getvalue().splitlines()) == 2 and "group 0 finetune step 10" not in progress.times


def test_off_a_terminal_the_lines_are_plain_and_on_one_the_bars_are_live(monkeypatch):
    """Where the stream is no terminal (a CI log, `> file`), even with FORCE_COLOR set: plain lines, no carriage
    return, no escape code. On a terminal: rich's live bars, each leaving its last state as a line."""
    monkeypatch.setenv("FORCE_COLOR", "1")

    def show(stream):
        progress = Progress(stream=stream)
        with progress.evaluation("group 0 reft"):
            with progress.phase("group 0 control_reft", 8) as on_chunk:
                on_chunk(10, 20, 1.0, training=8, trained=8)
                progress.say("a message meanwhile")
                on_chunk(20, 20, 1.0, training=2, trained=8)
            progress.expect(1, 8)
            progress.done(8)
        return stream.getvalue()

    plain = show(io.StringIO())
    assert "\r" not in plain and "\x1b" not in plain
    patterns = [r"group 0 reft +\.\.\.", r"group 0 control_reft +step 10/20, 8 of 8 members training, .*, ETA .*",
                r"a message meanwhile", r"group 0 control_reft +step 20/20, 2 of 8 members training, .*",
                r"group 0 reft +members 8/8, set 1/1 \(8 members\), .* members/s, ETA 0m 00s",
                r"group 0 reft +done in \d+\.\ds, 8 members in 1 set"]
    lines = plain.splitlines()
    assert len(lines) == len(patterns) and all(re.fullmatch(p, line) for p, line in zip(patterns, lines)), plain
    live = show(Terminal())
    assert "\x1b[" in live and "\r" in live  # drawn and redrawn in place
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", live).replace("\r", "\n")
    assert re.search(r"^group 0 control_reft +step 20/20, 2 of 8 members training, .*member-steps/s, ETA", text,
                     re.M)
    assert "a message meanwhile\n" in text and re.search(r"^group 0 reft +done in \d+\.\ds, 8 members in 1 set$",
                                                         text, re.M)


def test_quiet_shows_nothing_but_keeps_the_record(tmp_path):
    terminal = Terminal()
    progress = Progress(quiet=True, stream=terminal, record=tmp_path / "progress.json")
    with progress.phase("group 0 pretrain", 2) as on_chunk:
        on_chunk(10, 20, 1.0, training=2, trained=2)
    assert terminal.getvalue() == ""
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 10
