"""How often the path correction stalls under vacalibration 2.2's rules and under 2.3.1's.

    python3 shared/engine/benches/stall_sweep.py ./target/debug/vacal SEED N

Draws N requests of random death counts with prior matrices and path correction on (the
convergence sweep's `counts` requests: zeros, ones and totals up to 10^5 per cause), runs
each through `vacal calibrate` under both rules, and counts the calibrated algorithms whose
path correction stalled (λ at the top of its grid) and the requests with a stall warning.
The bundled examples never stall (`cargo test -p vacal-engine --test rules`).
"""
import json
import random
import subprocess
import sys

vacal, rng, n = sys.argv[1], random.Random(int(sys.argv[2])), int(sys.argv[3])
ALGORITHMS = ["eava", "insilicova", "interva"]
COUNTRIES = ["Mozambique", "Kenya", "Bangladesh", "Mali", "South Africa", "Ethiopia",
             "Sierra Leone", "Nigeria"]
CAUSES = {"neonate": 6, "child": 9}


def counts_request():
    age = rng.choice(["neonate", "child"])
    algorithms = rng.choice([["eava"], ["insilicova"], ALGORITHMS, ["eava", "interva"]])
    scale = rng.choice([1, 3, 10, 100, 1000, 100000])

    def deaths():
        return [rng.choice([0, 0, 1, rng.randint(0, scale)]) if rng.random() < 0.3
                else rng.randint(0, scale) for _ in range(CAUSES[age])]

    return {"va_data": {a: deaths() for a in algorithms}, "age_group": age,
            "country": rng.choice(COUNTRIES), "mcmc": {"seed": rng.randint(1, 99),
                                                       "n_mcmc": 1000, "n_burn": 1000}}


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
