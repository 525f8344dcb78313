"""Stan's own effective sample size on an R reference case, in chain order and shuffled.

vacalibration 2.2 reports `min_ess_bulk` from `rstan::extract(fit)`, whose draws are randomly
permuted by default, so its figure is close to nMCMC whatever the autocorrelation. This runs the
same model with Stan (pystan) on R's own inputs from a reference fixture (Mmat_tomodel, counts,
calibrated sets, p prior), one chain of nBurn warm-up and nMCMC draws with adapt_delta 0.9 as R
does, and prints the minimum bulk ESS over the calibrated causes of every row both ways.

    python3 -m venv /tmp/stan && /tmp/stan/bin/pip install pystan arviz pandas
    /tmp/stan/bin/python shared/engine/benches/stan/true_ess.py \
        shared/engine/tests/fixtures/reference/neonate_ensemble_mozambique__r1_s1.json 1 2 3
"""
import json
import os
import pathlib
import sys
import tempfile
import time

import arviz
import numpy as np
import stan

case = json.loads(pathlib.Path(sys.argv[1]).read_text())
seeds = [int(s) for s in sys.argv[2:]] or [1]
out, inputs = case["outputs"], case["inputs"]
causes, algorithms = out["causes"], out["algorithms"]
C = len(causes)
eta = out["pshrink_strength_used"] or 0.0
code = (pathlib.Path(__file__).parent / "calibration.stan").read_text()
name = pathlib.Path(sys.argv[1]).stem
# httpstan leaves its object files in the working directory.
os.chdir(tempfile.mkdtemp(prefix="vacal-stan-"))


def row_data(names, row):
    """Stan data for the fit of `row` (an algorithm, or "ensemble" over `names`)."""
    p0 = np.array([out["p_uncalib"][row][c] for c in causes])
    alpha = []
    for a in names:
        m = out["Mmat_tomodel"][a]
        # NA (null) entries lie outside the calibrated block and do not affect the posterior.
        alpha.append([[m[i][j] if m[i][j] is not None else 1.0 for j in causes] for i in causes])
    return {
        "K": len(names),
        "C": C,
        "counts": [[int(out["va_deaths_uncalib"][a][c]) for c in causes] for a in names],
        "calibrated": [[int(not out["donotcalib_tomodel"][a][c]) for c in causes] for a in names],
        "alpha": alpha,
        "p_prior": list(1.0 + C * eta * p0),
    }


rows = [(a, [a]) for a in algorithms if out["calibrated"][a]]
if out.get("ensemble") and out["calibrated"].get("ensemble"):
    rows.append(("ensemble", algorithms))
for row, names in rows:
    calibrated = [j for j, c in enumerate(causes) if not out["donotcalib_tomodel"][row][c]]
    for seed in seeds:
        model = stan.build(code, data=row_data(names, row), random_seed=seed)
        started = time.time()
        fit = model.sample(
            num_chains=1,
            num_warmup=int(inputs["nBurn"]),
            num_samples=int(inputs["nMCMC"]),
            delta=float(inputs["adapt_delta_stan"]),
        )
        seconds = time.time() - started
        frame = fit.to_frame()
        p = frame[[f"p.{j + 1}" for j in calibrated]].to_numpy()
        p = p / p.sum(axis=1, keepdims=True)
        shuffled = p[np.random.default_rng(seed).permutation(len(p))]

        def min_ess(draws):
            return min(float(arviz.ess(draws[None, :, j], method="bulk")) for j in range(draws.shape[1]))

        print(
            f"| {name} | {row} | {seed} | {seconds:.1f} | "
            f"{frame['n_leapfrog__'].mean():.1f} | {min_ess(p):.0f} | {min_ess(shuffled):.0f} |",
            flush=True,
        )
