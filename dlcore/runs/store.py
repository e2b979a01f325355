"""The run history: every training run, its epochs and its weights, in one SQLite database.

`runs.sqlite` (WAL mode) lives in the app's home folder (`$DLLAB_HOME`, default `~/.dllab`),
weights beside it as `weights/<weights_key>.pt`, where `weights_key` is a random id stored with
the run: a history that was reset can never attach an older run's weights to a new run with the
same number. Run ids are never reused (AUTOINCREMENT). A run remembers the process recording it by
host, PID and a start token (the process's start time, with the boot id on Linux), so a run whose
recorder is gone is told from one whose PID now names another process. Every method opens its own
short-lived connection and every write is one transaction, so one `RunStore` can be shared by
threads and processes (all sessions of a Streamlit server see one leaderboard). A file that is not
a readable SQLite database is moved aside, never deleted, and `RunStore.notice` says where it went.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dlcore.engine.paths import home_dir

SCHEMA_VERSION = 3
STATUSES = ("running", "finished", "stopped", "diverged", "failed", "interrupted")
EPOCH_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "seconds")
FINAL_COLUMNS = ("test_acc", "test_loss", "train_acc", "train_loss", "params")
RUN_COLUMNS = ("id", "created", "name", "tags", "dataset", "device", "status", *FINAL_COLUMNS,
               "duration_s", "epochs", "pid", "host", "message", "owner", "owner_name")
_SQLITE_MAGIC = b"SQLite format 3\x00"
UNREADABLE = "unreadable"  # list_runs' frame.attrs key: ids of runs whose config cannot be read


class StoreError(Exception):
    """A run that does not exist, or a request the store cannot honour; the message says which."""


# Schema 1's runs columns, all kept by schema 2 (which adds `pid_token` and `weights_key`) and 3
# (which adds `owner`, the id of the session that started the run, and `owner_name`, its display
# name; both NULL for older runs and for runs from the command line).
_V1_RUN_COLUMNS = ("id", "created", "name", "tags", "dataset", "config", "device", "status",
                   "pid", "host", "test_acc", "test_loss", "train_acc", "train_loss", "params",
                   "duration_s", "message")


def _create_runs(conn: sqlite3.Connection, table: str) -> None:
    """The runs table: ids never reused; the recorder's start token; the weights' key; the owner."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " created TEXT NOT NULL, name TEXT, tags TEXT NOT NULL DEFAULT '[]', dataset TEXT,"
        " config TEXT NOT NULL,"
        " device TEXT, status TEXT NOT NULL, pid INTEGER, host TEXT, test_acc REAL,"
        " test_loss REAL, train_acc REAL, train_loss REAL, params INTEGER, duration_s REAL,"
        " message TEXT NOT NULL DEFAULT '', pid_token TEXT, weights_key TEXT, owner TEXT,"
        " owner_name TEXT)")


