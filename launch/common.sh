# Shared by the launch scripts (sourced, not run).
#   FTTRACE   how to call fttrace (default `fttrace`; e.g. FTTRACE="python -m fttrace.cli")
#   DRY_RUN=1 print each command instead of running it

read -r -a FTTRACE_CMD <<< "${FTTRACE:-fttrace}"

dry_run() { [[ "${DRY_RUN:-0}" == 1 ]]; }

# Run a command, or print it (shell-quoted, ready to paste) under DRY_RUN=1.
run() {
  if dry_run; then printf '%q ' "$@" | sed 's/ $//'; printf '\n'; else "$@"; fi
}

# `fttrace ...` as one shell-quoted string, for commands that run on another machine (ssh, sbatch --wrap).
quoted() { (( $# )) || return 0; printf '%q ' "$@" | sed 's/ $//'; }

# `cd REMOTE_DIR && fttrace run CONFIG --workdir WORKDIR ARGS...` as one string, for a remote host's shell.
remote_run() {
  local config=$1 workdir=$2
  shift 2
  printf 'cd %s && %s' "$(quoted "${REMOTE_DIR:-fttrace}")" \
    "$(quoted "${FTTRACE_CMD[@]}" run "$config" --workdir "$workdir" "$@")"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
