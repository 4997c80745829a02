#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that take outside input (fuzz/,
# cargo-fuzz + libFuzzer, nightly toolchain). Runs every target for SECONDS
# (default 60), one after the other, and prints the executions of each and
# whether it found anything. Each starts from the real inputs in
# fuzz/seeds/TARGET/ (a capture file, a certificate, a token, ...); crashes
# land in fuzz/artifacts/TARGET/, the corpus grows in fuzz/corpus/TARGET/
# (both ignored by git).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Not part of the test command (scripts/test.sh), which runs the stable
# proptest harnesses for MESH_FUZZ_SECONDS instead (docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...] (SECONDS: a whole number above 0, got '$seconds')" >&2
    exit 2
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzzing needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)" >&2
    cargo +nightly install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build

mkdir -p logs
failed=0
printf '%-14s %12s %10s  %s\n' target executions exec/s outcome
for target in "${targets[@]}"; do
    log="logs/$target.log"
    status=0
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        outcome="nothing found"
    else
        outcome="FOUND something (exit $status): see $log and fuzz/artifacts/$target/"
        failed=1
    fi
    printf '%-14s %12s %10s  %s\n' "$target" "${execs:-?}" "${rate:-?}" "$outcome"
done
exit "$failed"
