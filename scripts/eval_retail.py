"""The work of scripts/eval-retail.sh: usage eval_retail.py CHURNWATCH DIR CUTOFF [CUTOFF ...]."""
import collections
import csv
import json
import subprocess
import sys
import warnings
from datetime import date

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter
from scipy.stats import rankdata

warnings.filterwarnings("ignore")
BIN, DIR, CUTOFFS = sys.argv[1], sys.argv[2], sys.argv[3:]


def auc(score, y):
    """ROC AUC of `score` for the positives `y == 1` (ties count half)."""
    r = rankdata(score)
    n1 = y.sum()
    n0 = len(y) - n1
    return (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


purchases = []  # (date, customer, cds, dollars)
with open(f"{DIR}/CDNOW_master.txt") as f:
    for line in f:
        p = line.split()
        if len(p) != 4 or not p[0].isdigit():
            continue
        d = date(int(p[1][:4]), int(p[1][4:6]), int(p[1][6:]))
        purchases.append((d, int(p[0]), int(p[2]), float(p[3])))
purchases.sort()
end = max(p[0] for p in purchases)
events = f"{DIR}/events.jsonl"
with open(events, "w") as f:
    seen = collections.Counter()
    for d, c, q, v in purchases:
        seen[d] += 1  # distinct times within a day, in log order
        s = seen[d]
        ts = f"{d.isoformat()}T{8 + s // 3600 % 14:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"
        ev = {"type": "purchase", "customer_id": f"c{c:05d}", "ts": ts, "amount": v, "quantity": q}
        f.write(json.dumps(ev) + "\n")

print(f"CDNOW: {len(purchases)} purchases of {len({p[1] for p in purchases})} customers, "
      f"{purchases[0][0]} .. {end}")
print(f"{'cut-off':10} {'H days':>6} {'quiet':>6}  {'recency':>8} {'BG/NBD P0':>9} "
      f"{'BG/NBD -E':>9} {'p_churn':>8}  discount")
for cutoff in CUTOFFS:
    C = date.fromisoformat(cutoff)
    H = (end - C).days + 1  # the days left in the log, the cut-off's included
    first, last, days, after = {}, {}, collections.defaultdict(set), set()
    for d, c, _, _ in purchases:
        if d < C:
            first.setdefault(c, d)
            last[c] = d
            days[c].add(d)
        else:
            after.add(c)
    cust = sorted(first)
    y = np.array([0 if c in after else 1 for c in cust])  # 1 = no purchase after the cut-off
    x = np.array([len(days[c]) - 1 for c in cust], float)
    t_x = np.array([(last[c] - first[c]).days for c in cust], float)
    T = np.array([(C - first[c]).days for c in cust], float)
    recency = T - t_x
    bg = BetaGeoFitter()
    bg.fit(pd.Series(x), pd.Series(t_x), pd.Series(T))
    r, alpha, a, b = (bg.params_[k] for k in ("r", "alpha", "a", "b"))
    alive = bg.conditional_probability_alive(x, t_x, T)
    bg_p0 = (1 - alive) + alive * ((alpha + T) / (alpha + T + H)) ** (r + x)
    bg_ex = bg.conditional_expected_number_of_purchases_up_to_time(H, x, t_x, T)
    run = lambda *a: subprocess.run([BIN, *a], check=True, capture_output=True, text=True).stdout
    fit_out = run("fit", "--input", events, "--as-of", f"{cutoff}T00:00:00Z", "--out", f"{DIR}/priors.toml")
    discount = [l.split(":")[1].split("(")[0].strip() for l in fit_out.splitlines() if l.startswith("history discount")]
    with open(f"{DIR}/config.toml", "w") as f:
        f.write('[churn]\npriors = "priors.toml"\n')
    run("score", "--input", events, "--as-of", f"{cutoff}T00:00:00Z", "--horizon-days", str(H),
        "--config", f"{DIR}/config.toml", "--out", f"{DIR}/scores-{cutoff}.csv")
    p_churn = {}
    with open(f"{DIR}/scores-{cutoff}.csv") as f:
        for row in csv.DictReader(f):
            p_churn[int(row["customer_id"][1:])] = float(row["p_churn"])
    missing = [c for c in cust if c not in p_churn]
    assert not missing, f"{len(missing)} customers have no score"
    pc = np.array([p_churn[c] for c in cust])
    print(f"{cutoff:10} {H:>6} {y.mean():>6.1%}  {auc(recency, y):>8.4f} {auc(bg_p0, y):>9.4f} "
          f"{auc(-bg_ex, y):>9.4f} {auc(pc, y):>8.4f}  {', '.join(discount)}")
print("ROC AUC for 'no purchase from the cut-off to the end of the log' (higher is better): days")
print("since the last purchase; BG/NBD fitted on the purchases before the cut-off (lifetimes),")
print("ranked by P(no purchase) and by -E[purchases]; churnwatch's p_churn after fit and score.")
