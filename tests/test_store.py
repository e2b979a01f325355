"""The run history: round trips, concurrent writers, killed runs, corrupt files, CSV and the CLI."""

from __future__ import annotations

import argparse
import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from dlcore import cli_runs
from dlcore.config import RunConfig
from dlcore.store import RunStore, StoreError

REPO = Path(__file__).resolve().parents[1]
CONFIG = RunConfig().replace(**{"model.hidden": (64, 32), "train.lr": 0.01}).to_dict()


def _epoch(e: int) -> dict:
    return {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + e / 100, "val_loss": None,
            "val_acc": 0.4 + e / 100, "test_loss": 2.0 / e, "test_acc": 0.3 + e / 100,
            "seconds": 0.25 * e}


def _same(a: object, b: object) -> bool:
    if b is None:
        return a is None or (isinstance(a, float) and math.isnan(a))
    return a == pytest.approx(b)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path)


def test_run_round_trips_config_epochs_and_weights(store: RunStore) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    run_id = store.start_run(CONFIG, dataset="digits", device="cpu", name="first", params=15)
    for e in range(1, 4):
        store.add_epoch(run_id, _epoch(e))
    store.finish_run(run_id, "finished", metrics={"test_acc": 0.33, "test_loss": 0.66},
                     duration_s=1.5, message="done", state_dict=model.state_dict())
    run = store.get_run(run_id)
    assert run["config"] == CONFIG
    assert RunConfig.from_dict(run["config"]).to_dict() == CONFIG
    assert (run["status"], run["name"], run["dataset"], run["params"]) == (
        "finished", "first", "digits", 15)
    assert (run["test_acc"], run["duration_s"], run["message"]) == (0.33, 1.5, "done")
    assert run["pid"] == os.getpid()
    epochs = store.epochs(run_id)
    assert list(epochs["epoch"]) == [1, 2, 3]
    for row in epochs.to_dict("records"):
        assert all(_same(row[k], v) for k, v in _epoch(row["epoch"]).items())

    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(store.load_weights(run_id))
    x = torch.randn(5, 4)
    assert torch.equal(fresh(x), model(x))
    assert store.weights_path(run_id) == store.home / "weights" / f"{run_id}.pt"
    assert [p.name for p in (store.home / "weights").iterdir()] == [f"{run_id}.pt"]


def test_edits_listing_and_errors(store: RunStore) -> None:
    a = store.start_run(CONFIG, dataset="digits", device="cpu")
    b = store.start_run(RunConfig().to_dict(), dataset="mnist", device="cuda")
    store.rename(a, "renamed")
    store.set_tags(a, ["baseline", " small ", ""])
    runs = store.list_runs()
    assert list(runs["id"]) == [b, a]
    first = runs.set_index("id").loc[a]
    assert (first["name"], first["tags"], first["epochs"]) == ("renamed", "baseline, small", 0)
    assert first["model.hidden"] == (64, 32) and first["train.lr"] == 0.01
    assert store.get_run(a)["tags"] == ["baseline", "small"]
    with pytest.raises(StoreError, match="no run 99"):
        store.get_run(99)
    with pytest.raises(StoreError):
        store.add_epoch(a, {"epoch": 1, "accuracy": 0.5})
    with pytest.raises(StoreError):
        store.finish_run(a, "exploded")
    with pytest.raises(StoreError):
        store.load_weights(a)
    store.finish_run(b, "stopped", state_dict=torch.nn.Linear(2, 2).state_dict())
    store.delete(b)
    assert store.weights_path(b) is None and list(store.list_runs()["id"]) == [a]
    with pytest.raises(StoreError):
        store.delete(b)
    assert RunStore(store.home).list_runs().shape[0] == 1  # reopening keeps everything
    assert RunStore(store.home).notice is None


def test_eight_threads_writing_at_once_lose_nothing(store: RunStore) -> None:
    barrier, errors = threading.Barrier(8), []

    def work(i: int) -> None:
        try:
            barrier.wait()
            run_id = store.start_run(CONFIG, dataset="digits", device="cpu", name=f"t{i}")
            for e in range(1, 21):
                store.add_epoch(run_id, {"epoch": e, "train_loss": i + e / 100})
            store.finish_run(run_id, "finished", metrics={"test_acc": i / 10})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    runs = store.list_runs()
    assert sorted(runs["name"]) == [f"t{i}" for i in range(8)]
    assert (runs["epochs"] == 20).all() and (runs["status"] == "finished").all()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 160
    for run_id, name in zip(runs["id"], runs["name"], strict=True):
        i = int(name[1:])
        assert list(store.epochs(run_id)["train_loss"]) == pytest.approx(
            [i + e / 100 for e in range(1, 21)])


# The process that gets killed mid-run. Later `python -m dlcore train ...` can stand in for it:
# all the test needs is a child that records a run with 2 epochs and then prints READY.
RUNNER = textwrap.dedent("""
    import time
    from dlcore.store import RunStore
    store = RunStore()
    run_id = store.start_run({"model": {}, "train": {}}, dataset="digits", device="cpu")
    store.add_epoch(run_id, {"epoch": 1, "train_loss": 0.9})
    store.add_epoch(run_id, {"epoch": 2, "train_loss": 0.5})
    print("READY", run_id, flush=True)
    time.sleep(120)
""")


