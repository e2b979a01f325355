"""The run history as the Experiments page shows it: pure functions over `RunStore` frames.

`RunStore.list_runs()` gives one row per run (newest first) with config columns flattened as
"model.hidden", "train.lr", ...; `RunStore.epochs(run_id)` gives one row per epoch. Everything the
page computes from them (filters, which config columns differ, the overlay and scatter data, the
leaderboard, the exports) lives here, so it is tested without Streamlit.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dlcore.store import RunStore, StoreError

CONFIG_PREFIXES = ("model.", "train.")
OVERLAY_COLUMNS = ("run", "epoch", "test_acc", "test_loss", "val_acc", "val_loss", "train_acc",
                   "train_loss")
TABLE_COLUMNS = ("id", "name", "owner_name", "tags", "dataset", "status", "test_acc", "test_loss",
                 "train_acc", "epochs", "params", "duration_s", "device", "created")
SCATTER_EXTRA_FIELDS = ("params", "duration_s", "epochs")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a tuple or list: never "missing"
        return False


def _comparable(value: Any) -> Any:
    """One hashable form per value: NaN/None alike, lists as tuples, 64 == 64.0."""
    if _missing(value):
        return None
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(v) for v in value)
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return value


def format_value(value: Any) -> str:
    """A config value as the table and the scatter's categories write it."""
    if _missing(value):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value) if value else "(none)"
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_columns(runs_df: pd.DataFrame) -> list[str]:
    """The flattened config columns ("model.*", then "train.*"), in the frame's order."""
    return [c for c in runs_df.columns if str(c).startswith(CONFIG_PREFIXES)]


def differing_config_columns(runs_df: pd.DataFrame, selected_ids: Iterable[int] = ()) -> list[str]:
    """Config columns whose values differ among the selected runs.

    With fewer than two selected runs (none, or one: nothing can differ), all runs of `runs_df`
    are compared instead. Missing values count as a value of their own."""
    chosen = runs_df[runs_df["id"].isin({int(i) for i in selected_ids})]
    rows = chosen if len(chosen) >= 2 else runs_df
    if len(rows) < 2:
        return []
    return [c for c in config_columns(rows) if len({_comparable(v) for v in rows[c]}) > 1]


def table_config_columns(runs_df: pd.DataFrame, shown_df: pd.DataFrame,
                         selected_ids: Iterable[int]) -> list[str]:
    """The config columns the table shows: those differing among the selected runs (wherever the
    filter put them) when two or more are selected, else among the shown runs."""
    chosen = runs_df[runs_df["id"].isin({int(i) for i in selected_ids})]
    return differing_config_columns(chosen if len(chosen) >= 2 else shown_df)


def run_label(row: Any) -> str:
    """'#7 my run' for a named run; '#7 mlp on mnist' for an unnamed one."""
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    name = get("name")
    if not _missing(name) and str(name).strip():
        return f"#{int(get('id'))} {str(name).strip()}"
    kind, dataset = get("model.kind"), get("dataset")
    what = " on ".join(str(v) for v in (kind, dataset) if not _missing(v))
    return f"#{int(get('id'))} {what}".rstrip()


def run_labels(runs_df: pd.DataFrame) -> dict[int, str]:
    """{run id: label} for every row."""
    return {int(row["id"]): run_label(row) for _, row in runs_df.iterrows()}


def all_tags(runs_df: pd.DataFrame) -> list[str]:
    """Every tag in use, sorted."""
    return sorted({t for tags in runs_df.get("tags", []) for t in split_tags(tags)})


def split_tags(text: Any) -> list[str]:
    """'a, b,,a ' -> ['a', 'b']: comma-separated tags, stripped, empty and repeated ones dropped."""
    if _missing(text):
        return []
    out: list[str] = []
    for tag in str(text).split(","):
        tag = tag.strip()
        if tag and tag not in out:
            out.append(tag)
    return out


