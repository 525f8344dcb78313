"""Wall time of `vacal calibrate` for two or more builds, run alternately.

This VM's speed drifts by up to 2x within minutes, so timing one build after the other (as
hyperfine does) mixes the builds' difference with the drift. Alternating the builds run by run
and taking the median of the per-run ratios to the first build cancels most of it.

    python3 shared/engine/benches/ab_interleaved.py neonate_ensemble.json 20 \
        OLD/vacal ./target/release/vacal
"""
import statistics
import subprocess
import sys
import time

request, runs, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
times = {build: [] for build in builds}
for _ in range(runs):
    for build in builds:
        started = time.perf_counter()
        subprocess.run([build, "calibrate", "--request", request], stdout=subprocess.DEVNULL, check=True)
        times[build].append((time.perf_counter() - started) * 1e3)
first = times[builds[0]]
for build in builds:
    ratios = [t / f for t, f in zip(times[build], first)]
    print(
        f"{build}: median {statistics.median(times[build]):.1f} ms, "
        f"min {min(times[build]):.1f} ms, median ratio to the first {statistics.median(ratios):.3f}"
    )