def test_killed_run_becomes_interrupted_with_its_epochs(tmp_path: Path) -> None:
    env = {**os.environ, "DLLAB_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        output = ""
        while "READY" not in output:
            output += lines.get(timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)  # reaped: a zombie would still answer os.kill(pid, 0)
    mine = RunStore(tmp_path).start_run(CONFIG, dataset="digits", device="cpu")
    store = RunStore(tmp_path)
    runs = store.list_runs().set_index("id")
    killed = int(runs.index[runs["pid"] == proc.pid][0])
    assert runs.loc[killed, "status"] == "interrupted"
    assert "ended before the run finished" in runs.loc[killed, "message"]
    assert list(store.epochs(killed)["train_loss"]) == [0.9, 0.5]
    assert runs.loc[mine, "status"] == "running"  # this process is alive: left alone


def _assert_moved_aside(tmp_path: Path, old_bytes: bytes) -> RunStore:
    store = RunStore(tmp_path)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("runs.sqlite.corrupt-")
             and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == old_bytes
    assert store.notice and "moved aside" in store.notice and str(aside[0]) in store.notice
    assert store.list_runs().empty
    run_id = store.start_run(CONFIG, dataset="digits", device="cpu")
    store.add_epoch(run_id, {"epoch": 1, "train_loss": 0.1})
    assert RunStore(tmp_path).notice is None and len(RunStore(tmp_path).list_runs()) == 1
    return store


def test_a_file_that_is_not_sqlite_is_moved_aside(tmp_path: Path) -> None:
    garbage = os.urandom(5000)
    (tmp_path / "runs.sqlite").write_bytes(garbage)
    (tmp_path / "runs.sqlite-wal").write_bytes(b"stale wal")
    _assert_moved_aside(tmp_path, garbage)
    wal = [p for p in tmp_path.iterdir() if p.name.endswith("-wal") and "corrupt" in p.name]
    assert len(wal) == 1 and wal[0].read_bytes() == b"stale wal"


def test_a_truncated_database_is_moved_aside(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for i in range(20):
        run_id = store.start_run(CONFIG, dataset="digits", device="cpu", name=f"r{i}" * 50)
        for e in range(1, 11):
            store.add_epoch(run_id, _epoch(e))
    path = tmp_path / "runs.sqlite"
    assert not Path(f"{path}-wal").exists()  # checkpointed into the main file
    size = path.stat().st_size
    assert size >= 8 * 4096
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    _assert_moved_aside(tmp_path, path.read_bytes())


def test_export_csv_parses_back_to_the_same_numbers(store: RunStore, tmp_path: Path) -> None:
    a = store.start_run(CONFIG, dataset="digits", device="cpu", name="with epochs")
    for e in range(1, 4):
        store.add_epoch(a, _epoch(e))
    store.finish_run(a, "finished", metrics={"test_acc": 0.875, "params": 1234}, duration_s=2.5)
    b = store.start_run(CONFIG, dataset="mnist", device="cpu", name="no epochs")
    out = tmp_path / "runs.csv"
    assert store.export_csv(out) == 4
    table = pd.read_csv(out)
    assert len(table) == 4
    rows_a = table[table["run_id"] == a].sort_values("epoch")
    assert list(rows_a["epoch"]) == [1, 2, 3]
    for row in rows_a.to_dict("records"):
        assert all(_same(row[k], v) for k, v in _epoch(row["epoch"]).items())
        assert (row["final_test_acc"], row["final_params"], row["duration_s"]) == (0.875, 1234, 2.5)
        assert row["train.lr"] == 0.01 and row["name"] == "with epochs"
    row_b = table[table["run_id"] == b].iloc[0]
    assert math.isnan(row_b["epoch"]) and row_b["status"] == "running"
    assert RunStore(tmp_path / "empty").export_csv(tmp_path / "empty.csv") == 0


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_runs.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_runs_cli(store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(store.home)
    assert _cli("runs", "--home", home, "list") == 0
    assert "No runs yet" in capsys.readouterr().out
    a = store.start_run(CONFIG, dataset="digits", device="cpu", name="alpha")
    for e in range(1, 3):
        store.add_epoch(a, _epoch(e))
    store.finish_run(a, "finished", metrics={"test_acc": 0.9123})
    b = store.start_run(CONFIG, dataset="mnist", device="cpu", name="beta")

    assert _cli("runs", "list", "--home", home) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "created", "name", "dataset", "status", "test_acc", "epochs"]
    assert out[1].split()[0] == str(b) and "alpha" in out[2] and "0.9123" in out[2]
    assert out[2].split()[-1] == "2"

    assert _cli("runs", "--home", home, "show", str(a)) == 0
    out = capsys.readouterr().out
    assert '"lr": 0.01' in out and "alpha" in out and "0.5000" in out  # train_loss of epoch 2

    csv = tmp_path / "out.csv"
    assert _cli("runs", "--home", home, "export", "--csv", str(csv)) == 0
    assert "3 rows" in capsys.readouterr().out and len(pd.read_csv(csv)) == 3

    assert _cli("runs", "--home", home, "delete", str(b)) == 0
    assert list(store.list_runs()["id"]) == [a]
    capsys.readouterr()
    for action in ("show", "delete"):
        assert _cli("runs", "--home", home, action, str(b)) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == f"dllab runs: no run {b}" and captured.out == ""


def test_schema_version_and_newer_databases(store: RunStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",)
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer"):
        RunStore(store.home)
