"""Requests through `vacal calibrate`, listing every one whose result carries warnings.

Three kinds of request:
- `defaults SEEDS`: every bundled example at default settings, with path correction on (the
  default) and off: both age groups, eight countries (Nigeria stands for `other`), the ensemble
  and each algorithm alone, seeds 1 to SEEDS;
- `examples SEED N`: N bundled examples under random settings (algorithms, country, matrix
  type, path correction, donotcalib and its type, threshold, η, sampler), drawn from a seeded
  RNG so a run can be repeated;
- `counts SEED N`: N requests of random death counts (zeros, ones, totals up to 10^5 per
  cause), which algorithms rarely produce, to find where the samplers stop converging.

    python3 shared/engine/benches/convergence_sweep.py ./target/release/vacal defaults 2
    python3 shared/engine/benches/convergence_sweep.py ./target/release/vacal examples 7 150
    python3 shared/engine/benches/convergence_sweep.py ./target/release/vacal counts 1 80

Prints each request with warnings (or a failure other than a typed bad-request exit) and its
warnings, then how many of the requests had them, and how many fits fell back to parallel
tempering (diagnostics `sampler: tempering`: their chains had found different modes), listing
those requests and whether they still carry an R-hat warning.
"""
import json
import random
import subprocess
import sys
import time

# Seeded from the command line in main(); other scripts (stall_sweep.py) seed it themselves.
rng = random.Random(0)
ALGORITHMS = ["eava", "insilicova", "interva"]
COUNTRIES = ["Mozambique", "Kenya", "Bangladesh", "Mali", "South Africa", "Ethiopia",
             "Sierra Leone", "Nigeria"]
CAUSES = {"neonate": 6, "child": 9}
SAMPLERS = ["nuts", "gibbs", "auto"]


def example_request():
    algorithms = rng.choice([["eava"], ["insilicova"], ["interva"], ALGORITHMS,
                             ["eava", "interva"]])
    age = rng.choice(["neonate", "child"])
    body = {"va_data": {a: "use_example" for a in algorithms}, "age_group": age,
            "country": rng.choice(COUNTRIES),
            "mmat_type": rng.choice(["prior", "fixed", "prior"]),
            "path_correction": rng.choice([True, True, False]),
            "donotcalib_type": rng.choice(["learn", "fixed"]),
            "mcmc": {"seed": rng.randint(1, 1000), "sampler": rng.choice(SAMPLERS)}}
    if rng.random() < 0.3:
        body["pshrink_strength"] = rng.choice([0, 1, 4, 10])
    if rng.random() < 0.3:
        body["nocalib_threshold"] = rng.choice([0.0, 0.05, 0.3])
    if rng.random() < 0.3:
        second = "malaria" if age == "child" else "ipre"
        body["donotcalib"] = {a: rng.choice([None, [], ["other"], ["other", second]])
                              for a in algorithms}
    if len(algorithms) > 1 and rng.random() < 0.2:
        body["ensemble"] = rng.choice([True, False])
    return body


def counts_request():
    age = rng.choice(["neonate", "child"])
    algorithms = rng.choice([["eava"], ["insilicova"], ALGORITHMS, ["eava", "interva"]])
    scale = rng.choice([1, 3, 10, 100, 1000, 100000])

    def deaths():
        return [rng.choice([0, 0, 1, rng.randint(0, scale)]) if rng.random() < 0.3
                else rng.randint(0, scale) for _ in range(CAUSES[age])]

    return {"va_data": {a: deaths() for a in algorithms}, "age_group": age,
            "country": rng.choice(COUNTRIES), "mmat_type": rng.choice(["prior", "fixed"]),
            "path_correction": rng.choice([True, True, False]),
            "mcmc": {"seed": rng.randint(1, 99)}}


def default_requests(seeds):
    for age in ["neonate", "child"]:
        for country in COUNTRIES:
            for algorithms in [ALGORITHMS, ["eava"], ["insilicova"], ["interva"]]:
                for path_correction in [True, False]:
                    for seed in range(1, seeds + 1):
                        yield {"va_data": {a: "use_example" for a in algorithms},
                               "age_group": age, "country": country,
                               "path_correction": path_correction, "mcmc": {"seed": seed}}


def main():
    vacal, kind = sys.argv[1], sys.argv[2]
    rng.seed(int(sys.argv[3]))
    if kind == "defaults":
        bodies = list(default_requests(int(sys.argv[3])))
    else:
        draw = example_request if kind == "examples" else counts_request
        bodies = [draw() for _ in range(int(sys.argv[4]))]
    flagged = 0
    tempering = []  # (request shown, rows that fell back, whether an R-hat warning remains)
    for body in bodies:
        started = time.monotonic()
        run = subprocess.run([vacal, "calibrate", "--request", "-"], input=json.dumps(body),
                             capture_output=True, text=True)
        seconds = time.monotonic() - started
        shown = json.dumps(body if kind == "counts" else {k: v for k, v in body.items()
                                                          if k != "va_data"}
                           | {"algorithms": list(body["va_data"])})
        if run.returncode == 2:  # a typed bad-request error: the request was refused, as it should
            continue
        if run.returncode != 0:
            flagged += 1
            print(f"{seconds:6.2f} s  exit {run.returncode}: {run.stderr.strip()[:300]}\n  {shown}")
            continue
        result = json.loads(run.stdout)
        warnings = result["warnings"]
        fell_back = [row for row, d in result.get("diagnostics", {}).items()
                     if d and d.get("sampler") == "tempering"]
        if fell_back:
            rhat_warned = any(f"{row}: max R-hat" in w for row in fell_back for w in warnings)
            tempering.append((shown, fell_back, rhat_warned))
        elif any("several modes" in w for w in warnings):
            # Detected, but the tempering fit was no better and the first fit was kept.
            tempering.append((shown, ["(kept the usual sampler)"], True))
        if warnings:
            flagged += 1
            print(f"{seconds:6.2f} s  {shown}\n  " + "\n  ".join(warnings), flush=True)
    print(f"{flagged} of {len(bodies)} requests with warnings or failures")
    for shown, rows, rhat_warned in tempering:
        print(f"tempering: {', '.join(rows)} of {shown}"
              + ("  (still an R-hat warning)" if rhat_warned else ""))
    print(f"{len(tempering)} of {len(bodies)} requests fell back to parallel tempering, "
          f"{sum(w for _, _, w in tempering)} of them still with an R-hat warning")


if __name__ == "__main__":
    main()
