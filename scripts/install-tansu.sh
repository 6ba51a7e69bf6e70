#!/usr/bin/env bash
# Install tansu, the Kafka-compatible broker the end-to-end tests also run against, when it
# is missing. Prints the path of the binary. Built from crates.io (no binary download); its
# in-memory storage engine needs the crate feature `dynostore`. Takes ~11 minutes on 2 cores.
#
#   scripts/install-tansu.sh            # install into ~/.cargo/bin if missing
#   TANSU=/path/to/tansu scripts/...    # use that binary
set -euo pipefail
TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
if [[ -n "${TANSU:-}" && -x "${TANSU}" ]]; then
  echo "${TANSU}"
  exit 0
fi
root="${CARGO_HOME:-$HOME/.cargo}"
bin="${root}/bin/tansu"
if [[ -x "${bin}" ]] && "${bin}" --version 2>/dev/null | grep -q "${TANSU_VERSION}"; then
  echo "${bin}"
  exit 0
fi
if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "${TANSU_VERSION}"; then
  command -v tansu
  exit 0
fi
echo "installing tansu ${TANSU_VERSION} (cargo install, once)..." >&2
cargo install tansu --version "${TANSU_VERSION}" --features dynostore --locked >&2
echo "${bin}"
