"""Min bulk ESS of every NUTS fit of the bundled examples, over seeds, for two builds.

One seed's ESS is one draw of a quantity that varies by about ±25 % from seed to seed, so a
change to the sampler is judged on the mean over several seeds. The fits are the ensembles of
both age groups for six countries (Nigeria stands for `other`) and every single-algorithm fit
without path correction; each prints a Markdown row with the mean (range) per build and the
ratio of the means, and the last line the geometric mean of the ratios.

    python3 shared/engine/benches/ess_over_seeds.py OLD/vacal ./target/release/vacal 1 8
"""
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

old, new, first_seed, last_seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ALGORITHMS = ["eava", "insilicova", "interva"]

fits = []
for age in ["neonate", "child"]:
    for country in ["Mozambique", "Bangladesh", "Kenya", "Mali", "South Africa", "Nigeria"]:
        data = {a: "use_example" for a in ALGORITHMS}
        fits.append((f"ensemble, {age}, {country}",
                     {"va_data": data, "age_group": age, "country": country}))
    for a in ALGORITHMS:
        fits.append((f"{a}, {age}, no path correction",
                     {"va_data": {a: "use_example"}, "age_group": age, "country": "Mozambique",
                      "path_correction": False}))


def nuts_min_ess(build, request_path):
    result = json.loads(subprocess.run([build, "calibrate", "--request", request_path],
                                       capture_output=True, check=True).stdout)
    rows = [d for d in result["diagnostics"].values() if d and d["sampler"] == "nuts"]
    return min(d["min_ess_bulk"] for d in rows)


def summary(values):
    return f"{statistics.mean(values):.0f} ({min(values):.0f}–{max(values):.0f})"


log_ratios = []
with tempfile.TemporaryDirectory() as scratch:
    request_path = os.path.join(scratch, "request.json")
    print(f"| fit | {old} | {new} | ratio of means |")
    print("|---|---|---|---|")
    for name, body in fits:
        ess = {old: [], new: []}
        for seed in range(first_seed, last_seed + 1):
            with open(request_path, "w") as f:
                json.dump({**body, "mcmc": {"seed": seed}}, f)
            for build in (old, new):
                ess[build].append(nuts_min_ess(build, request_path))
        ratio = statistics.mean(ess[new]) / statistics.mean(ess[old])
        log_ratios.append(math.log(ratio))
        print(f"| {name} | {summary(ess[old])} | {summary(ess[new])} | {ratio:.2f} |", flush=True)
print(f"geometric mean of the ratios: {math.exp(statistics.mean(log_ratios)):.3f} "
      f"over {len(log_ratios)} fits")
