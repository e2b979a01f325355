"""Several jobs at once through the process runner against one job alone, in one run.

    python -m bench.concurrent_jobs [--jobs 4] [--epochs 2] [--device auto] [--data-dir DIR]

Starts one warm pool of `--jobs` workers, trains the seed MLP once alone, then `--jobs` copies at
once, and prints each one's median epoch seconds, the slowdown of a job among others against the
job alone, and the throughput of the pool against back-to-back runs. This is how DLLAB_MAX_JOBS's
defaults are chosen (README, "Serving a class"). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from dlcore.engine.config import PRESETS
from dlcore.engine.data import load_dataset, load_with_fallback
from dlcore.runs.jobs import JobManager, TrainingJob
from dlcore.runs.process_runner import ProcessRunner


def run_at_once(manager: JobManager, config, dataset, count: int, data_dir: str | None
                ) -> tuple[float, list[float]]:
    """Wall seconds for `count` jobs submitted together, and each job's median epoch seconds."""
    started = time.perf_counter()
    jobs = [manager.submit(TrainingJob(config, dataset, owner=f"bench {i}", data_dir=data_dir))
            for i in range(count)]
    for job in jobs:
        job.wait()
    wall = time.perf_counter() - started
    medians = []
    for job in jobs:
        snap = job.snapshot()
        if snap.state != "finished":
            raise SystemExit(f"a job ended {snap.state}: {snap.message}")
        medians.append(statistics.median(m.seconds for m in snap.history))
    return wall, medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    dataset = load_dataset("mnist", args.data_dir) if args.data_dir else load_with_fallback("mnist")[0]
    config = PRESETS["seed"].replace(**{"train.epochs": args.epochs, "train.device": args.device,
                                        "train.dataset": dataset.name})
    warm_up = config.replace(**{"train.epochs": 1})
    # DLLAB_MAX_JOBS=1: one worker with every core, the jobs one after another.
    single = ProcessRunner(1)
    try:
        run_at_once(JobManager(runner=single, orphan_seconds=10**9), warm_up, dataset, 1, args.data_dir)
        alone_wall, (alone,) = run_at_once(JobManager(runner=single, orphan_seconds=10**9),
                                           config, dataset, 1, args.data_dir)
    finally:
        single.close()
    # DLLAB_MAX_JOBS=N: N workers sharing the cores (cores / N threads each), the jobs at once.
    pool = ProcessRunner(args.jobs)
    manager = JobManager(runner=pool, orphan_seconds=10**9)
    try:
        run_at_once(manager, warm_up, dataset, args.jobs, args.data_dir)
        wall, medians = run_at_once(manager, config, dataset, args.jobs, args.data_dir)
    finally:
        pool.close()
    print(f"seed MLP, {args.epochs} epochs on {dataset.name} ({len(dataset.train_y):,} images), "
          f"device {args.device}")
    print(f"one job alone (1 worker, {single.threads} threads): {alone:.3f} s per epoch "
          f"({alone_wall:.1f} s in all)")
    print(f"{args.jobs} jobs at once ({args.jobs} workers, {pool.threads} thread(s) each): "
          f"{' '.join(f'{m:.3f}' for m in medians)} s per epoch ({wall:.1f} s in all)")
    print(f"slowest job among {args.jobs}: {max(medians) / alone:.2f}x a job alone; "
          f"all {args.jobs} done {args.jobs * alone_wall / wall:.2f}x faster than back-to-back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
