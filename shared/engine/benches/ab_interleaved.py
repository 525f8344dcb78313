"""Wall time of `vacal calibrate` for two or more builds, run alternately.

This VM's speed drifts by up to 2x within minutes, so timing one build after the other (as
hyperfine does) mixes the builds' difference with the drift. Running the builds back to back,
request by request, with their order rotating from one cycle to the next, and taking the
median of the per-run ratios to the first build cancels most of it.

    python3 shared/engine/benches/ab_interleaved.py neonate_ensemble.json 20 \
        OLD/vacal ./target/release/vacal

The first argument may list several requests, comma-separated (a request may repeat, to run it
more often per cycle); the second is the number of cycles.
"""
import statistics
import subprocess
import sys
import time

requests, cycles, builds = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3:]
times = {(request, build): [] for request in requests for build in builds}
for cycle in range(cycles):
    for request in requests:
        shift = cycle % len(builds)
        for build in builds[shift:] + builds[:shift]:
            started = time.perf_counter()
            subprocess.run(
                [build, "calibrate", "--request", request], stdout=subprocess.DEVNULL, check=True
            )
            times[(request, build)].append((time.perf_counter() - started) * 1e3)


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}"


for request in dict.fromkeys(requests):
    first = times[(request, builds[0])]
    print(f"{request} ({len(first)} runs per build)")
    for build in builds:
        own = times[(request, build)]
        ratios = [t / f for t, f in zip(own, first)]
        print(
            f"  {build}: median {statistics.median(own):.1f} ms, min {min(own):.1f} ms, "
            f"ratio to the first: quartiles {quartiles(ratios)}"
        )