def _migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Bring the schema from `from_version` to SCHEMA_VERSION, in the caller's transaction
    (which must have foreign keys off, or rebuilding `runs` would cascade-delete every epoch)."""
    if from_version < 1:  # a new file: the latest schema at once
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        _create_runs(conn, "runs")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS epochs (run_id INTEGER NOT NULL REFERENCES runs(id)"
            " ON DELETE CASCADE, epoch INTEGER NOT NULL, train_loss REAL, train_acc REAL,"
            " val_loss REAL, val_acc REAL, test_loss REAL, test_acc REAL, seconds REAL,"
            " PRIMARY KEY (run_id, epoch))")
    elif from_version < 2:
        # AUTOINCREMENT cannot be added in place: a new table, the rows copied, then swapped.
        # Schema-1 weights were `weights/<id>.pt`, so a migrated run's key is its id.
        columns = ", ".join(_V1_RUN_COLUMNS)
        _create_runs(conn, "runs_v2")
        conn.execute(f"INSERT INTO runs_v2 ({columns}, weights_key) SELECT {columns},"
                     " CAST(id AS TEXT) FROM runs")
        conn.execute("DROP TABLE runs")
        conn.execute("ALTER TABLE runs_v2 RENAME TO runs")
        if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise StoreError("the run history's epochs do not match its runs after migration")
    elif from_version < 3:
        conn.execute("ALTER TABLE runs ADD COLUMN owner TEXT")
        conn.execute("ALTER TABLE runs ADD COLUMN owner_name TEXT")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                 (str(SCHEMA_VERSION),))


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _process_token(pid: int) -> str | None:
    """A token naming the process `pid` that a later process with the same PID cannot share: on
    Linux the boot id and the start time in clock ticks (/proc/<pid>/stat field 22), else psutil's
    create time. "" when the process is surely gone (or a zombie); None when nothing can tell."""
    try:
        stat: str | None = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return ""  # a /proc that does not know the PID: no such process
        stat = None
    except OSError:  # e.g. /proc mounted with hidepid: ask psutil, else cannot tell
        stat = None
    if stat is not None:
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        if fields and fields[0] in ("Z", "X"):  # fields[0] is field 3, the state: dead
            return ""
        if len(fields) >= 20:
            return f"{_boot_id() or 'noboot'}:{fields[19]}"  # fields[19] is field 22 (starttime)
    try:
        import psutil
    except ImportError:
        return None
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return ""
        return f"ct:{process.create_time():.3f}"
    except psutil.NoSuchProcess:
        return ""
    except (psutil.Error, OSError, ValueError):
        return None


_OWN_TOKEN: tuple[int, str | None] | None = None


def _own_token() -> str | None:
    """This process's start token (computed once per process; None where none can be had)."""
    global _OWN_TOKEN
    pid = os.getpid()
    if _OWN_TOKEN is None or _OWN_TOKEN[0] != pid:  # a forked child is another process
        _OWN_TOKEN = (pid, _process_token(pid) or None)
    return _OWN_TOKEN[1]


def _recorder_alive(pid: int | None, token: str | None) -> bool:
    """Whether the process that recorded a run on this host still runs: its PID must name a live
    process with the same start token (a reused PID, PID 1 included, has another). A run with no
    token (schema 1, or a platform where none could be had) falls back to the PID alone, and so
    does a process whose token cannot be read now (unknown counts as alive)."""
    if pid is None or pid <= 0:
        return False
    if token is None:
        return _pid_alive(pid)
    now = _own_token() if pid == os.getpid() else _process_token(pid)
    if now is None:
        return _pid_alive(pid)
    return now == token


def _surely_alive(row: sqlite3.Row) -> bool:
    """Whether a run's recorder verifiably runs on this host: as `_recorder_alive`, except that a
    PID 1 with no token (an older DL Lab in a container) is always alive yet proves nothing."""
    if row["host"] != socket.gethostname():
        return False
    if row["pid_token"] is None and row["pid"] == 1 and os.getpid() != 1:
        return False
    return _recorder_alive(row["pid"], row["pid_token"])


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


