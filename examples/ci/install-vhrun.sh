#!/usr/bin/env bash
# Install vhrun into ${CARGO_HOME:-~/.cargo}/bin (on PATH on CI images with
# Rust), from the first of:
#   VHRUN_BIN=/path/to/vhrun   a prebuilt binary (a release artifact, or
#                              the build of an earlier job)
#   VHRUN_URL=https://...      a release binary to download
#   otherwise                  cargo install --locked --path "${VHRUN_SRC:-.}"
# then check what the machine offers (vhrun doctor fails the job, with the
# fix on the failing line, when something vhrun needs is missing).
set -euo pipefail
bin_dir=${CARGO_HOME:-$HOME/.cargo}/bin
mkdir -p "$bin_dir"
if [ -n "${VHRUN_BIN:-}" ]; then
    install -m 0755 "$VHRUN_BIN" "$bin_dir/vhrun"
elif [ -n "${VHRUN_URL:-}" ]; then
    curl -fsSL --retry 3 -o "$bin_dir/vhrun.part" "$VHRUN_URL"
    chmod 0755 "$bin_dir/vhrun.part"
    mv "$bin_dir/vhrun.part" "$bin_dir/vhrun"
else
    cargo install --locked --quiet --path "${VHRUN_SRC:-.}" --root "$(dirname "$bin_dir")"
fi
# GitHub Actions: later steps get the directory on PATH.
if [ -n "${GITHUB_PATH:-}" ]; then
    echo "$bin_dir" >>"$GITHUB_PATH"
fi
"$bin_dir/vhrun" --version
"$bin_dir/vhrun" doctor
