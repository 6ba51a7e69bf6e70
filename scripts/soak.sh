#!/usr/bin/env bash
# Soak run of the kill -9 fault test: ROUNDS rounds (default 10), each with a new seed and
# CHURNWATCH_SOAK_KILLS kills (default 20) of `churnwatch run` at random points, each compared
# with an uninterrupted reference run (alerts by alert_id, final per-customer state).
# Stops at the first failure. Takes about 2-3 minutes per round.
#
#   scripts/soak.sh            # 10 rounds x 20 kills
#   scripts/soak.sh 50         # 50 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-10}"
export CHURNWATCH_SOAK_KILLS="${CHURNWATCH_SOAK_KILLS:-20}"
cargo build --release --tests
for ((i = 1; i <= rounds; i++)); do
  seed=$((1000 + i))
  echo "== round ${i}/${rounds}: seed ${seed}, ${CHURNWATCH_SOAK_KILLS} kills"
  CHURNWATCH_SOAK_SEED="${seed}" cargo test --release --test faults \
    kill_9_at_random_points -- --nocapture 2>&1 | grep -E "^group|test result|panicked"
  [[ "${PIPESTATUS[0]}" == 0 ]] || { echo "round ${i} failed (seed ${seed})"; exit 1; }
done
echo "soak: ${rounds} rounds passed"
