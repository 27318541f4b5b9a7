# Sourced by the bench scripts that run the exporter binary (not run on its own): sets EXE to
# the binary to measure, BENCH_EXPORTER when given, else the release build, else the debug
# build of $CARGO_TARGET_DIR (default target), and stops the script when there is none.
TARGET=${CARGO_TARGET_DIR:-target}
EXE=${BENCH_EXPORTER:-}
if [[ -z "$EXE" ]]; then
  for p in "$TARGET/release/mde-liveresponse-exporter" "$TARGET/debug/mde-liveresponse-exporter"; do
    [[ -x "$p" ]] && { EXE=$p; break; }
  done
fi
[[ -x "$EXE" ]] || { echo "build the exporter first (cargo build --release)" >&2; exit 2; }