def filter_runs(runs_df: pd.DataFrame, text: str = "", statuses: Sequence[str] = (),
                tags: Sequence[str] = ()) -> pd.DataFrame:
    """The runs whose name, tags, dataset or '#id' contain `text` (case-insensitive), whose status
    is one of `statuses` and that carry every tag of `tags`; an empty criterion keeps all.

    Oldest first: st.dataframe reports its selection as row positions, so a run recorded meanwhile
    (by any session of the server) must land at the bottom, not shift the rows already ticked."""
    keep = pd.Series(True, index=runs_df.index)
    needle = (text or "").strip().lower()
    if needle:
        def hay(row: pd.Series) -> str:
            parts = [row.get("name"), row.get("tags"), row.get("dataset"), f"#{int(row['id'])}"]
            return " ".join(str(p) for p in parts if not _missing(p)).lower()
        keep &= runs_df.apply(hay, axis=1).str.contains(needle, regex=False) if len(runs_df) else keep
    if statuses:
        keep &= runs_df["status"].isin(list(statuses))
    if tags:
        wanted = set(tags)
        keep &= runs_df["tags"].map(lambda t: wanted <= set(split_tags(t)))
    return runs_df[keep].sort_values("id", kind="stable")


def ids_from_table_rows(shown_df: pd.DataFrame, rows: Iterable[Any]) -> list[int]:
    """The run ids behind positional `rows` of the table (stale, out-of-range rows are ignored)."""
    out: list[int] = []
    for r in rows:
        try:
            r = int(r)
        except (TypeError, ValueError):
            continue
        if 0 <= r < len(shown_df):
            out.append(int(shown_df["id"].iloc[r]))
    return out


def union_selection(table_ids: Iterable[int], compare_ids: Iterable[int],
                    existing: Iterable[int]) -> list[int]:
    """Table selection then Compare selection, without repeats or runs that no longer exist."""
    exists = {int(i) for i in existing}
    out: list[int] = []
    for i in (*table_ids, *compare_ids):
        i = int(i)
        if i in exists and i not in out:
            out.append(i)
    return out


def pick_run(selected: Sequence[int], previous: Sequence[int], picked: int | None,
             existing: Iterable[int]) -> tuple[list[int], int | None]:
    """The Run picker's choices and its run, by run id: the picked run while it is selected; else
    the first run newly added to the selection (the learner just ticked it); else, when the
    selection only lost runs, the picked run still (kept among the choices while it exists).

    Renaming a run changes the table's data, and a table whose data changed may report its
    selection afresh: without the last rule the picker jumped from #3 to #1 after a rename, and the
    next Open opened run 1."""
    choices = list(selected)
    if picked in choices:
        return choices, picked
    added = [i for i in choices if i not in set(previous)]
    if added:
        return choices, added[0]
    if picked is not None and picked in set(existing):
        return [*choices, picked], picked
    return choices, choices[0] if choices else None


