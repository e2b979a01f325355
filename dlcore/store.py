"""The run history: every training run, its epochs and its weights, in one SQLite database.

`runs.sqlite` (WAL mode) lives in the app's home folder (`$DLLAB_HOME`, default `~/.dllab`),
weights beside it as `weights/<run_id>.pt`. Every method opens its own short-lived connection
and every write is one transaction, so one `RunStore` can be shared by threads and processes
(all sessions of a Streamlit server see one leaderboard). A file that is not a readable SQLite
database is moved aside, never deleted, and `RunStore.notice` says where it went.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dlcore.paths import home_dir

SCHEMA_VERSION = 1
STATUSES = ("running", "finished", "stopped", "diverged", "failed", "interrupted")
EPOCH_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "seconds")
FINAL_COLUMNS = ("test_acc", "test_loss", "train_acc", "train_loss", "params")
RUN_COLUMNS = ("id", "created", "name", "tags", "dataset", "device", "status", *FINAL_COLUMNS,
               "duration_s", "epochs", "pid", "host", "message")
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """A run that does not exist, or a request the store cannot honour; the message says which."""


def _migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Bring the schema from `from_version` to SCHEMA_VERSION, in the caller's transaction."""
    if from_version < 1:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, created TEXT NOT NULL,"
            " name TEXT, tags TEXT NOT NULL DEFAULT '[]', dataset TEXT, config TEXT NOT NULL,"
            " device TEXT, status TEXT NOT NULL, pid INTEGER, host TEXT, test_acc REAL,"
            " test_loss REAL, train_acc REAL, train_loss REAL, params INTEGER, duration_s REAL,"
            " message TEXT NOT NULL DEFAULT '')")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS epochs (run_id INTEGER NOT NULL REFERENCES runs(id)"
            " ON DELETE CASCADE, epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL,"
            " val_loss REAL, val_acc REAL, test_loss REAL, test_acc REAL, seconds REAL,"
            " PRIMARY KEY (run_id, epoch))")
    # A later release adds: `if from_version < 2: conn.execute("ALTER TABLE ...")`.
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                 (str(SCHEMA_VERSION),))


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (unknown counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":  # there os.kill(pid, 0) would send CTRL_C_EVENT; ask the kernel instead
        import ctypes
        kernel32, code = ctypes.WinDLL("kernel32", use_last_error=True), ctypes.c_ulong()
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to someone else
        pass
    return True


def _numeric(frame: pd.DataFrame, columns: Any) -> pd.DataFrame:
    """Metric columns as floats (missing = NaN) and 'params' as a nullable integer."""
    for column in columns:
        kind = "Int64" if column == "params" else float
        frame[column] = pd.to_numeric(frame[column]).astype(kind)
    return frame


def _now() -> datetime:
    return datetime.now(UTC)


class RunStore:
    """The run history in `<home>/runs.sqlite`; safe to share across threads and processes."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else home_dir()
        self.path = self.home / "runs.sqlite"
        self.weights_dir = self.home / "weights"
        self.notice: str | None = None
        self.home.mkdir(parents=True, exist_ok=True)
        reason = self._check_file()
        if reason is not None:
            aside = self._move_aside()
            self.notice = (f"The run history {self.path} could not be read ({reason}); it was "
                           f"moved aside to {aside} and a fresh, empty history was started.")
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        with self._write() as conn:
            version = self._schema_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer DL Lab (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION}); upgrade to use it")
            if version < SCHEMA_VERSION:
                _migrate(conn, version)
        self.mark_interrupted()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, locked up front (BEGIN IMMEDIATE): writers queue, no deadlock."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _check_file(self) -> str | None:
        """None when the file is absent, empty or a healthy SQLite database; else what is wrong."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as f:
            if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                return "it is not an SQLite database"
        try:
            with self._connect() as conn:
                rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            corrupt = ((code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
                       if code is not None else not isinstance(exc, sqlite3.OperationalError))
            if not corrupt:  # locked, unreadable, disk full...: not ours to move
                raise StoreError(f"cannot open the run history {self.path}: {exc}") from exc
            return f"SQLite says: {exc}"
        if rows != ["ok"]:
            return "integrity check failed: " + "; ".join(map(str, rows[:3]))
        return None

    def _move_aside(self) -> Path:
        stamp = _now().strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        os.replace(self.path, aside)
        for side in (Path(f"{self.path}{suffix}") for suffix in ("-wal", "-shm")):
            if side.exists():
                os.replace(side, f"{aside}{side.name[len(self.path.name):]}")
        return aside

    def _require(self, conn: sqlite3.Connection, run_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id}")
        return row

    def start_run(self, config: dict, *, dataset: str, device: str, name: str | None = None,
                  params: int | None = None) -> int:
        """Record a new run as 'running' by this process; returns its id."""
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        try:
            config_json = json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"config is not JSON-able: {exc}") from exc
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (created, name, dataset, config, device, status, pid, host,"
                " params) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (_now().isoformat(timespec="seconds"), name, dataset, config_json, device,
                 os.getpid(), socket.gethostname(), None if params is None else int(params)))
            return int(cur.lastrowid)

    def add_epoch(self, run_id: int, metrics: dict) -> None:
        """Record (or overwrite) one epoch's metrics; committed before it returns."""
        unknown = set(metrics) - {"epoch", *EPOCH_COLUMNS}
        if "epoch" not in metrics or unknown:
            raise StoreError(f"epoch metrics need 'epoch' and only {', '.join(EPOCH_COLUMNS)}; "
                             f"got {sorted(metrics)}")
        values = [None if metrics.get(c) is None else float(metrics[c]) for c in EPOCH_COLUMNS]
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute(
                f"INSERT OR REPLACE INTO epochs (run_id, epoch, {', '.join(EPOCH_COLUMNS)})"
                f" VALUES (?, ?{', ?' * len(EPOCH_COLUMNS)})",
                (int(run_id), int(metrics["epoch"]), *values))

    def finish_run(self, run_id: int, status: str, *, metrics: dict | None = None,
                   duration_s: float | None = None, message: str = "",
                   state_dict: dict | None = None) -> None:
        """Close a run: its status, final metrics, duration, message and (optionally) weights."""
        if status not in STATUSES:
            raise StoreError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        metrics = dict(metrics or {})
        if unknown := set(metrics) - set(FINAL_COLUMNS):
            raise StoreError(f"final metrics may be only {', '.join(FINAL_COLUMNS)}; "
                             f"got {sorted(unknown)}")
        with self._connect() as conn:
            self._require(conn, run_id)
        if state_dict is not None:
            self._save_weights(run_id, state_dict)
        sets = {c: (int(v) if c == "params" else float(v)) if v is not None else None
                for c, v in metrics.items()}
        sets.update(status=status, message=message or "",
                    duration_s=None if duration_s is None else float(duration_s))
        self._change(run_id, f"UPDATE runs SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ?",
                     *sets.values())

    def _save_weights(self, run_id: int, state_dict: dict) -> None:
        import torch

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        final = self.weights_dir / f"{int(run_id)}.pt"
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save({k: v.detach().cpu() if hasattr(v, "detach") else v
                            for k, v in state_dict.items()}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def mark_interrupted(self) -> int:
        """Runs left 'running' on this host by a process that is gone become 'interrupted'."""
        host = socket.gethostname()
        with self._connect() as conn:
            rows = conn.execute("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?",
                                (host,)).fetchall()
        dead = [(r["id"], r["pid"]) for r in rows
                if r["pid"] is not None and not _pid_alive(r["pid"])]
        if not dead:
            return 0
        count = 0
        with self._write() as conn:
            for run_id, pid in dead:
                note = f"process {pid} on {host} ended before the run finished; its epochs are kept"
                count += conn.execute("UPDATE runs SET status = 'interrupted', message = ? WHERE"
                                      " id = ? AND status = 'running'", (note, run_id)).rowcount
        return count

    def _change(self, run_id: int, sql: str, *values: Any) -> None:
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute(sql, (*values, int(run_id)))

    def rename(self, run_id: int, name: str) -> None:
        self._change(run_id, "UPDATE runs SET name = ? WHERE id = ?", name)

    def set_tags(self, run_id: int, tags: list[str]) -> None:
        clean = [str(t).strip() for t in tags if str(t).strip()]
        self._change(run_id, "UPDATE runs SET tags = ? WHERE id = ?", json.dumps(clean))

    def delete(self, run_id: int) -> None:
        """Delete a run, its epochs (cascade) and its weights file."""
        self._change(run_id, "DELETE FROM runs WHERE id = ?")
        (self.weights_dir / f"{int(run_id)}.pt").unlink(missing_ok=True)

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
        run = dict(row)
        run["config"] = json.loads(run["config"])
        run["tags"] = json.loads(run["tags"] or "[]")
        return run

    def get_run(self, run_id: int) -> dict:
        """The run's row as a dict, with 'config' parsed and 'tags' a list."""
        with self._connect() as conn:
            return self._run_dict(self._require(conn, run_id))

    def list_runs(self) -> pd.DataFrame:
        """One row per run, newest first: run columns, 'epochs' (count), then config columns
        flattened as "model.hidden", "train.lr", ... (lists as tuples); tags comma-joined."""
        with self._connect() as conn:
            rows = conn.execute("SELECT r.*, (SELECT COUNT(*) FROM epochs e WHERE e.run_id = r.id)"
                                " AS epochs FROM runs r ORDER BY r.id DESC").fetchall()
        records = []
        for row in rows:
            run = self._run_dict(row)
            record = {c: run[c] for c in RUN_COLUMNS}
            record["tags"] = ", ".join(run["tags"])
            for section, values in run["config"].items():
                if isinstance(values, dict):
                    for key, value in values.items():
                        value = tuple(value) if isinstance(value, list) else value
                        record[f"{section}.{key}"] = value
            records.append(record)
        frame = pd.DataFrame(records, columns=None if records else list(RUN_COLUMNS))
        return _numeric(frame, [*FINAL_COLUMNS, "duration_s"])

    def epochs(self, run_id: int) -> pd.DataFrame:
        """The run's epochs in order: epoch plus the metric columns."""
        with self._connect() as conn:
            self._require(conn, run_id)
            rows = conn.execute(f"SELECT epoch, {', '.join(EPOCH_COLUMNS)} FROM epochs WHERE"
                                " run_id = ? ORDER BY epoch", (int(run_id),)).fetchall()
        return _numeric(pd.DataFrame([tuple(r) for r in rows], columns=["epoch", *EPOCH_COLUMNS]),
                        EPOCH_COLUMNS)

    def export_csv(self, path: str | Path) -> int:
        """All runs joined with their epochs, one row per (run, epoch) (a run with none gets one);
        final run metrics are prefixed 'final_'. Returns the number of rows written."""
        runs = self.list_runs().rename(columns={"id": "run_id", "epochs": "num_epochs",
                                                **{c: f"final_{c}" for c in FINAL_COLUMNS}})
        with self._connect() as conn:
            rows = conn.execute(f"SELECT run_id, epoch, {', '.join(EPOCH_COLUMNS)} FROM epochs"
                                ).fetchall()
        epochs = pd.DataFrame([tuple(r) for r in rows], columns=["run_id", "epoch", *EPOCH_COLUMNS])
        if runs.empty:
            runs = runs.astype({"run_id": "int64"})
        table = runs.merge(epochs, on="run_id", how="left").sort_values(["run_id", "epoch"])
        table["epoch"] = table["epoch"].astype("Int64")
        table.to_csv(path, index=False)
        return len(table)

    def weights_path(self, run_id: int) -> Path | None:
        path = self.weights_dir / f"{int(run_id)}.pt"
        return path if path.exists() else None

    def load_weights(self, run_id: int) -> dict:
        """The run's saved state_dict, on the CPU."""
        import torch

        path = self.weights_path(run_id)
        if path is None:
            raise StoreError(f"run {run_id} has no saved weights")
        return torch.load(path, weights_only=True, map_location="cpu")
