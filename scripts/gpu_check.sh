#!/usr/bin/env bash
# The prepared GPU check (issue 27): every CUDA path of cnnkit in one run, about 4 minutes on
# one H100, each step under its own timeout, then a table of pass/skip/fail and seconds. It
# needs no network: it runs the checkout itself (PYTHONPATH=., nothing installed). The steps
# are scripts/gpu_check.py's; this wrapper gives them a temporary folder (run directories,
# removed at the end), starts the driver again after a step that hung (the driver records it
# as failed and ends itself, or `timeout` ends it) so one hang costs one step, not the lend,
# and copies 3 files to $OUT when it is set: gpu_check.log, gpu_check.json, bench.md.
usage="Usage: scripts/gpu_check.sh [--cpu-dry-run] [--steps 'NAME ...'] [--budget S] [PYTHON]
  --cpu-dry-run     every step on the CPU with stand-ins and tiny sizes (about a minute)
  --steps 'NAME ..' only these steps: machine cuda-tests bench mnist-30 folders compile amp
                    deterministic oom ddp
  --budget S        seconds for the whole check, restarts included (default: 540 on CUDA,
                    300 in a dry run); each step gets at most what is left
  PYTHON            the interpreter (default: \$PYTHON, else python3)
  \$OUT              where the log, the JSON summary and bench.py's table go, if set"
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
args=()
budget=540
while (($#)); do
    case $1 in
        -h | --help) echo "$usage"; exit 0 ;;
        --cpu-dry-run) args+=(--cpu-dry-run); budget=300; shift ;;
        --steps) read -ra steps <<< "${2:?"--steps needs names"}"; args+=(--steps "${steps[@]}")
                 shift 2 ;;
        --budget) given=${2:?"--budget needs seconds"}; shift 2 ;;
        -*) echo "$usage" >&2; exit 2 ;;
        *) python=$1; shift ;;
    esac
done
budget=${given:-$budget}
cd "$root" || exit 2
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d "${TMPDIR:-/tmp}/cnnkit-gpu-check-XXXXXX")
trap 'rm -rf "$work"' EXIT
deadline=$((SECONDS + budget + 60))  # the driver keeps to the budget; 60 s for its report
resume=()
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    left=$((deadline - SECONDS))
    ((left > 5)) || break
    timeout -k 10 "$left" "$python" scripts/gpu_check.py --work "$work" --budget "$budget" \
        "${args[@]}" ${resume[@]+"${resume[@]}"}
    code=$?
    case $code in
        3 | 124 | 137) echo "gpu_check: the driver ended inside a step (exit $code, start" \
                            "$attempt); starting it again after that step"
                       resume=(--resume) ;;
        *) break ;;
    esac
done
if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    for file in gpu_check.log gpu_check.json bench.md; do
        [[ -f $work/$file ]] && cp "$work/$file" "$OUT/"
    done
fi
exit "$code"
