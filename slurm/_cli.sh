# Sourced by slurm/start.sh and slurm/stop.sh: their messages and their `DIR [--FLAG]` command line.
# Set SCRIPT (start | stop) and FLAG (--fresh | --purge) first, then call `parse_dir_args "$@"`: it sets DIR (absolute,
# never /) and FLAG_ON (0 | 1), and prints the usage (exit 2) on anything else. MARKER names the file that marks a
# DIR as made by start.sh.
MARKER=.bench-slurm-local
T0=$EPOCHREALTIME

die() { echo "$SCRIPT.sh: error: $*" >&2; exit 1; }
say() { printf '[%s %5.1fs] %s\n' "$SCRIPT" "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')" "$*"; }
usage() { echo "usage: bash slurm/$SCRIPT.sh DIR [$FLAG]" >&2; exit 2; }

parse_dir_args() {
  DIR="" FLAG_ON=0
  local a
  for a in "$@"; do
    case "$a" in
      "$FLAG") FLAG_ON=1 ;;
      -h|--help) usage ;;
      -*) echo "$SCRIPT.sh: unknown option $a" >&2; usage ;;
      *) [[ -z "$DIR" ]] || usage; DIR="$a" ;;
    esac
  done
  [[ -n "$DIR" ]] || usage
  DIR=$(realpath -m -- "$DIR")
  [[ "$DIR" != / ]] || die "DIR must not be /"
}
