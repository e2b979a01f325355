"""The run history: round trips, concurrent writers, killed runs, corrupt files, CSV and the CLI."""

from __future__ import annotations

import argparse
import json
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

from dlcore.cli import runs as cli_runs
from dlcore.engine.config import RunConfig
from dlcore.runs.store import SCHEMA_VERSION, UNREADABLE, RunStore, StoreError, unreadable_note

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
    key = store.get_run(run_id)["weights_key"]
    assert len(key) == 16 and store.weights_path(run_id) == store.home / "weights" / f"{key}.pt"
    assert [p.name for p in (store.home / "weights").iterdir()] == [f"{key}.pt"]


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
    from dlcore.runs.store import RunStore
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
        assert captured.err.strip() == f"python -m dlcore: error: no run {b}" and captured.out == ""


def test_a_home_the_history_cannot_use_is_one_store_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match=f"cannot be kept in {tmp_path / 'file'} "
                                         r"\(it is a file, not a folder\)"):
        RunStore(tmp_path / "file")
    (tmp_path / "runs.sqlite").mkdir()
    with pytest.raises(StoreError, match=r"runs\.sqlite: Is a directory"):
        RunStore(tmp_path)


def test_a_row_whose_config_or_tags_are_not_json_is_listed_without_them(
        store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = store.start_run(CONFIG, dataset="digits", device="cpu", name="good")
    bad = store.start_run(CONFIG, dataset="digits", device="cpu", name="bad config")
    odd = store.start_run(CONFIG, dataset="digits", device="cpu", name="bad tags")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET config = '{\"model\": ' WHERE id = ?", (bad,))
        conn.execute("UPDATE runs SET tags = '[\"a' WHERE id = ?", (odd,))
    runs = store.list_runs().set_index("id")
    assert list(runs.index) == [odd, bad, good] and runs.attrs[UNREADABLE] == [odd, bad]
    assert runs.loc[good, "train.lr"] == 0.01 and pd.isna(runs.loc[bad, "train.lr"])
    assert runs.loc[odd, "tags"] == "" and runs.loc[odd, "train.lr"] == 0.01
    run = store.get_run(bad)
    assert run["config"] is None and run["unreadable"] and not store.get_run(good)["unreadable"]
    assert unreadable_note([bad]).startswith(f"Run {bad} has settings or tags")
    assert unreadable_note([odd, bad]).startswith(f"Runs {bad} and {odd} have")
    assert unreadable_note([]) is None

    home = str(store.home)
    for args in (["list"], ["show", str(bad)], ["export", "--csv", str(tmp_path / "all.csv")]):
        assert _cli("runs", "--home", home, *args) == 0, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot be read (not valid JSON)" in err[0], (args, err)
    assert len(pd.read_csv(tmp_path / "all.csv")) == 3


def test_schema_version_and_newer_databases(store: RunStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer"):
        RunStore(store.home)


# History that cannot lie: ids, weights after a reset, dead recorders, old files, damaged weights.

def _weights() -> dict:
    return torch.nn.Linear(2, 2).state_dict()


def test_ids_are_never_reused_after_deleting_the_newest_run(store: RunStore) -> None:
    a = store.start_run(CONFIG, dataset="digits", device="cpu")
    b = store.start_run(CONFIG, dataset="digits", device="cpu")
    store.finish_run(b, "finished", state_dict=_weights())
    store.delete(b)
    c = RunStore(store.home).start_run(CONFIG, dataset="digits", device="cpu")  # reopened too
    assert c > b > a
    assert store.weights_path(c) is None
    with pytest.raises(StoreError, match="no saved weights"):
        store.load_weights(c)


def test_a_reset_history_never_attaches_old_weights_to_a_new_run(tmp_path: Path) -> None:
    old = RunStore(tmp_path)
    first = old.start_run(CONFIG, dataset="digits", device="cpu", name="old run")
    old.finish_run(first, "finished", metrics={"test_acc": 0.9306}, state_dict=_weights())
    old_file = old.weights_path(first)
    (tmp_path / "runs.sqlite").write_bytes(b"not a database any more" * 300)  # corrupt it
    store = RunStore(tmp_path)
    assert store.notice and "moved aside" in store.notice
    new = store.start_run(CONFIG, dataset="digits", device="cpu", name="new run")
    assert new == first == 1  # a new file counts from 1 again...
    assert store.weights_path(new) is None  # ...but the old run 1's weights are not its own
    with pytest.raises(StoreError, match="no saved weights"):
        store.load_weights(new)
    store.finish_run(new, "finished", state_dict=torch.nn.Linear(3, 3).state_dict())
    assert store.weights_path(new) != old_file and old_file.exists()  # the old file is untouched
    assert store.load_weights(new)["weight"].shape == (3, 3)
    store.delete(new)
    assert old_file.exists()


def _pretend_recorded_by(store: RunStore, run_id: int, pid: int, token: str | None) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET pid = ?, pid_token = ? WHERE id = ?", (pid, token, run_id))


def test_runs_of_pid_1_or_a_reused_pid_become_interrupted_and_can_be_deleted(
        store: RunStore) -> None:
    in_container = store.start_run(CONFIG, dataset="digits", device="cpu")
    reused = store.start_run(CONFIG, dataset="digits", device="cpu")
    store.add_epoch(reused, {"epoch": 1, "train_loss": 0.7})
    mine = store.start_run(CONFIG, dataset="digits", device="cpu")
    _pretend_recorded_by(store, in_container, 1, "a-boot-long-ago:42")  # PID 1 is alive, not it
    _pretend_recorded_by(store, reused, os.getpid(), "another-process:7")  # our PID, not our run
    assert store.mark_interrupted() == 2
    runs = store.list_runs().set_index("id")
    assert list(runs.loc[[in_container, reused], "status"]) == ["interrupted", "interrupted"]
    assert "ended before the run finished" in runs.loc[in_container, "message"]
    assert runs.loc[mine, "status"] == "running"  # this process recorded it and is alive
    assert list(store.epochs(reused)["train_loss"]) == [0.7]
    store.delete(in_container)
    store.delete(reused)
    assert list(store.list_runs()["id"]) == [mine]


def test_a_stuck_run_can_be_marked_interrupted_on_request(store: RunStore) -> None:
    elsewhere = store.start_run(CONFIG, dataset="digits", device="cpu")
    with sqlite3.connect(store.path) as conn:  # recorded on another machine: cannot be checked
        conn.execute("UPDATE runs SET host = 'another-host' WHERE id = ?", (elsewhere,))
    legacy = store.start_run(CONFIG, dataset="digits", device="cpu")
    _pretend_recorded_by(store, legacy, 1, None)  # an older DL Lab as a container's PID 1
    mine = store.start_run(CONFIG, dataset="digits", device="cpu")
    assert store.mark_interrupted() == 0 and store.get_run(elsewhere)["status"] == "running"
    assert store.get_run(legacy)["status"] == "running"  # PID 1 lives: nothing proves it gone
    assert not store.recorder_alive(elsewhere) and not store.recorder_alive(legacy)
    assert store.recorder_alive(mine)
    store.mark_run_interrupted(elsewhere)
    store.mark_run_interrupted(legacy)
    store.delete(legacy)
    run = store.get_run(elsewhere)
    assert run["status"] == "interrupted" and "by hand" in run["message"]
    with pytest.raises(StoreError, match="still being recorded"):
        store.mark_run_interrupted(mine)
    with pytest.raises(StoreError, match="not running"):
        store.mark_run_interrupted(elsewhere)
    store.delete(elsewhere)
    assert store.get_run(mine)["status"] == "running"


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (id INTEGER PRIMARY KEY, created TEXT NOT NULL, name TEXT,
  tags TEXT NOT NULL DEFAULT '[]', dataset TEXT, config TEXT NOT NULL, device TEXT,
  status TEXT NOT NULL, pid INTEGER, host TEXT, test_acc REAL, test_loss REAL, train_acc REAL,
  train_loss REAL, params INTEGER, duration_s REAL, message TEXT NOT NULL DEFAULT '');
CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
  test_loss REAL, test_acc REAL, seconds REAL, PRIMARY KEY (run_id, epoch));
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_schema_1_file_is_migrated_and_keeps_its_runs_epochs_and_weights(
        tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "runs.sqlite") as conn:
        conn.executescript(V1_SCHEMA)
        for run_id, name in ((1, "kept"), (2, "with weights")):
            conn.execute("INSERT INTO runs (id, created, name, tags, dataset, config, device,"
                         " status, pid, host, test_acc) VALUES (?, '2026-01-01T00:00:00+00:00', ?,"
                         " '[\"old\"]', 'digits', ?, 'cpu', 'finished', 999999, 'h', 0.5)",
                         (run_id, name, json.dumps(CONFIG)))
            conn.execute("INSERT INTO epochs (run_id, epoch, train_loss) VALUES (?, 1, 0.25)",
                         (run_id,))
    conn.close()
    (tmp_path / "weights").mkdir()
    torch.save(_weights(), tmp_path / "weights" / "2.pt")  # schema 1 named weights by run id

    store = RunStore(tmp_path)
    assert store.notice is None
    runs = store.list_runs().set_index("id")
    assert list(runs.index) == [2, 1] and list(runs["name"]) == ["with weights", "kept"]
    assert runs.loc[1, "tags"] == "old" and store.get_run(1)["config"] == CONFIG
    assert list(store.epochs(1)["train_loss"]) == [0.25]
    assert store.weights_path(1) is None and set(store.load_weights(2)) == {"weight", "bias"}
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)
        assert "AUTOINCREMENT" in conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    conn.close()
    store.delete(2)  # epochs still cascade, weights still go with their run
    assert not (tmp_path / "weights" / "2.pt").exists()
    assert store.start_run(CONFIG, dataset="digits", device="cpu") == 3  # 2 is not reused
    with pytest.raises(StoreError):
        store.epochs(2)
    assert RunStore(tmp_path).list_runs().shape[0] == 2
    assert store.get_run(1)["owner"] is None  # runs from before owners belong to nobody