def _json_or_none(text: Any, kind: type) -> Any:
    """`text` parsed as JSON when it holds a `kind` (dict, list); None when it does not."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def unreadable_note(run_ids: Any) -> str | None:
    """One sentence about runs whose settings or tags the history holds damaged (None: none)."""
    ids = sorted(int(i) for i in run_ids)
    if not ids:
        return None
    which = (f"Run {ids[0]} has" if len(ids) == 1
             else f"Runs {', '.join(map(str, ids[:-1]))} and {ids[-1]} have")
    return (f"{which} settings or tags in the run history that cannot be read (not valid JSON); "
            "listed without them, such a run cannot be opened.")


def _now() -> datetime:
    return datetime.now(UTC)


class RunStore:
    """The run history in `<home>/runs.sqlite`; safe to share across threads and processes."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else home_dir()
        self.path = self.home / "runs.sqlite"
        self.weights_dir = self.home / "weights"
        self.notice: str | None = None
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"the run history cannot be kept in {self.home} "
                             f"({self._why(exc)}); set DLLAB_HOME (or --home) to a folder "
                             "this user can write") from None

    def _open(self) -> None:
        """Create or check the file, move a corrupt one aside, bring its schema up to date."""
        self.home.mkdir(parents=True, exist_ok=True)
        reason = self._check_file()
        if reason is not None:
            aside = self._move_aside()
            self.notice = (f"The run history {self.path} could not be read ({reason}); it was "
                           f"moved aside to {aside} and a fresh, empty history was started.")
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        with self._write(foreign_keys=False) as conn:  # off: rebuilding runs must not cascade
            version = self._schema_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer DL Lab (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION}); upgrade to use it")
            if version < SCHEMA_VERSION:
                _migrate(conn, version)
        self.mark_interrupted()

    def _why(self, exc: BaseException) -> str:
        """What went wrong, in a few words: "runs.sqlite: Is a directory", "File exists"."""
        if not isinstance(exc, OSError) or not exc.strerror:
            return str(exc) or type(exc).__name__
        named = Path(exc.filename) if exc.filename else self.home
        if named != self.home:
            return f"{named.name}: {exc.strerror}"
        return "it is a file, not a folder" if isinstance(exc, FileExistsError) else exc.strerror

    @contextmanager
    def _connect(self, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self, foreign_keys: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, locked up front (BEGIN IMMEDIATE): writers queue, no deadlock."""
        with self._connect(foreign_keys) as conn:
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
                  params: int | None = None, owner: str | None = None,
                  owner_name: str | None = None) -> int:
        """Record a new run as 'running' by this process; returns its id (never one used before
        in this file, even by a deleted run). `owner` is the id of the session it belongs to."""
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        try:
            config_json = json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"config is not JSON-able: {exc}") from exc
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (created, name, dataset, config, device, status, pid, host,"
                " params, pid_token, weights_key, owner, owner_name)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (_now().isoformat(timespec="seconds"), name, dataset, config_json, device,
                 os.getpid(), socket.gethostname(), None if params is None else int(params),
                 _own_token(), secrets.token_hex(8), owner, owner_name))
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
            key = self._require(conn, run_id)["weights_key"]
        if state_dict is not None:
            if key is None:  # cannot happen to a run this store started; made safe all the same
                key = secrets.token_hex(8)
                self._change(run_id, "UPDATE runs SET weights_key = ? WHERE id = ?", key)
            self._save_weights(key, state_dict)
        sets = {c: (int(v) if c == "params" else float(v)) if v is not None else None
                for c, v in metrics.items()}
        sets.update(status=status, message=message or "",
                    duration_s=None if duration_s is None else float(duration_s))
        self._change(run_id, f"UPDATE runs SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ?",
                     *sets.values())

    def _weights_file(self, key: str) -> Path:
        return self.weights_dir / f"{key}.pt"

    def _save_weights(self, key: str, state_dict: dict) -> None:
        import torch

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        final = self._weights_file(key)
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
        """Runs left 'running' on this host by a process that is gone become 'interrupted' (a PID
        now held by another process, PID 1 included, counts as gone); returns how many."""
        host = socket.gethostname()
        with self._connect() as conn:
            rows = conn.execute("SELECT id, pid, pid_token FROM runs WHERE status = 'running' AND"
                                " host = ?", (host,)).fetchall()
        dead = [(r["id"], r["pid"]) for r in rows
                if r["pid"] is not None and not _recorder_alive(r["pid"], r["pid_token"])]
        if not dead:
            return 0
        count = 0
        with self._write() as conn:
            for run_id, pid in dead:
                note = f"process {pid} on {host} ended before the run finished; its epochs are kept"
                count += conn.execute("UPDATE runs SET status = 'interrupted', message = ? WHERE"
                                      " id = ? AND status = 'running'", (note, run_id)).rowcount
        return count

    def recorder_alive(self, run_id: int) -> bool:
        """Whether the run is 'running' and its recorder verifiably still runs on this host (a
        recorder on another host cannot be checked from here: False)."""
        with self._connect() as conn:
            row = self._require(conn, run_id)
        return row["status"] == "running" and _surely_alive(row)

    def mark_run_interrupted(self, run_id: int) -> None:
        """Mark one stuck 'running' run 'interrupted' on request (its epochs are kept), e.g. one
        recorded on another host or by an older DL Lab. Refused while its recorder verifiably
        still runs here, and for a run that is not 'running'."""
        with self._write() as conn:
            row = self._require(conn, run_id)
            if row["status"] != "running":
                raise StoreError(f"run {run_id} is not running (it is {row['status']})")
            if _surely_alive(row):
                raise StoreError(f"run {run_id} is still being recorded by process {row['pid']} "
                                 "on this machine; stop it instead")
            conn.execute("UPDATE runs SET status = 'interrupted', message = ? WHERE id = ?",
                         ("marked interrupted by hand (its recorder was gone or could not be "
                          "checked); its epochs are kept", int(run_id)))

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
        with self._write() as conn:
            key = self._require(conn, run_id)["weights_key"]
            conn.execute("DELETE FROM runs WHERE id = ?", (int(run_id),))
        if key is not None:
            self._weights_file(key).unlink(missing_ok=True)

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
        """The row with 'config' parsed (None where it is not a JSON object) and 'tags' a list
        ([] where they are not a JSON list); 'unreadable' says whether either was damaged."""
        run = dict(row)
        config, tags = _json_or_none(run["config"], dict), _json_or_none(run["tags"] or "[]", list)
        run["unreadable"] = config is None or tags is None
        run["config"], run["tags"] = config, tags or []
        return run

    def get_run(self, run_id: int) -> dict:
        """The run's row as a dict, with 'config' parsed and 'tags' a list; a run whose config
        cannot be read has 'config' None and 'unreadable' True."""
        with self._connect() as conn:
            return self._run_dict(self._require(conn, run_id))

    def list_runs(self) -> pd.DataFrame:
        """One row per run, newest first: run columns, 'epochs' (count), then config columns
        flattened as "model.hidden", "train.lr", ... (lists as tuples); tags comma-joined. A run
        whose config or tags cannot be read is listed without them; `frame.attrs[UNREADABLE]`
        holds the ids of such runs (see `unreadable_note`)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT r.*, (SELECT COUNT(*) FROM epochs e WHERE e.run_id = r.id)"
                                " AS epochs FROM runs r ORDER BY r.id DESC").fetchall()
        records, unreadable = [], []
        for row in rows:
            run = self._run_dict(row)
            if run["unreadable"]:
                unreadable.append(run["id"])
            record = {c: run[c] for c in RUN_COLUMNS}
            record["tags"] = ", ".join(run["tags"])
            for section, values in (run["config"] or {}).items():
                if isinstance(values, dict):
                    for key, value in values.items():
                        value = tuple(value) if isinstance(value, list) else value
                        record[f"{section}.{key}"] = value
            records.append(record)
        frame = pd.DataFrame(records, columns=None if records else list(RUN_COLUMNS))
        frame = _numeric(frame, [*FINAL_COLUMNS, "duration_s"])
        frame.attrs[UNREADABLE] = unreadable
        return frame

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
        """The file of the weights this run saved; None for a run that saved none (or no run)."""
        with self._connect() as conn:
            row = conn.execute("SELECT weights_key FROM runs WHERE id = ?",
                               (int(run_id),)).fetchone()
        if row is None or row["weights_key"] is None:
            return None
        path = self._weights_file(row["weights_key"])
        return path if path.exists() else None

    def load_weights(self, run_id: int) -> dict:
        """The run's saved state_dict, on the CPU. Only tensors and plain containers are ever
        unpickled (`weights_only=True`); a file that is not one says so in our own words."""
        import torch

        path = self.weights_path(run_id)
        if path is None:
            raise StoreError(f"run {run_id} has no saved weights")
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - PyTorch's text suggests weights_only=False
            raise StoreError(f"the weights file of run {run_id} is damaged or not a weights file "
                             f"({type(exc).__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise StoreError(f"the weights file of run {run_id} is damaged or not a weights file "
                             "(it holds no state_dict)")
        return state
