"""The run history as the Experiments page shows it: pure functions over `RunStore` frames.

`RunStore.list_runs()` gives one row per run (newest first) with config columns flattened as
"model.hidden", "train.lr", ...; `RunStore.epochs(run_id)` gives one row per epoch. Everything the
page computes from them (filters, which config columns differ, the overlay and scatter data, the
leaderboard, the exports) lives here, so it is tested without Streamlit.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dlcore.engine.config import setting_label, settings
from dlcore.runs.store import RunStore, StoreError

CONFIG_PREFIXES = ("model.", "train.")
OVERLAY_COLUMNS = ("run", "epoch", "test_acc", "test_loss", "val_acc", "val_loss", "train_acc",
                   "train_loss")
# What a learner compares first comes first (the table is wider than the page): the run, its
# status, dataset and accuracy, then its differing settings (table_frame), then who and the rest.
TABLE_COLUMNS = ("id", "name", "status", "dataset", "test_acc", "owner_name", "tags", "test_loss",
                 "train_acc", "epochs", "params", "duration_s", "device", "created")
SCATTER_EXTRA_FIELDS = ("params", "duration_s", "epochs")
EXTRA_FIELD_LABELS = {"params": "Parameters", "duration_s": "Training time (s)",
                      "epochs": "Epochs run"}
NOT_APPLICABLE = "—"  # the table's cell for a setting the run did not use
LOG_SCALE_FIELDS = ("train.lr",)  # set on a log scale on the Train page: plotted on one too


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


# The settings a run uses only in some configs (their descriptions' `used` rule, dlcore.engine.config):
# ModelSpec keeps the MLP and the CNN fields side by side and `kind` picks, SGD alone reads the
# momentum and early stopping alone the patience and the validation split; the Train page hides or
# disables those controls alike. Every other setting is always used.
USED_WHEN: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    key: s.used for key, s in settings().items() if s.used is not None}


def setting_used(row: Mapping[str, Any], key: str) -> bool:
    """Whether the run of `row` (a `list_runs` row) used setting `key`: a CNN has no hidden layer
    widths, an MLP no conv channels, an Adam run no momentum. A stored value of an unused setting
    is only the default it was never asked about: shown as not applicable, never compared."""
    rule = USED_WHEN.get(key)
    return rule is None or bool(rule(row))


def used_mask(runs_df: pd.DataFrame, key: str) -> pd.Series:
    """Per run (same index as `runs_df`): whether it used setting `key`."""
    if key not in USED_WHEN:
        return pd.Series(True, index=runs_df.index, dtype=bool)
    return pd.Series([setting_used(row, key) for _, row in runs_df.iterrows()],
                     index=runs_df.index, dtype=bool)


def used_config(runs_df: pd.DataFrame) -> pd.DataFrame:
    """`runs_df` with each unused setting's value blanked (None): what the runs really ran with."""
    frame = runs_df.copy()
    for c in config_columns(frame):
        unused = ~used_mask(frame, c)
        if unused.any():
            frame[c] = frame[c].astype(object).where(~unused, None)
    return frame


def field_label(field: str) -> str:
    """A scatter field or config column in words ("train.lr" -> "Learning rate")."""
    return EXTRA_FIELD_LABELS.get(field) or setting_label(field)


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
    are compared instead. Missing values count as a value of their own, and so does a setting a
    run did not use (`setting_used`): the unused default a CNN stores for the hidden layer widths
    differs from nothing, though an MLP's widths differ from a CNN's none."""
    chosen = runs_df[runs_df["id"].isin({int(i) for i in selected_ids})]
    rows = chosen if len(chosen) >= 2 else runs_df
    if len(rows) < 2:
        return []
    rows = used_config(rows)
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
    accuracy, written as text where they are not plain numbers (tuples, booleans, strings) or
    where a run did not use the setting (`NOT_APPLICABLE` in its cell)."""
    base = [c for c in TABLE_COLUMNS if c in runs_df.columns]
    cut = base.index("test_acc") + 1 if "test_acc" in base else len(base)
    frame = runs_df[base[:cut]].copy()
    for c in columns:
        frame[c] = _table_column(runs_df, c)
    for c in base[cut:]:
        frame[c] = runs_df[c]
    for c in ("name", "owner_name"):
        if c in frame:
            frame[c] = frame[c].map(format_value)
    return frame.reset_index(drop=True)


def _table_column(runs_df: pd.DataFrame, column: str) -> pd.Series:
    values, used = runs_df[column], used_mask(runs_df, column)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and used.all():
        return values
    return values.map(format_value).where(used, NOT_APPLICABLE)


def shows_unused(frame: pd.DataFrame, columns: Iterable[str]) -> bool:
    """Whether any of the table's `columns` has a not-applicable cell."""
    return any((frame[c].astype(object) == NOT_APPLICABLE).any() for c in columns if c in frame)


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
    """Fields a scatter can put on its x axis: the config columns some run used, then params,
    duration, epochs."""
    used = [c for c in config_columns(runs_df) if used_mask(runs_df, c).any()]
    return [*used, *(c for c in SCATTER_EXTRA_FIELDS if c in runs_df.columns)]


def scatter_dataset(runs_df: pd.DataFrame, current: str | None = None
                    ) -> tuple[list[str], str | None]:
    """The datasets the scatter can show, sorted (those of the runs with a final test accuracy:
    accuracies on different datasets do not compare, so it shows one at a time), and the one it
    shows: `current` while it is offered, else the dataset of the most recent run that has one of
    them; None when no run has a final test accuracy."""
    if "dataset" not in runs_df or "test_acc" not in runs_df:
        return [], None
    scored = runs_df[runs_df["test_acc"].notna() & runs_df["dataset"].notna()]
    choices = sorted({str(d) for d in scored["dataset"]})
    if current in choices:
        return choices, current
    newest_first = runs_df.sort_values("id", ascending=False)["dataset"]
    return choices, next((str(d) for d in newest_first if str(d) in choices), None)


def runs_on(runs_df: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """The runs on `dataset`; all of them when it is None (no dataset to pick)."""
    if dataset is None or "dataset" not in runs_df:
        return runs_df
    return runs_df[runs_df["dataset"].astype(str) == dataset]


@dataclass(frozen=True)
class ScatterData:
    frame: pd.DataFrame  # id, label, x, test_acc, selected
    field: str
    numeric: bool
    log_x: bool
    unused: int = 0  # runs with a final test accuracy left out: they did not use `field`


def scatter_data(runs_df: pd.DataFrame, field: str, selected_ids: Iterable[int] = ()) -> ScatterData:
    """`field` against final test accuracy for every run that has one and used the setting (a
    CNN has no hidden layer widths to plot); numeric fields stay numbers (a log axis when all are
    positive and span two decades or more, or the field is in LOG_SCALE_FIELDS), others become
    categories."""
    selected = {int(i) for i in selected_ids}
    rows = runs_df[runs_df["test_acc"].notna()] if "test_acc" in runs_df else runs_df.iloc[:0]
    used = used_mask(rows, field)
    unused, rows = int((~used).sum()), rows[used]
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
        log_x = bool(len(present) and (present > 0).all()
                     and (field in LOG_SCALE_FIELDS or present.max() / present.min() >= 100))
    return ScatterData(frame, field, bool(numeric), log_x, unused)


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


def leaderboard_rows(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as the page shows it: accuracy in percent, plain column names."""
    return pd.DataFrame({"dataset": board["dataset"],
                         "best test accuracy": [f"{a:.1%}" for a in board["best_test_acc"]],
                         "run": board["run"], "runs": board["runs"]})


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
