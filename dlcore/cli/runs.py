"""The `runs` subcommand of the DL Lab CLI: list, show, export and delete recorded runs.

    python -m dlcore runs [--home DIR] list
    python -m dlcore runs show ID
    python -m dlcore runs export --csv FILE
    python -m dlcore runs delete ID
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd

from dlcore.cli.main import error_line
from dlcore.runs.store import UNREADABLE, RunStore, StoreError, unreadable_note

LIST_COLUMNS = ("id", "created", "name", "dataset", "status", "test_acc", "epochs")


def register(subparsers: Any) -> None:
    """Add the `runs` subcommand to an argparse subparsers object; it sets `func(args) -> int`."""
    runs = subparsers.add_parser("runs", help="list, show, export or delete recorded runs",
                                 description="The run history kept in the DL Lab home folder.")
    runs.add_argument("--home", default=None,
                      help="the DL Lab home folder (default: $DLLAB_HOME or ~/.dllab)")
    runs.set_defaults(func=main, runs_action="list")
    # --home is accepted after the action too; SUPPRESS keeps it from overwriting the one above.
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", default=argparse.SUPPRESS, help="the DL Lab home folder")
    actions = runs.add_subparsers(dest="runs_action", metavar="ACTION")
    actions.add_parser("list", parents=[home], help="one line per run, newest first")
    show = actions.add_parser("show", parents=[home], help="a run's config and epochs")
    show.add_argument("id", type=int, help="run id")
    export = actions.add_parser("export", parents=[home], help="all runs and epochs as CSV")
    export.add_argument("--csv", required=True, metavar="FILE", help="where to write the CSV")
    delete = actions.add_parser("delete", parents=[home], help="delete a run and its weights")
    delete.add_argument("id", type=int, help="run id")


def main(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 on success, 2 for a run that does not exist or a home folder the
    history cannot be kept in, 1 for other I/O errors."""
    try:
        store = RunStore(getattr(args, "home", None))
        if store.notice:
            print(store.notice, file=sys.stderr)
        action = getattr(args, "runs_action", None) or "list"
        return {"list": _list, "show": _show, "export": _export, "delete": _delete}[action](
            store, args)
    except StoreError as exc:
        error_line(str(exc))
        return 2
    except OSError as exc:
        error_line(str(exc))
        return 1


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, (str, list, tuple)) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _say_unreadable(run_ids: Any) -> None:
    note = unreadable_note(run_ids)
    if note:
        print(note, file=sys.stderr)


def _list(store: RunStore, args: argparse.Namespace) -> int:
    runs = store.list_runs()
    _say_unreadable(runs.attrs[UNREADABLE])
    if runs.empty:
        print(f"No runs yet in {store.path}.")
        return 0
    rows = runs[list(LIST_COLUMNS)].itertuples(index=False)
    print(_table([[r[0], str(r[1]).replace("+00:00", "Z"), *r[2:]] for r in rows],
                 list(LIST_COLUMNS)))
    return 0


def _show(store: RunStore, args: argparse.Namespace) -> int:
    run = store.get_run(args.id)
    _say_unreadable([run["id"]] if run["unreadable"] else [])
    print(f"run {run['id']}  {run['name'] or ''}".rstrip())
    for key in ("created", "status", "dataset", "device", "tags", "test_acc", "test_loss",
                "train_acc", "train_loss", "params", "duration_s", "host", "pid", "message"):
        value = ", ".join(run[key]) if key == "tags" else run[key]
        if value not in (None, ""):
            print(f"  {key:<11} {_cell(value)}")
    print("config:")
    print(json.dumps(run["config"], indent=2))
    epochs = store.epochs(args.id)
    if epochs.empty:
        print("epochs: none recorded")
    else:
        print("epochs:")
        print(_table(list(epochs.itertuples(index=False)), list(epochs.columns)))
    return 0


def _export(store: RunStore, args: argparse.Namespace) -> int:
    _say_unreadable(store.list_runs().attrs[UNREADABLE])
    count = store.export_csv(args.csv)
    print(f"Wrote {count} row{'s' if count != 1 else ''} to {args.csv}.")
    return 0


def _delete(store: RunStore, args: argparse.Namespace) -> int:
    store.delete(args.id)
    print(f"Deleted run {args.id}.")
    return 0
