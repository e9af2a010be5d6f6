#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ one after the other, each for
# SECONDS (first argument), from its committed seeds (fuzz/seeds/<target>)
# and a scratch corpus (fuzz/corpus/<target>, not committed); further
# arguments name the targets to run (default: all). Uses the nightly
# toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1.
# Builds without sanitizer (the fuzzed code has no unsafe) and with debug
# assertions, so an arithmetic overflow is a crash too. Prints the runs of
# each target; exits non-zero on the first crash (the input is saved under
# fuzz/artifacts/<target>/).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(feed header_map credential key filter_config drafts path)
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
flags=(--fuzz-dir fuzz --target-dir fuzz/target --sanitizer none --debug-assertions)

# fuzz/ is its own workspace; its lock file starts from the main one (same
# versions as the code under test) and is not committed, so a build leaves
# the checkout as it was.
cp Cargo.lock fuzz/Cargo.lock

"${fuzz[@]}" build "${flags[@]}"
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="fuzz/target/$target.log"
  echo "fuzz: $target for ${seconds} s" >&2
  if ! "${fuzz[@]}" run "${flags[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target CRASHED (log: $log, input: fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -n 1)"
  echo "fuzz: $target: ${runs:-no run count} (no crash; $(find "fuzz/corpus/$target" -type f | wc -l) corpus inputs)"
done
