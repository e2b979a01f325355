"""`python -m dlcore train|bench`: output, JSON, the sample fallback, recording, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dlcore.cli import main as cli
from dlcore.engine.config import PRESETS, ModelSpec, TrainConfig
from dlcore.runs.store import RunStore

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SEEDS = (1, 2, 3)
EPOCH_LINE = re.compile(r"^Epoch 1: Train Acc: \d+\.\d\d%, Test Acc: \d+\.\d\d%$", re.M)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def dlcore(home: Path, *args: str, threads: int | None = 1, timeout: float = 600
           ) -> subprocess.CompletedProcess:
    """Run `python -m dlcore ARGS` with DLLAB_HOME=home (one torch thread unless asked: the tests
    check output, not speed, and a busy 2-core machine makes two threads crawl)."""
    env = {**os.environ, "DLLAB_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([sys.executable, "-m", "dlcore", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_prints_parameters_and_epochs_and_records_nothing_with_no_record(tmp_path: Path
                                                                                 ) -> None:
    run = dlcore(tmp_path, "train", "--preset", "seed", "--dataset", "mnist-sample", "--epochs", "1",
                 "--no-record")
    assert run.returncode == 0, run.stderr
    assert "Parameters: 535,818" in run.stdout.splitlines()
    assert EPOCH_LINE.search(run.stdout), run.stdout
    assert "Status: finished" in run.stdout and "recorded" not in run.stdout
    assert len(RunStore(tmp_path).list_runs()) == 0


def test_train_json_is_one_object_and_the_run_is_recorded(tmp_path: Path) -> None:
    run = dlcore(tmp_path, "train", "--dataset", "digits", "--hidden", "32", "--epochs", "2",
                 "--lr", "0.01", "--json", "--name", "tiny")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == 1
    out = json.loads(run.stdout)
    assert out["status"] == "finished" and out["dataset"] == "digits"
    assert out["params"] == 64 * 32 + 32 + 330
    assert out["config"]["model"]["hidden"] == [32] and out["config"]["train"]["lr"] == 0.01
    assert [m["epoch"] for m in out["history"]] == [1, 2]
    assert out["test_acc"] == out["history"][-1]["test_acc"]
    assert isinstance(out["run_id"], int)
    runs = RunStore(tmp_path).list_runs()
    assert list(runs["id"]) == [out["run_id"]]
    row = runs.iloc[0]
    assert (row["status"], row["name"], row["epochs"], row["dataset"]) == (
        "finished", "tiny", 2, "digits")
    assert row["test_acc"] == pytest.approx(out["test_acc"])
    assert RunStore(tmp_path).get_run(out["run_id"])["config"] == out["config"]


def test_missing_mnist_falls_back_to_the_sample_and_says_so(tmp_path: Path) -> None:
    run = dlcore(tmp_path, "train", "--epochs", "1", "--train-subset", "1000")
    assert run.returncode == 0, run.stderr
    assert "sample" in run.stderr and "MNIST" in run.stderr
    assert "pass --data-dir with a folder holding its files" in run.stderr  # what to do, for a CLI
    assert "Parameters: 535,818" in run.stdout
    assert "Dataset: mnist-sample" in run.stdout
    assert EPOCH_LINE.search(run.stdout), run.stdout
    runs = RunStore(tmp_path).list_runs()  # recorded by default
    assert len(runs) == 1 and runs.iloc[0]["dataset"] == "mnist-sample"
    assert runs.iloc[0]["train.train_subset"] == 1000


BAD_RUNS = [
    (["train", "--bogus"], "--bogus"),
    (["train", "--lr", "-1"], "train.lr"),
    (["train", "--hidden", "abc"], "--hidden"),
    (["train", "--device", "tpu"], "train.device"),
    (["train", "--data-dir", "/nonexistent"], "/nonexistent"),
]


def test_bad_arguments_exit_2_with_one_line(tmp_path: Path) -> None:
    """Real processes (so stray warnings on stderr would show), started together to save time."""
    env = {**os.environ, "DLLAB_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "dlcore", *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args, _ in BAD_RUNS]
    for proc, (args, mentions) in zip(procs, BAD_RUNS, strict=True):
        out, err = proc.communicate(timeout=600)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2, (args, err)
        assert len(lines) == 1, (args, err)
        assert mentions in lines[0] and "error" in lines[0], (args, err)
        assert out == "", (args, out)


@pytest.mark.parametrize("args,mentions", [
    (["train", "--dropout", "0.95"], "model.dropout"),
    (["train", "--epochs", "0"], "train.epochs"),
    (["train", "--epochs", "1.5"], "--epochs"),
    (["train", "--kernel-size", "4"], "model.kernel_size"),
    (["train", "--dataset", "imagenet"], "train.dataset"),
    (["train", "--hidden", "64,0"], "model.hidden"),
    (["train", "--batch-size", "0"], "train.batch_size"),
    (["train", "--preset", "huge"], "--preset"),
    (["bench", "--epochs", "0"], "--epochs"),
    (["bench", "--dataset", "digits"], "28x28"),
    (["frobnicate"], "frobnicate"),
    ([], "required"),
])
def test_more_bad_arguments_exit_2_with_one_line_in_process(
        args: list[str], mentions: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    try:
        code = cli.main(args)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and mentions in lines[0], captured.err
    assert captured.out == ""


def test_every_subcommand_says_its_errors_with_one_prefix(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as parsed:
        cli.main(["runs", "show"])
    assert parsed.value.code == 2
    assert capsys.readouterr().err.startswith("python -m dlcore: error: runs show: ")
    for args in (["runs", "show", "7"], ["baseline", "--dataset", "digits", "--trees", "0"],
                 ["train", "--epochs", "0"]):
        code, line = _one_line_code(args, capsys)
        assert code == 2 and line.startswith("python -m dlcore: error: "), (args, line)


def test_a_name_over_80_characters_or_on_two_lines_exits_2_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    train = ["train", "--dataset", "digits", "--hidden", "16", "--epochs", "1", "--name"]
    for name, mentions in (("n" * 81, "at most 80 characters"), ("a\n\n**b**", "one line")):
        assert cli.main([*train, name]) == 2
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and "--name" in lines[0] and mentions in lines[0], captured.err
        assert captured.out == ""
    assert len(RunStore(tmp_path).list_runs()) == 0
    assert cli.main([*train, "n" * 80]) == 0
    assert RunStore(tmp_path).list_runs()["name"].tolist() == ["n" * 80]


def test_every_config_field_has_a_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    args = cli.build_parser().parse_args([
        "train", "--preset", "cnn", "--kind", "mlp", "--hidden", "none", "--activation", "gelu",
        "--dropout", "0", "--norm", "layer", "--conv-channels", "8,16", "--kernel-size", "5",
        "--no-pool", "--dense", "32", "--dataset", "digits", "--optimizer", "sgd", "--lr", "1",
        "--momentum", "0.5", "--batch-size", "16", "--epochs", "3", "--weight-decay", "0.001",
        "--label-smoothing", "0.1", "--train-subset", "500", "--no-normalize", "--augment",
        "--early-stopping", "--patience", "2", "--val-fraction", "0.2", "--seed", "7",
        "--device", "cpu"])
    config = cli.config_from_args(args)
    assert config.model == ModelSpec("mlp", (), "gelu", 0.0, "layer", (8, 16), 5, False, 32)
    assert config.train == TrainConfig("digits", "sgd", 1.0, 0.5, 16, 3, 0.001, 0.1, 500, False,
                                       True, True, 2, 0.2, 7, "cpu")
    plain = cli.config_from_args(cli.build_parser().parse_args(["train"]))
    assert plain == PRESETS["seed"]


def test_train_in_process_cnn_preset_without_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    code = cli.main(["train", "--preset", "cnn", "--dataset", "digits", "--conv-channels", "8",
                     "--dense", "16", "--epochs", "1", "--json", "--no-record"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["run_id"] is None
    assert out["config"]["model"]["kind"] == "cnn"
    assert len(RunStore(tmp_path).list_runs()) == 0


def test_a_diverged_run_exits_1_and_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    code = cli.main(["train", "--dataset", "digits", "--lr", "10", "--epochs", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "learning rate" in out and "Status: diverged" in out
    assert RunStore(tmp_path).list_runs().iloc[0]["status"] == "diverged"


def _one_line_code(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = cli.main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return code, lines[0]


def test_an_out_of_memory_run_exits_1_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    from dlcore.runs import recording

    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    failure: list[BaseException] = [MemoryError()]

    def train(*args: object, **kwargs: object) -> None:
        raise failure[0]
    monkeypatch.setattr(recording, "train", train)
    args = ["train", "--dataset", "digits", "--epochs", "1"]
    code, line = _one_line_code(args, capsys)
    assert code == 1 and line.startswith("python -m dlcore: error: out of memory; try a smaller")
    assert RunStore(tmp_path).list_runs().iloc[0]["status"] == "failed"
    failure[0] = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB.\nIf reserved but "
                              "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF")
    code, line = _one_line_code(args + ["--no-record"], capsys)
    assert code == 1 and "out of memory (CUDA out of memory. Tried to allocate 2.00 GiB. If" in line
    failure[0] = OSError(28, "No space left on device")
    code, line = _one_line_code(args + ["--no-record"], capsys)
    assert code == 1 and line == "python -m dlcore: error: [Errno 28] No space left on device"
    failure[0] = KeyError("surprise")
    code, line = _one_line_code(args + ["--no-record"], capsys)
    assert code == 1 and line == "python -m dlcore: error: KeyError: 'surprise'"
    monkeypatch.setenv("DLLAB_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(args + ["--no-record"])


def test_an_interrupt_anywhere_exits_1_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt
    with monkeypatch.context() as mp:  # while the parser (and the subcommands' modules) load
        mp.setattr(cli, "build_parser", interrupted)
        assert _one_line_code(["runs", "list"], capsys) == (1, "python -m dlcore: error: interrupted")
    with monkeypatch.context() as mp:  # while the data loads
        mp.setattr(cli, "load_for_cli", interrupted)
        code, line = _one_line_code(["train", "--dataset", "digits"], capsys)
        assert (code, line) == (1, "python -m dlcore: error: interrupted")


def test_an_interrupt_between_epoch_records_keeps_the_run_as_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from dlcore.engine.train import train
    from dlcore.runs import recording

    def train_then_interrupt(*args: object, on_event, **kwargs: object) -> None:
        def once(event: object) -> None:
            on_event(event)
            if isinstance(event, recording.EpochEnd):
                raise KeyboardInterrupt
        train(*args, on_event=once, **kwargs)
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    monkeypatch.setattr(recording, "train", train_then_interrupt)
    code, line = _one_line_code(["train", "--dataset", "digits", "--hidden", "16"], capsys)
    assert (code, line) == (1, "python -m dlcore: error: interrupted")
    store = RunStore(tmp_path)
    run = store.get_run(int(store.list_runs()["id"][0]))
    assert run["status"] == "stopped" and "KeyboardInterrupt" not in run["message"]
    assert "interrupted" in run["message"] and len(store.epochs(run["id"])) == 1


def test_ctrl_c_stops_a_training_run_that_is_recorded_as_stopped_with_its_epochs(tmp_path: Path
                                                                                 ) -> None:
    env = {**os.environ, "DLLAB_HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "dlcore", "train", "--dataset", "digits",
                             "--hidden", "16", "--epochs", "500"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("Epoch 3:"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith("python -m dlcore: error: interrupted after ") and "Traceback" not in err
    assert "Status: stopped" in out
    store = RunStore(tmp_path)
    (run_id,) = store.list_runs()["id"]
    assert store.get_run(run_id)["status"] == "stopped" and len(store.epochs(run_id)) >= 3
    assert store.weights_path(run_id) is not None


# Runs `python -m dlcore runs list` with a Ctrl-C while dlcore.cli is imported.
INTERRUPTED_IMPORT = """
import runpy, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "dlcore.engine.config":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = ["dlcore", "runs", "list"]
runpy.run_module("dlcore", run_name="__main__", alter_sys=True)
"""


def test_an_interrupt_while_python_m_dlcore_starts_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DLLAB_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr.strip()) == (1, "python -m dlcore: error: interrupted")


def _bad_home(tmp_path: Path, kind: str) -> Path:
    if kind == "a file":
        (tmp_path / "home").write_text("not a folder")
        return tmp_path / "home"
    if kind == "runs.sqlite a folder":
        (tmp_path / "runs.sqlite").mkdir()
        return tmp_path
    return Path("/sys")  # a folder where no file can be made, even by root


@pytest.mark.parametrize("kind, why", [("a file", "it is a file, not a folder"),
                                       ("runs.sqlite a folder", "runs.sqlite: Is a directory"),
                                       ("/sys", "unable to open database file")])
def test_a_home_folder_the_history_cannot_use_exits_2_with_one_line_naming_it(
        kind: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    if kind == "/sys" and not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    home = _bad_home(tmp_path, kind)
    monkeypatch.setenv("DLLAB_HOME", str(home))
    said = f"python -m dlcore: error: the run history cannot be kept in {home} ({why})"
    code, line = _one_line_code(["runs", "list"], capsys)
    assert code == 2 and line.startswith(said), line

    def never(*args: object) -> None:
        raise AssertionError("the data was loaded before the store was opened")
    monkeypatch.setattr(cli, "load_for_cli", never)
    code, line = _one_line_code(["train", "--dataset", "digits"], capsys)
    assert code == 2 and line.startswith(said), line


# `python -m dlcore ARGS`, after its imports allowed only 1 GiB more address space.
CAPPED_CLI = """
import resource, sys
import torch, dlcore.engine.data, dlcore.cli.main
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
sys.exit(dlcore.cli.main.main(sys.argv[1:]))
"""


def test_a_gzip_bomb_in_the_data_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    from test_data import write_gzip_bomb

    bomb = write_gzip_bomb(tmp_path / "bomb")
    env = {**os.environ, "DLLAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-c", CAPPED_CLI, "train", "--data-dir",
                          str(tmp_path / "bomb"), "--epochs", "1", "--no-record"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
    assert lines[0].startswith("python -m dlcore: error: ") and str(bomb) in lines[0]
    assert "more data than the 7,840 bytes" in lines[0] and run.stdout == ""


def test_bench_prints_the_speedup_last(tmp_path: Path) -> None:
    run = dlcore(tmp_path, "bench", "--dataset", "mnist-sample", "--epochs", "1")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup vs seed loop: \d+\.\d\dx", lines[-1]), run.stdout
    assert any(line.startswith("seed loop  epoch 1:") for line in lines)
    assert any(line.startswith("engine     epoch 1:") for line in lines)
    assert any(line.startswith("accuracy difference:") for line in lines)


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists()
                    and not (MNIST_DIR / "train-images-idx3-ubyte").exists(),
                    reason=f"real MNIST not at {MNIST_DIR}")
def test_seed_preset_reaches_98_percent_on_real_mnist_in_10_epochs(tmp_path: Path) -> None:
    """The lesson's "about 98%" as the mean of three seeds: one seed's result moves by about 0.2
    points between machines of the same kind (seed 42: 97.84% here, 98.17% in an earlier session;
    seeds 1, 2, 3 gave 98.21, 98.21, 97.91 on another machine)."""
    finals = []
    for seed in SEEDS:
        run = dlcore(tmp_path, "train", "--preset", "seed", "--data-dir", str(MNIST_DIR),
                     "--epochs", "10", "--seed", str(seed), "--json", "--no-record", threads=None,
                     timeout=1800)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["dataset"] == "mnist" and len(out["history"]) == 10
        accuracy = [round(100 * m["test_acc"], 2) for m in out["history"]]
        seconds = [round(m["seconds"], 2) for m in out["history"]]
        print(f"\nseed {seed}: test accuracy % {accuracy}; per-epoch seconds {seconds}")
        finals.append(out["test_acc"])
    mean = sum(finals) / len(finals)
    print(f"mean of seeds {SEEDS}: {100 * mean:.2f}%")
    assert mean >= 0.979  # about 98%
    assert min(finals) >= 0.975  # and no seed far from it
