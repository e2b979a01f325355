#!/usr/bin/env bash
# The project's GPU bench, run by ../shared/gpu-check.sh on a lent device machine (no streamlit or
# plotly there): four jobs at once on one GPU through the process runner against one alone, and
# whether the CUDA-graph step is used inside a worker.
set -uo pipefail
data=.gpu-data/mnist; dd=""; [[ -f $data/train-images-idx3-ubyte.gz ]] && dd="--data-dir $data"
echo "== 4 jobs at once on one GPU (process runner) vs one alone"
timeout 120 python3 -m bench.concurrent_jobs --jobs 4 --epochs 2 --device cuda $dd
echo "== the CUDA-graph step inside a worker process"
timeout 60 python3 - <<'PY'
from dlcore.engine.config import PRESETS
from dlcore.engine.data import load_with_fallback
from dlcore.runs.jobs import JobManager, TrainingJob
from dlcore.runs.process_runner import ProcessRunner

if __name__ == "__main__":
    dataset, _ = load_with_fallback("mnist")
    config = PRESETS["seed"].replace(**{"train.epochs": 1, "train.device": "cuda",
                                        "train.dataset": dataset.name})
    runner = ProcessRunner(1)
    job = JobManager(runner=runner).submit(TrainingJob(config, dataset))
    job.wait(50)
    snap = job.snapshot()
    print("state", snap.state, "place", snap.place, "cuda_graph",
          snap.result.cuda_graph if snap.result else None, snap.message)
    runner.close()
PY
