"""Write the page of measured results of the bundled configs (fttrace/configs/RESULTS.md) from finished workdirs.

    python benchmarks/results_page.py WORKDIR [WORKDIR ...] [--out fttrace/configs/RESULTS.md] [--shared WORKDIR]

For each workdir: the command that made it (the config, the XLA flags), the machine it computed on and its time, as
its manifest records them, then what `python -m analysis summary WORKDIR` prints. Two or more workdirs of one config
(the same run on other machines, or with other XLA code) are also set side by side with `python -m analysis compare`,
which says which verdicts a change of machine flips. `--shared WORKDIR` marks a workdir whose run shared the
machine with other work: its wall time is printed as such, not as the machine's. The config files' docstrings say
what a study is and why; the numbers live here, each one printed by a command on a named machine.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "fttrace" / "configs" / "RESULTS.md"


def analysis(*args: str) -> str:
    """What `python -m analysis ARGS` prints (its exit status aside: compare exits 1 when verdicts differ)."""
    done = subprocess.run([sys.executable, "-m", "analysis", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(f"results_page: error: python -m analysis {' '.join(args)} failed: "
                         f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return done.stdout.rstrip()


def config_name(manifest: dict) -> str:
    """The config a workdir ran (`fttrace run CONFIG ...`), as its command line named it."""
    argv = manifest.get("argv") or []
    return argv[argv.index("run") + 1] if "run" in argv[:-1] else "?"


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def provenance(manifest: dict, shared: bool = False) -> list[str]:
    """The lines saying how a workdir was made: command, machine, versions, time (`shared`: other work ran beside it,
    so its time is not the machine's)."""
    flags = (manifest.get("environment") or {}).get("XLA_FLAGS")
    command = " ".join(["fttrace", *(manifest.get("argv") or [])[1:]])
    cpu = manifest.get("machine") or {}
    machine = (f"{cpu.get('cpu', '?')}, {cpu.get('cores', '?')} cores, {cpu.get('isa', '?')}"
               + (f"; XLA code for {cpu['xla_cpu_max_isa']}" if cpu.get("xla_cpu_max_isa") else "")
               if cpu else "not recorded (a workdir written before fttrace recorded the machine)")
    versions = manifest.get("versions") or {}
    runs = manifest.get("invocations") or [manifest]
    wall = sum(r.get("wall_s") or 0.0 for r in runs[:-1]) + (manifest.get("wall_s") or 0.0)
    commit = manifest.get("git_commit") or "?"
    return [f"- command: `{('XLA_FLAGS=' + flags + ' ') if flags else ''}{command}`",
            f"- machine: {machine}; devices {', '.join(manifest.get('devices') or [])}",
            "- versions: " + ", ".join(f"{k} {versions[k]}" for k in ("fttrace", "jax", "jaxlib", "python")
                                         if k in versions)
            + f"; commit {commit[:12]}{' (uncommitted changes)' if manifest.get('git_dirty') else ''}",
            f"- wall time: {duration(wall)} over {len(runs)} invocation(s) (status {manifest.get('status', '?')})"
            + ("; other work shared the machine, so this is not its time" if shared else "")]


def page(workdirs: list[Path], shared=()) -> str:
    manifests = {w: json.loads((w / "manifest.json").read_text()) for w in workdirs}
    out = ["# Measured results of the bundled configs", "",
           f"Written by `python benchmarks/results_page.py {' '.join(str(w) for w in workdirs)}` on "
           f"{datetime.date.today().isoformat()}. Each section is one workdir: how it was made, as its manifest "
           "records it, then what `python -m analysis summary WORKDIR` prints; workdirs of one config are compared "
           "with `python -m analysis compare A B`.", ""]
    for workdir, manifest in manifests.items():
        out += [f"## {config_name(manifest)}: {workdir.name}", "", *provenance(manifest, workdir in shared), "", "```",
                analysis("summary", str(workdir)), "```", ""]
    by_config: dict[str, list[Path]] = {}
    for workdir, manifest in manifests.items():
        by_config.setdefault(config_name(manifest), []).append(workdir)
    for name, same in by_config.items():
        for a, b in combinations(same, 2):
            out += [f"## {name}: {a.name} against {b.name}", "", "```", analysis("compare", str(a), str(b)), "```", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--shared", type=Path, action="append", default=[],
                        help="a workdir (one of those given) whose run shared the machine with other work")
    args = parser.parse_args(argv)
    for workdir in args.workdirs:
        if not (workdir / "manifest.json").is_file():
            raise SystemExit(f"results_page: error: {workdir}: no manifest.json (not an fttrace workdir)")
    unknown = [w for w in args.shared if w not in args.workdirs]
    if unknown:
        raise SystemExit(f"results_page: error: --shared {unknown[0]}: not one of the workdirs given")
    args.out.write_text(page(args.workdirs, args.shared))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
