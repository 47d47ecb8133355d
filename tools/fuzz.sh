#!/usr/bin/env bash
# Fuzz lookalike with libFuzzer (cargo-fuzz) for a bounded time.
#
#   tools/fuzz.sh                          # every target, 120 s each
#   FUZZ_SECONDS=600 tools/fuzz.sh         # longer
#   tools/fuzz.sh grpc_request             # one target
#
# Targets (fuzz/fuzz_targets/, harness logic in fuzz/src/lib.rs):
#   decode_hash   arbitrary bytes -> bounded image decode -> PDQ + pHash (+ thumbnail)
#   grpc_request  arbitrary bytes -> each gRPC request message (prost) -> the server's
#                 checks (grpc::convert) -> hashing of any image they accept
#
# Needs a nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz if it
# is missing. Corpora live in fuzz/corpus/<target> (not committed) and are seeded on every
# run from tests/fixtures (images) and tests/fuzz-regressions (hand-made nasty inputs and
# earlier crashes), so they grow across runs; each run first replays its whole corpus,
# which takes longer as it grows (the reported time includes it). Shrink one with:
#   cargo +nightly fuzz cmin <target>
#
# A panic, abort, out-of-memory (over FUZZ_RSS_MB, default 2048) or a single input taking
# over FUZZ_TIMEOUT seconds (default 10) is a crash: libFuzzer writes it to
# fuzz/artifacts/<target>/, this script copies it to tests/fuzz-regressions/<target>-<hash>
# (replayed by `cargo test --test fuzz_regressions` from then on) and exits 1 after the
# remaining targets have run. Reproduce one with:
#   cargo +nightly fuzz run <target> tests/fuzz-regressions/<target>-<hash>
#
# Other settings: FUZZ_JOBS (parallel fuzzing processes per target, default 1),
# FUZZ_MAX_LEN (largest input libFuzzer makes, default 262144 bytes), FUZZ_TOOLCHAIN
# (default nightly). Extra arguments after `--` go to libFuzzer, e.g.
#   tools/fuzz.sh decode_hash -- -only_ascii=1
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-120}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_MB:-2048}
JOBS=${FUZZ_JOBS:-1}
MAX_LEN=${FUZZ_MAX_LEN:-262144}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
ALL_TARGETS=(decode_hash grpc_request)

targets=()
extra=()
while (($#)); do
  case $1 in
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "unknown target $t (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

if ! cargo "+$TOOLCHAIN" --version >/dev/null 2>&1; then
  echo "no $TOOLCHAIN toolchain: rustup toolchain install $TOOLCHAIN" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz
fi

# Seeds: copied (not linked) so libFuzzer may add to and minimise its corpus freely.
seed() {
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  if [[ $target == decode_hash ]]; then
    for f in tests/fixtures/*.{jpg,jpeg,png,gif,bmp,tif,tiff,webp}; do
      if [[ -f $f ]]; then cp -f "$f" "$dir/fixture-$(basename "$f")"; fi
    done
  fi
  # Every saved regression seeds both targets: image bytes are also interesting as
  # protobuf (and vice versa), and requests carry images.
  if [[ -d tests/fuzz-regressions ]]; then
    for f in tests/fuzz-regressions/*; do
      if [[ -f $f ]]; then cp -f "$f" "$dir/regression-$(basename "$f")"; fi
    done
  fi
  # libFuzzer skips an empty corpus directory; give it one byte to start from.
  [[ -n $(ls -A "$dir") ]] || printf '\0' >"$dir/empty"
}

# cargo-fuzz's defaults: optimised, with debug assertions and overflow checks, under
# AddressSanitizer.
for t in "${targets[@]}"; do
  echo "== building $t (cargo +$TOOLCHAIN fuzz build $t)"
  cargo "+$TOOLCHAIN" fuzz build "$t"
done

LOGS=fuzz/target/fuzz-logs
mkdir -p "$LOGS"
summary=()
crashed=0
for t in "${targets[@]}"; do
  seed "$t"
  mkdir -p "fuzz/artifacts/$t"
  stamp=$(mktemp)
  log=$LOGS/$t.log
  echo "== fuzzing $t for ${SECONDS_PER_TARGET}s (log: $log)"
  args=(
    -max_total_time="$SECONDS_PER_TARGET"
    -timeout="$TIMEOUT"
    -rss_limit_mb="$RSS_MB"
    -max_len="$MAX_LEN"
    -print_final_stats=1
    # Spend less of the budget on the slow inputs (large valid images).
    -entropic_scale_per_exec_time=1
  )
  if ((JOBS > 1)); then
    args+=(-fork="$JOBS")
  fi
  started=$SECONDS
  set +e
  cargo "+$TOOLCHAIN" fuzz run "$t" "fuzz/corpus/$t" -- "${args[@]}" "${extra[@]}" 2>&1 | tee "$log" |
    grep --line-buffered -E '^(#[0-9]+[[:space:]]+(pulse|DONE|INITED)|#[0-9]+: cov:|==[0-9]+== ?ERROR|SUMMARY|thread .* panicked|artifact_prefix|Test unit written|stat::|Done [0-9]+ runs)'
  status=${PIPESTATUS[0]}
  set -e

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  if [[ -z $execs ]]; then
    # -fork mode prints no final stats; its last progress line has the totals.
    last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' <<<"$last")
    rate=$(sed -n 's/.* exec\/s: \([0-9]*\).*/\1/p' <<<"$last")
  fi
  # libFuzzer's own figure; after a crash it prints none, so the wall-clock time.
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  took=${took:-$((SECONDS - started))}
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  line="$t: ${execs:-?} executions in ${took} s, ${rate:-?} exec/s, peak RSS ${peak:-?} MB, corpus $corpus files"

  found=()
  while IFS= read -r -d '' artifact; do
    # libFuzzer names it <kind>-<sha1>: crash, oom, timeout, leak or slow-unit.
    name=$(basename "$artifact")
    dest=tests/fuzz-regressions/$t-$(sha1sum "$artifact" | cut -d' ' -f1)
    mkdir -p tests/fuzz-regressions
    cp -f "$artifact" "$dest"
    found+=("$dest (${name%-*})")
  done < <(find "fuzz/artifacts/$t" -type f -newer "$stamp" -print0)
  rm -f "$stamp"

  if ((${#found[@]})); then
    crashed=1
    line+=" -- CRASH: ${found[*]}"
  elif ((status != 0)); then
    crashed=1
    line+=" -- libFuzzer exited with status $status without an artifact (see $log)"
  fi
  summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if ((crashed)); then
  echo "Crashes are saved under tests/fuzz-regressions/; replay them with:"
  echo "  cargo test --test fuzz_regressions"
  echo "  cargo +$TOOLCHAIN fuzz run <target> tests/fuzz-regressions/<file>   # with a stack trace"
  exit 1
fi