def test_a_schema_2_file_gains_owners_and_keeps_its_runs(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "runs.sqlite") as conn:
        conn.executescript(V1_SCHEMA.replace("INTEGER PRIMARY KEY, created",
                                             "INTEGER PRIMARY KEY AUTOINCREMENT, created")
                           .replace("message TEXT NOT NULL DEFAULT '');",
                                    "message TEXT NOT NULL DEFAULT '', pid_token TEXT,"
                                    " weights_key TEXT);")
                           .replace("'schema_version', '1'", "'schema_version', '2'"))
        conn.execute("INSERT INTO runs (created, name, config, status, weights_key) VALUES"
                     " ('2026-01-01T00:00:00+00:00', 'old', ?, 'finished', 'k')",
                     (json.dumps(CONFIG),))
    conn.close()
    store = RunStore(tmp_path)
    assert store.get_run(1)["name"] == "old" and store.get_run(1)["owner"] is None
    new = store.start_run(CONFIG, dataset="digits", device="cpu", owner="abc", owner_name="Ada")
    assert new == 2 and store.list_runs().set_index("id").loc[2, "owner_name"] == "Ada"
    assert store.get_run(new)["owner"] == "abc"


@pytest.mark.parametrize("content", [b"garbage, not a weights file" * 10, b""],
                         ids=["garbage", "empty"])
def test_a_damaged_weights_file_is_said_in_our_words(store: RunStore, content: bytes) -> None:
    run_id = store.start_run(CONFIG, dataset="digits", device="cpu")
    store.finish_run(run_id, "finished", state_dict=_weights())
    store.weights_path(run_id).write_bytes(content)
    with pytest.raises(StoreError) as caught:
        store.load_weights(run_id)
    text = str(caught.value)
    assert f"the weights file of run {run_id} is damaged or not a weights file" in text
    assert "weights_only" not in text and caught.value.__cause__ is None


def test_a_pickle_that_is_not_only_tensors_is_refused(store: RunStore) -> None:
    run_id = store.start_run(CONFIG, dataset="digits", device="cpu")
    store.finish_run(run_id, "finished", state_dict=_weights())
    torch.save({"weight": argparse.Namespace(x=1)}, store.weights_path(run_id))
    with pytest.raises(StoreError, match="damaged or not a weights file") as caught:
        store.load_weights(run_id)
    assert "weights_only" not in str(caught.value)
