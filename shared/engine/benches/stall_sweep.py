"""How often the path correction stalls under vacalibration 2.2's rules and under 2.3.1's.

    python3 shared/engine/benches/stall_sweep.py ./target/debug/vacal SEED N

Draws N requests of random death counts with prior matrices and path correction on (the
convergence sweep's `counts` requests: zeros, ones and totals up to 10^5 per cause), runs
each through `vacal calibrate` under both rules, and counts the calibrated algorithms whose
path correction stalled (λ at the top of its grid) and the requests with a stall warning.
The bundled examples never stall (`cargo test -p vacal-engine --test rules`).
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convergence_sweep as sweep  # noqa: E402  (its random counts requests)

vacal, n = sys.argv[1], int(sys.argv[3])
sweep.rng.seed(int(sys.argv[2]))


def counts_request():
    """The sweep's random counts, with prior matrices and path correction (where stalls are)."""
    body = sweep.counts_request()
    body["mmat_type"] = "prior"
    body.pop("path_correction")
    body["mcmc"] |= {"n_mcmc": 1000, "n_burn": 1000}
    return body


totals = {rules: {"fits": 0, "stalled": 0, "warned": 0, "refused": 0} for rules in ["2.2", "2.3.1"]}
for _ in range(n):
    body = counts_request()
    for rules, t in totals.items():
        run = subprocess.run([vacal, "calibrate", "--request", "-"],
                             input=json.dumps(body | {"rules": rules}),
                             capture_output=True, text=True)
        if run.returncode != 0:
            t["refused"] += 1
            continue
        result = json.loads(run.stdout)
        corrections = [pc for pc in result["path_correction"].values() if pc is not None]
        t["fits"] += len(corrections)
        t["stalled"] += sum(pc["stalled"] for pc in corrections)
        t["warned"] += any("path correction stalled" in w for w in result["warnings"])
for rules, t in totals.items():
    print(f"rules {rules}: {t['stalled']} of {t['fits']} path corrections stalled; "
          f"{t['warned']} of {n} requests warned; {t['refused']} refused")
