"""How much longer an epoch takes in the app's background job than headless, in one run.

    python -m bench.app_vs_headless [--data-dir ../shared/data/mnist] [--epochs 3] [--device auto]

Headless: `dlcore.engine.train.train` called directly. App: the same config as a job of the app's runner
(DLLAB_RUNNER, default a worker process), while this process does what the Train page's fragment
does every REDRAW_SECONDS (take a
snapshot, build both plotly figures, serialise them to JSON). Prints the median epoch seconds of each, the
ratio, and the lesson's own loop's epoch seconds for scale. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from dlcore.cli.bench import lesson_loop
from dlcore.engine.config import PRESETS
from dlcore.engine.data import load_dataset, load_with_fallback
from dlcore.engine.devices import resolve_device
from dlcore.engine.train import train
from dlcore.figures import batch_loss_figure, epoch_curves_figure
from dlcore.runs.jobs import REDRAW_SECONDS, JobManager, TrainingJob


def headless_epochs(config, dataset) -> list[float]:
    return [m.seconds for m in train(config, dataset).history]


def app_epochs(config, dataset, data_dir: str | None, redraw_every: float = REDRAW_SECONDS
               ) -> tuple[list[float], int]:
    job = JobManager(max_jobs=1).submit(TrainingJob(config, dataset, data_dir=data_dir))
    redraws, epoch_figure = 0, (-1, None)
    while not job.wait(redraw_every):
        snap = job.snapshot()
        batch_loss_figure(snap.batch_losses).to_json()
        if epoch_figure[0] != len(snap.history):  # as the page does: rebuilt on a new epoch only
            epoch_figure = (len(snap.history), epoch_curves_figure([m.as_dict() for m in snap.history]))
        epoch_figure[1].to_json()
        redraws += 1
    snap = job.snapshot()
    if snap.state != "finished":
        raise SystemExit(f"the job ended {snap.state}: {snap.message}")
    return [m.seconds for m in snap.history], redraws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-lesson-loop", dest="lesson_loop", action="store_false",
                        help="skip timing the lesson's DataLoader loop for scale")
    args = parser.parse_args()
    dataset = load_dataset("mnist", args.data_dir) if args.data_dir else load_with_fallback("mnist")[0]
    config = PRESETS["seed"].replace(**{"train.epochs": args.epochs, "train.device": args.device,
                                        "train.dataset": dataset.name})
    print(f"seed MLP, {args.epochs} epochs on {dataset.name} ({len(dataset.train_y):,} images), "
          f"device {args.device}")
    train(config.replace(**{"train.epochs": 1}), dataset)  # warm-up: allocator, threads, caches

    started = time.perf_counter()
    headless = headless_epochs(config, dataset)
    app, redraws = app_epochs(config, dataset, args.data_dir)
    headless_again = headless_epochs(config, dataset)  # bracket the app run against drift
    base = statistics.median(headless + headless_again)
    in_app = statistics.median(app)
    print("headless epoch seconds:", " ".join(f"{s:.3f}" for s in headless + headless_again))
    print(f"app job epoch seconds:  {' '.join(f'{s:.3f}' for s in app)}  ({redraws} redraws)")
    print(f"median headless {base:.3f} s, median in app {in_app:.3f} s "
          f"(measured in {time.perf_counter() - started:.0f} s)")
    print(f"app epoch takes {100 * (in_app / base - 1):+.1f}% vs headless")
    if args.lesson_loop:
        lesson = statistics.median(s for s, _ in lesson_loop(dataset, resolve_device(args.device),
                                                             args.epochs))
        print(f"lesson's loop {lesson:.3f} s per epoch: headless engine {lesson / base:.2f}x, "
              f"app job {lesson / in_app:.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
