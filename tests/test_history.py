"""dlcore.views.experiments: the Experiments page's computations over RunStore frames."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from dlcore.engine.config import RunConfig
from dlcore.figures import config_scatter_figure, runs_overlay_figure
from dlcore.runs.store import RunStore
from dlcore.views import experiments as history


def record(store: RunStore, config: RunConfig, accs=(0.5, 0.7), *, dataset="mnist-sample",
           name=None, status="finished", tags=()) -> int:
    run_id = store.start_run(config.to_dict(), dataset=dataset, device="cpu", name=name)
    for epoch, acc in enumerate(accs, start=1):
        store.add_epoch(run_id, {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": acc - 0.05,
                                 "val_loss": None, "val_acc": None, "test_loss": 2.0 / epoch,
                                 "test_acc": acc, "seconds": 0.1})
    if status != "running":
        store.finish_run(run_id, status, metrics={"test_acc": accs[-1], "test_loss": 0.3})
    if tags:
        store.set_tags(run_id, list(tags))
    return run_id


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path)


def test_two_runs_differing_only_in_lr(store):
    base = RunConfig()
    a = record(store, base)
    b = record(store, base.replace(**{"train.lr": 0.01}))
    runs = store.list_runs()
    assert history.differing_config_columns(runs, [a, b]) == ["train.lr"]
    assert history.differing_config_columns(runs, []) == ["train.lr"]  # none selected: all runs
    assert history.differing_config_columns(runs, [a]) == ["train.lr"]  # one alone: all runs


def test_differing_columns_among_selected_only(store):
    base = RunConfig()
    a = record(store, base)
    b = record(store, base.replace(**{"train.lr": 0.01}))
    c = record(store, base.replace(**{"model.hidden": (64,), "model.dropout": 0.5}))
    runs = store.list_runs()
    assert history.differing_config_columns(runs, [a, c]) == ["model.hidden", "model.dropout"]
    assert history.differing_config_columns(runs, [a, b, c]) == ["model.hidden", "model.dropout",
                                                                 "train.lr"]
    assert history.differing_config_columns(runs, [a, 999]) == history.differing_config_columns(runs)
    assert history.differing_config_columns(runs.iloc[:1]) == []
    shown = runs[runs["id"].isin([a, c])]
    assert history.table_config_columns(runs, shown, [a, b]) == ["train.lr"]  # b is filtered out
    assert history.table_config_columns(runs, shown, [b]) == ["model.hidden", "model.dropout"]
    assert history.differing_config_columns(runs.iloc[:0]) == []


def test_differing_treats_nan_and_equal_numbers_alike():
    frame = pd.DataFrame({"id": [1, 2, 3], "train.lr": [0.1, 0.1, 0.1],
                          "train.x": [np.nan, None, np.nan], "model.w": [64, 64.0, 64],
                          "model.h": [(1, 2), (1, 2), (1, 3)], "test_acc": [0.1, 0.2, 0.3]})
    assert history.differing_config_columns(frame) == ["model.h"]


def test_overlay_frame_equals_stored_epochs(store):
    a = record(store, RunConfig(), accs=(0.5, 0.6, 0.8))
    b = record(store, RunConfig().replace(**{"train.lr": 0.01}), accs=(0.3, 0.4))
    frame = history.overlay_frame(store, [a, b, 12345])
    assert list(frame.columns) == list(history.OVERLAY_COLUMNS)
    assert list(frame["run"]) == [a, a, a, b, b]
    for run_id in (a, b):
        stored = store.epochs(run_id)
        mine = frame[frame["run"] == run_id].reset_index(drop=True)
        for column in history.OVERLAY_COLUMNS[1:]:
            pd.testing.assert_series_equal(mine[column], stored[column], check_names=False,
                                           check_dtype=False)
    empty = history.overlay_frame(store, [])
    assert empty.empty and list(empty.columns) == list(history.OVERLAY_COLUMNS)


def test_overlay_figure_has_one_trace_per_run_and_panel(store):
    a = record(store, RunConfig(), accs=(0.5, 0.6))
    b = record(store, RunConfig().replace(**{"train.lr": 0.01}), accs=(0.3, 0.4))
    labels = history.run_labels(store.list_runs())
    fig = runs_overlay_figure(history.overlay_frame(store, [a, b]), {a: labels[a], b: labels[b]})
    acc = [t for t in fig.data if t.meta[1] == "acc"]
    assert [t.name for t in acc] == [labels[a], labels[b]]
    assert [list(t.y) for t in acc] == [[0.5, 0.6], [0.3, 0.4]]
    assert len(fig.data) == 4


def test_filters(store):
    a = record(store, RunConfig(), name="Dropout sweep", tags=("sweep", "week1"))
    b = record(store, RunConfig(), dataset="digits", status="diverged", tags=("week1",))
    c = record(store, RunConfig(), accs=(0.2,), status="running")
    runs = store.list_runs()

    def ids(frame):
        return sorted(frame["id"])

    assert ids(history.filter_runs(runs)) == [a, b, c]
    assert ids(history.filter_runs(runs, "dropout")) == [a]
    assert ids(history.filter_runs(runs, "  SWEEP ")) == [a]
    assert ids(history.filter_runs(runs, "digits")) == [b]
    assert ids(history.filter_runs(runs, f"#{c}")) == [c]
    assert ids(history.filter_runs(runs, "no such thing")) == []
    assert ids(history.filter_runs(runs, "(", ["running"])) == []  # no regex
    assert ids(history.filter_runs(runs, statuses=["running"])) == [c]
    assert ids(history.filter_runs(runs, statuses=["finished", "diverged"])) == [a, b]
    assert ids(history.filter_runs(runs, tags=["week1"])) == [a, b]
    assert ids(history.filter_runs(runs, tags=["week1", "sweep"])) == [a]
    assert ids(history.filter_runs(runs, "week1", ["diverged"])) == [b]
    assert history.filter_runs(runs.iloc[:0], "x", ["running"], ["t"]).empty
    assert history.all_tags(runs) == ["sweep", "week1"]


def test_labels_tags_and_selection(store):
    a = record(store, RunConfig(), name="  first ")
    b = record(store, RunConfig())
    runs = store.list_runs()
    labels = history.run_labels(runs)
    assert labels[a] == f"#{a} first"
    assert labels[b] == f"#{b} mlp on mnist-sample"
    assert history.split_tags(" a, b,,a ,") == ["a", "b"]
    assert history.split_tags(None) == []
    shown = history.filter_runs(runs)
    assert list(shown["id"]) == [a, b]  # oldest first: a new run is appended, rows keep their runs
    assert history.ids_from_table_rows(shown, [1, 0, 7, "x"]) == [b, a]  # stale rows dropped
    assert history.union_selection([b], [a, b, 99], labels) == [b, a]


def test_table_frame_writes_tuples_and_keeps_numbers(store):
    record(store, RunConfig())
    record(store, RunConfig().replace(**{"model.hidden": (), "train.lr": 0.01}))
    runs = store.list_runs()
    frame = history.table_frame(runs, ["model.hidden", "train.lr"])
    after = list(frame.columns).index("test_acc")
    assert list(frame.columns[after + 1:after + 3]) == ["model.hidden", "train.lr"]
    assert list(frame["name"]) == ["", ""] and len(frame.columns) == len(set(frame.columns))
    assert list(frame["model.hidden"]) == ["(none)", "512, 256"]
    assert list(frame["train.lr"]) == [0.01, 0.001]
    assert {"id", "name", "status", "test_acc"} <= set(frame.columns)


def test_scatter_data_numeric_log_and_categorical(store):
    a = record(store, RunConfig(), accs=(0.9,))
    b = record(store, RunConfig().replace(**{"train.lr": 0.1, "model.hidden": (64,)}), accs=(0.5,))
    record(store, RunConfig(), accs=(0.1,), status="running")  # no final accuracy: not plotted
    runs = store.list_runs()
    data = history.scatter_data(runs, "train.lr", [a])
    assert data.numeric and data.log_x
    assert sorted(zip(data.frame["id"], data.frame["x"], data.frame["test_acc"],
                      data.frame["selected"], strict=True)) == [(a, 0.001, 0.9, True),
                                                                 (b, 0.1, 0.5, False)]
    cat = history.scatter_data(runs, "model.hidden")
    assert not cat.numeric and sorted(cat.frame["x"]) == ["512, 256", "64"]
    flag = history.scatter_data(runs, "train.augment")
    assert not flag.numeric and set(flag.frame["x"]) == {"False"}
    fig = config_scatter_figure(data.frame, data.field, data.numeric, data.log_x)
    assert fig.layout.xaxis.type == "log"
    assert [t.name for t in fig.data] == ["other runs", "selected runs"]
    assert "train.lr" in history.scatter_fields(runs) and "params" in history.scatter_fields(runs)


def test_one_runs_scatter_has_a_log_learning_rate_and_an_accuracy_axis_within_0_to_100(store):
    record(store, RunConfig(), accs=(0.906,))
    runs = store.list_runs()
    data = history.scatter_data(runs, "train.lr")
    assert data.log_x  # the Train page's learning rate is on a log scale: so is its axis
    fig = config_scatter_figure(data.frame, "Learning rate", data.numeric, data.log_x)
    low, high = fig.layout.yaxis.range
    assert 0 <= low < 0.906 < high <= 1 and fig.layout.xaxis.type == "log"
    assert not history.scatter_data(runs, "train.epochs").log_x


def test_the_table_leads_with_status_dataset_and_accuracy(store):
    record(store, RunConfig())
    frame = history.table_frame(store.list_runs(), ["train.lr"])
    assert list(frame.columns[:6]) == ["id", "name", "status", "dataset", "test_acc", "train.lr"]


def test_leaderboard_best_per_dataset(store):
    record(store, RunConfig(), accs=(0.7,), name="ok")
    best = record(store, RunConfig(), accs=(0.9,), name="best")
    record(store, RunConfig(), accs=(0.95,), status="running")  # not final: ignored
    record(store, RunConfig(), accs=(0.4,), dataset="digits")
    board = history.leaderboard(store.list_runs())
    assert list(board["dataset"]) == ["mnist-sample", "digits"]
    assert board.iloc[0].to_dict() == {"dataset": "mnist-sample", "best_test_acc": 0.9,
                                       "run": f"#{best} best", "runs": 2}
    assert history.leaderboard(store.list_runs().iloc[:0]).empty


def test_config_json_and_csv_export(store):
    config = RunConfig().replace(**{"train.lr": 0.01, "model.hidden": (64, 32)})
    a = record(store, config, accs=(0.5, 0.6))
    record(store, RunConfig(), accs=(0.1,), status="running")
    assert RunConfig.from_dict(json.loads(history.config_json(store, a))) == config
    table = pd.read_csv(io.BytesIO(history.export_csv_bytes(store)))
    assert len(table) == 3 and list(table[table["run_id"] == a]["test_acc"]) == [0.5, 0.6]
    assert history.running_count(store.list_runs()) == 1


def test_figures_show_run_names_as_typed_not_as_html(store):
    names = ('<a href="http://e.com">a</a>', "<b>bold</b> & $x^2$")
    ids = [record(store, RunConfig().replace(**{"train.lr": lr}), name=n)
           for lr, n in zip((0.001, 0.01), names, strict=True)]
    runs = store.list_runs()
    labels = history.run_labels(runs)
    overlay = runs_overlay_figure(history.overlay_frame(store, ids),
                                  {i: labels[i] for i in ids}).to_plotly_json()
    legend = [t["name"] for t in overlay["data"] if t["showlegend"]]
    assert legend == [f'#{ids[0]} &lt;a href="http://e.com"&gt;a&lt;/a&gt;',
                      f"#{ids[1]} &lt;b&gt;bold&lt;/b&gt; &amp; &#36;x^2&#36;"]
    data = history.scatter_data(runs, "train.lr", ids[:1])
    scatter = config_scatter_figure(data.frame, data.field, data.numeric).to_plotly_json()
    hover = sorted(t for trace in scatter["data"] for t in trace["text"])
    assert hover == sorted(legend)
    assert labels[ids[0]] == f"#{ids[0]} {names[0]}"  # the labels themselves stay as typed


def test_the_picker_keeps_its_run_by_id() -> None:
    existing = [1, 2, 3]
    assert history.pick_run([1, 3], [1, 3], 3, existing) == ([1, 3], 3)  # still selected
    assert history.pick_run([1, 3], [1], 1, existing) == ([1, 3], 1)  # 1 still selected: kept
    assert history.pick_run([2, 3], [1], 1, existing) == ([2, 3], 2)  # 1 unticked, 2 and 3 ticked
    assert history.pick_run([1], [1, 3], 3, existing) == ([1, 3], 3)  # a table reset: kept
    assert history.pick_run([1], [1, 3], 3, [1, 2]) == ([1], 1)  # deleted: the next one
    assert history.pick_run([], [3], 3, existing) == ([3], 3)
    assert history.pick_run([], [], None, existing) == ([], None)


# ------------------------------------------------- settings a run did not use, one dataset a time

CNN = RunConfig().replace(**{"model.kind": "cnn", "model.conv_channels": (8, 16)})


def test_a_setting_the_model_kind_does_not_use_is_not_applicable(store):
    mlp = record(store, RunConfig().replace(**{"model.hidden": (512, 256, 128)}), accs=(0.8,))
    cnn = record(store, CNN, accs=(0.9,))  # keeps the MLP's default widths (512, 256), unused
    cnn_b = record(store, CNN.replace(**{"model.hidden": (64,), "train.momentum": 0.5}),
                   accs=(0.85,))  # differs from `cnn` only in settings it did not use
    runs = store.list_runs()
    row = runs.set_index("id").loc
    assert not history.setting_used(row[cnn], "model.hidden")
    assert history.setting_used(row[cnn], "model.conv_channels")
    assert not history.setting_used(row[mlp], "model.dense")
    assert not history.setting_used(row[mlp], "train.momentum")  # Adam has none
    assert history.setting_used(row[mlp], "train.lr")

    assert history.differing_config_columns(runs, [cnn, cnn_b]) == []
    frame = history.table_frame(runs, ["model.hidden", "model.conv_channels", "model.dense"])
    by_id = frame.set_index("id")
    assert by_id.loc[mlp, "model.hidden"] == "512, 256, 128"
    assert by_id.loc[cnn, "model.hidden"] == by_id.loc[cnn_b, "model.hidden"] == "—"
    assert by_id.loc[mlp, "model.conv_channels"] == "—" and by_id.loc[cnn, "model.conv_channels"] == "8, 16"
    assert list(by_id["model.dense"]) == ["128", "128", "—"]  # newest first, as `runs`
    assert history.shows_unused(frame, ["model.hidden"])
    assert not history.shows_unused(history.table_frame(runs, ["train.lr"]), ["train.lr"])

    hidden = history.scatter_data(runs, "model.hidden")
    assert list(hidden.frame["id"]) == [mlp] and hidden.unused == 2
    channels = history.scatter_data(runs, "model.conv_channels")
    assert sorted(channels.frame["id"]) == [cnn, cnn_b] and channels.unused == 1
    dense = history.scatter_data(runs, "model.dense")
    assert dense.numeric and list(dense.frame["x"]) == [128.0, 128.0]
    assert "train.momentum" not in history.scatter_fields(runs)  # no run used SGD
    assert "model.hidden" not in history.scatter_fields(runs[runs["id"] != mlp])


def test_an_mlp_and_a_cnn_differ_in_the_settings_only_one_of_them_has(store):
    mlp = record(store, RunConfig())
    cnn = record(store, CNN)
    runs = store.list_runs()
    assert history.differing_config_columns(runs, [mlp, cnn]) == [
        "model.kind", "model.hidden", "model.conv_channels", "model.kernel_size", "model.pool",
        "model.dense"]
    plain = record(store, RunConfig().replace(**{"model.hidden": (), "model.dropout": 0.5}))
    runs = store.list_runs()
    # without hidden layers the MLP has no activation, dropout or normalisation either
    assert history.differing_config_columns(runs, [plain, mlp]) == [
        "model.hidden", "model.activation", "model.dropout", "model.norm"]
    assert history.table_frame(runs, ["model.dropout"]).set_index("id").loc[plain,
                                                                            "model.dropout"] == "—"


@pytest.mark.parametrize("base", [RunConfig().model, CNN.model,
                                  RunConfig().replace(**{"model.hidden": ()}).model],
                         ids=["mlp", "cnn", "mlp-without-hidden-layers"])
def test_the_not_applicable_rule_is_how_the_network_is_built(base):
    """A setting counts as unused exactly when changing it leaves the built network the same."""
    import dataclasses

    from dlcore.engine.models import describe_layers

    other = {"hidden": (64,), "conv_channels": (4,), "kernel_size": 5, "pool": False, "dense": 32,
             "activation": "tanh", "dropout": 0.0, "norm": "batch"}
    row = {f"model.{k}": v for k, v in dataclasses.asdict(base).items()}
    row["model.hidden"], row["model.conv_channels"] = base.hidden, base.conv_channels
    before = describe_layers(base, (1, 28, 28), 10)
    for name, value in other.items():
        after = describe_layers(dataclasses.replace(base, **{name: value}), (1, 28, 28), 10)
        assert (after != before) == history.setting_used(row, f"model.{name}"), name


def test_the_scatter_shows_one_dataset_at_a_time(store):
    digits = record(store, RunConfig(), accs=(0.95,), dataset="digits")
    mnist = record(store, RunConfig(), accs=(0.9,), dataset="mnist")
    mnist_b = record(store, RunConfig().replace(**{"train.lr": 0.01}), accs=(0.8,), dataset="mnist")
    runs = store.list_runs()
    assert history.scatter_dataset(runs) == (["digits", "mnist"], "mnist")  # the newest run's
    assert history.scatter_dataset(runs, "digits") == (["digits", "mnist"], "digits")
    assert history.scatter_dataset(runs, "cifar10") == (["digits", "mnist"], "mnist")
    assert sorted(history.runs_on(runs, "mnist")["id"]) == [mnist, mnist_b]
    assert list(history.runs_on(runs, "digits")["id"]) == [digits]
    assert len(history.runs_on(runs, None)) == 3
    assert history.scatter_dataset(runs[runs["id"] == digits]) == (["digits"], "digits")
    assert history.scatter_dataset(runs.iloc[:0]) == ([], None)

    record(store, RunConfig(), accs=(0.5,), dataset="digits", status="running")
    runs = store.list_runs()
    assert history.scatter_dataset(runs) == (["digits", "mnist"], "digits")  # trained on just now
    record(store, RunConfig(), accs=(0.5,), dataset="kmnist", status="running")
    assert history.scatter_dataset(store.list_runs()) == (["digits", "mnist"], "digits")


def test_fields_in_words():
    assert history.field_label("train.lr") == "Learning rate"
    assert history.field_label("model.hidden") == "Hidden layer widths"
    assert history.field_label("params") == "Parameters"
    assert history.field_label("duration_s") == "Training time (s)"