def table_frame(runs_df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """What the table shows: the run columns with `columns` (config) right after the test
    accuracy, written as text where they are not plain numbers (tuples, booleans, strings)."""
    base = [c for c in TABLE_COLUMNS if c in runs_df.columns]
    cut = base.index("test_acc") + 1 if "test_acc" in base else len(base)
    frame = runs_df[base[:cut]].copy()
    for c in columns:
        values = runs_df[c]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        frame[c] = values if numeric else values.map(format_value)
    for c in base[cut:]:
        frame[c] = runs_df[c]
    for c in ("name", "owner_name"):
        if c in frame:
            frame[c] = frame[c].map(format_value)
    return frame.reset_index(drop=True)


def overlay_frame(store: RunStore, run_ids: Iterable[int]) -> pd.DataFrame:
    """The epochs of `run_ids`, stacked: one row per (run, epoch); runs gone from the store are
    skipped."""
    metrics = list(OVERLAY_COLUMNS[2:])
    parts = []
    for run_id in run_ids:
        try:
            epochs = store.epochs(int(run_id))
        except StoreError:
            continue
        part = epochs[["epoch", *metrics]].copy()
        part.insert(0, "run", int(run_id))
        parts.append(part)
    if not parts:
        frame = pd.DataFrame({c: pd.Series(dtype=float) for c in OVERLAY_COLUMNS})
        return frame.astype({"run": "int64", "epoch": "int64"})
    return pd.concat(parts, ignore_index=True)[list(OVERLAY_COLUMNS)]


def scatter_fields(runs_df: pd.DataFrame) -> list[str]:
    """Fields a scatter can put on its x axis: the config columns, then params, duration, epochs."""
    return [*config_columns(runs_df), *(c for c in SCATTER_EXTRA_FIELDS if c in runs_df.columns)]


@dataclass(frozen=True)
class ScatterData:
    frame: pd.DataFrame  # id, label, x, test_acc, selected
    field: str
    numeric: bool
    log_x: bool


def scatter_data(runs_df: pd.DataFrame, field: str, selected_ids: Iterable[int] = ()) -> ScatterData:
    """`field` against final test accuracy for every run that has one; numeric fields stay numbers
    (a log axis when all are positive and span two decades or more), others become categories."""
    selected = {int(i) for i in selected_ids}
    rows = runs_df[runs_df["test_acc"].notna()] if "test_acc" in runs_df else runs_df.iloc[:0]
    values = rows[field] if field in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    numeric = (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
               and values.notna().any())
    x = pd.to_numeric(values).astype(float) if numeric else values.map(format_value)
    frame = pd.DataFrame({
        "id": rows["id"].astype(int).to_numpy(),
        "label": [run_label(r) for _, r in rows.iterrows()],
        "x": x.to_numpy(),
        "test_acc": rows["test_acc"].astype(float).to_numpy(),
        "selected": rows["id"].astype(int).isin(selected).to_numpy(),
    })
    log_x = False
    if numeric:
        present = frame["x"].dropna()
        log_x = bool(len(present) and (present > 0).all() and present.max() / present.min() >= 100)
    return ScatterData(frame, field, bool(numeric), log_x)


def leaderboard(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Best final test accuracy per dataset: dataset, best_test_acc, run (label), runs (count)."""
    columns = ["dataset", "best_test_acc", "run", "runs"]
    if runs_df.empty or "test_acc" not in runs_df:
        return pd.DataFrame(columns=columns)
    scored = runs_df[runs_df["test_acc"].notna()]
    rows = []
    for dataset, group in scored.groupby("dataset", sort=False):
        best = group.sort_values(["test_acc", "id"], ascending=[False, True]).iloc[0]
        rows.append({"dataset": dataset, "best_test_acc": float(best["test_acc"]),
                     "run": run_label(best), "runs": int(len(group))})
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("best_test_acc", ascending=False).reset_index(drop=True)


def config_json(store: RunStore, run_id: int) -> str:
    """The run's config as indented JSON, the form `RunConfig.from_dict` reads back."""
    return json.dumps(store.get_run(int(run_id))["config"], indent=2, sort_keys=False) + "\n"


def export_csv_bytes(store: RunStore) -> bytes:
    """All runs and all their epochs as CSV (`RunStore.export_csv` into a temp file, read back)."""
    fd, name = tempfile.mkstemp(prefix="dllab-runs-", suffix=".csv")
    os.close(fd)
    try:
        store.export_csv(name)
        with open(name, "rb") as f:
            return f.read()
    finally:
        os.unlink(name)


def running_count(runs_df: pd.DataFrame) -> int:
    return int((runs_df["status"] == "running").sum()) if "status" in runs_df else 0


def percent(value: Any) -> str:
    """0.9812 -> '98.12%'; missing -> '—'."""
    if _missing(value) or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.2%}"
