#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER for `cargo xtask fuzz`: SanitizerCoverage for the
# worker and the fuzz targets only, so libFuzzer is guided by Waymark's own
# branches and the dependencies are the ordinary, shared build. These are
# stable rustc flags (cargo-fuzz's `--sanitizer none` set).
rustc="$1"
shift
case " $* " in
  *" --crate-name waymark "*|*" --crate-name waymark_fuzz "*)
    exec "$rustc" "$@" --cfg fuzzing \
      -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      -Cdebug-assertions
    ;;
esac
exec "$rustc" "$@"
