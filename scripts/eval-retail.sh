#!/usr/bin/env bash
# p_churn on real retail data: the CDNOW purchase log (23,570 customers of a CD retailer who
# first bought in Q1 1997, their every purchase to June 1998; most never buy again), scored at
# cut-off dates and judged by how well it ranks the customers who make no purchase between the
# cut-off and the end of the log, against days since the last purchase and a batch-fitted
# BG/NBD (the `lifetimes` package's BetaGeoFitter). Figures in BENCHMARKS.md, "Real retail data".
#
#   scripts/eval-retail.sh [CUTOFF ...]       (default: 1997-07-01 1997-10-01 1998-01-01 1998-03-01)
#
# The log ships inside the `lifetimes` wheel on PyPI (lifetimes/datasets/CDNOW_master.txt); it
# is downloaded once into target/retail-eval with pip, and never committed. At each cut-off,
# `churnwatch fit --as-of CUTOFF` fits the priors on the purchases before it, and `churnwatch
# score --as-of CUTOFF --horizon-days H` scores every customer, H being the days left in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/retail-eval
mkdir -p "$dir"
bin=${CHURNWATCH_BIN:-target/release/churnwatch}
[[ -x $bin ]] || cargo build --release --bin churnwatch
if ! python3 -c 'import numpy, scipy, pandas, lifetimes' 2>/dev/null; then
    echo "installing numpy, scipy, pandas and lifetimes from PyPI" >&2
    python3 -m pip install --quiet numpy scipy pandas lifetimes==0.11.3
fi
if [[ ! -s $dir/CDNOW_master.txt ]]; then
    python3 -m pip download --quiet --no-deps lifetimes==0.11.3 -d "$dir"
    python3 - "$dir" <<'PY'
import sys, zipfile, glob
d = sys.argv[1]
wheel = glob.glob(f"{d}/[Ll]ifetimes-0.11.3-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{d}/CDNOW_master.txt", "wb") as out:
    out.write(z.read("lifetimes/datasets/CDNOW_master.txt"))
PY
fi
cutoffs=("$@")
((${#cutoffs[@]})) || cutoffs=(1997-07-01 1997-10-01 1998-01-01 1998-03-01)
python3 scripts/eval_retail.py "$bin" "$dir" "${cutoffs[@]}"
