"""Every plotly figure the app draws, built from plain data: curves, weight grids, heatmaps (the
confusion matrix that answers clicks), image grids, activations, bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dlcore import numbers
from dlcore.text import plotly_literal

if TYPE_CHECKING:
    import torch

# Fewer readings than this are drawn with markers too: one or two points as a line show nothing.
FEW_POINTS = 30
# A finite blow-up this many times the first loss gets a log y axis, so the rest is not flattened.
LOG_AXIS_FACTOR = 100.0
DIVERGED_STYLE = dict(color="#d62728", symbol="x", size=16, line=dict(width=1, color="#7f0000"))
GRID_COLUMNS = 8  # tiles in a row of a grid of images (weights, feature maps)


def batch_loss_figure(batch_losses: Sequence[tuple[int, float]], steps_per_epoch: int | None = None,
                      diverged: tuple[int, float] | None = None) -> go.Figure:
    """The smoothed training loss against the step, growing live; with markers while there are
    few points. `diverged` (step, raw loss) marks where the run blew up with a red X and a note
    ("diverged at step 2: loss 306 million"); a loss of inf or nan sits at the top of the axis."""
    points = np.asarray(batch_losses, dtype=np.float64).reshape(-1, 2)  # arrays validate fast
    mode = "lines+markers" if len(points) < FEW_POINTS else "lines"
    fig = go.Figure(go.Scatter(x=points[:, 0], y=points[:, 1], mode=mode,
                               name="smoothed batch loss"))
    fig.update_layout(title="Training loss (smoothed, per step)", xaxis_title="step",
                      yaxis_title="loss", height=300, margin=dict(t=40, b=45, l=40, r=10),
                      uirevision="batch-loss", showlegend=False)
    if not len(points):  # drawn before the first run, so the page has loaded plotly by then
        fig.update_xaxes(range=[0, 1], showticklabels=False)
        fig.update_yaxes(range=[0, 1], showticklabels=False)
        fig.update_layout(annotations=[dict(
            text="no training steps yet", x=0.5, y=0.5, xref="paper", yref="paper",
            showarrow=False, font=dict(size=13, color="#777"))])
    _live_axes(fig)
    if diverged is not None:
        _mark_blow_up(fig, points[:, 1], int(diverged[0]), float(diverged[1]))
    return fig


def _mark_blow_up(fig: go.Figure, losses: np.ndarray, step: int, loss: float) -> None:
    """The red X where the loss blew up and its note; the y axis made to show both it and the rest."""
    note = f"diverged at step {step:,}: loss {numbers.loss(loss)}"
    if math.isfinite(loss):
        log = len(losses) > 0 and losses[0] > 0 and loss > LOG_AXIS_FACTOR * losses[0]
        y, note_y = loss, (math.log10(loss) if log else loss)  # annotations on a log axis: log10
        if log:
            fig.update_yaxes(type="log")
    else:  # nothing to plot at inf or nan: the X goes at the top of the axis, the note says why
        low = float(losses.min()) if len(losses) else 0.0
        high = float(losses.max()) if len(losses) else 1.0
        y = note_y = high + max(0.25 * (high - low), 0.1 * abs(high), 0.1)
        fig.update_yaxes(range=[min(low, 0.0), y])
    fig.add_trace(go.Scatter(x=[step], y=[y], mode="markers", name="blew up", cliponaxis=False,
                             marker=DIVERGED_STYLE, hovertemplate=f"{note}<extra></extra>"))
    fig.add_annotation(x=step, y=note_y, xref="x", yref="y", text=note, showarrow=True,
                       arrowcolor=DIVERGED_STYLE["color"], ax=-40, ay=30, xanchor="right",
                       font=dict(size=13, color=DIVERGED_STYLE["color"]))


# One colour and one dash per split, on every curve figure: train, validation, evaluation (test).
SPLIT_STYLE = {"train": ("#1f77b4", "solid", "train"), "val": ("#2ca02c", "dot", "validation"),
               "test": ("#d62728", "dash", "test")}
PANEL_TITLE = dict(font=dict(size=15, color="#31333f"))


def epoch_curves_figure(history: Sequence[dict], best_epoch: int | None = None,
                        epochs: int | None = None) -> go.Figure:
    """Loss and accuracy (in %) per epoch: train, evaluation (test) and, with early stopping,
    validation, each split in its own colour in both panels (one legend entry each). The epoch
    early stopping kept, `best_epoch`, is marked; before any epoch ends the axes run over the
    run's `epochs` (when known) and say that nothing is there yet.

    Two panels side by side, laid out by hand: make_subplots costs more than the rest of a redraw.
    """
    fig = go.Figure()
    epoch_numbers = np.array([h["epoch"] for h in history])
    for axis, metric, scale in (("", "loss", 1.0), ("2", "acc", 100.0)):
        for split, (colour, dash, name) in SPLIT_STYLE.items():
            values = [h.get(f"{split}_{metric}") for h in history]
            if not any(v is not None for v in values):
                continue
            fig.add_trace(go.Scatter(
                x=epoch_numbers, y=np.array(values, dtype=np.float64) * scale,
                mode="lines+markers", name=name, legendgroup=split, showlegend=axis == "",
                line=dict(color=colour, dash=dash), marker=dict(color=colour),
                xaxis=f"x{axis}", yaxis=f"y{axis}",
                hovertemplate=f"{name}, epoch %{{x}}: %{{y:.{4 if metric == 'loss' else 2}f}}"
                              f"{'' if metric == 'loss' else '%'}<extra></extra>"))
    last = max(len(history), epochs or 0, 1)
    x_range = [0.5, last + 0.5]
    shapes = []
    if best_epoch is not None:
        shapes = [dict(type="line", xref=x, yref="paper", x0=best_epoch, x1=best_epoch,
                       y0=0, y1=1, line=dict(color="#555", width=1, dash="dot"))
                  for x in ("x", "x2")]
    notes = [dict(text=text, x=x, y=1.1, xref="paper", yref="paper", showarrow=False, **PANEL_TITLE)
             for text, x in (("loss per epoch", 0.22), ("accuracy per epoch", 0.78))]
    if best_epoch is not None:
        notes.append(dict(text=f"kept: epoch {best_epoch}", x=best_epoch, xref="x", y=1.0,
                          yref="paper", showarrow=False, yanchor="bottom", font=dict(size=11)))
    if not history:
        notes.append(dict(text="no epoch has finished yet", x=0.5, y=0.5, xref="paper",
                          yref="paper", showarrow=False, font=dict(size=13, color="#777")))
    fig.update_layout(
        height=340, margin=dict(t=50, b=70, l=50, r=10), uirevision="epochs",
        xaxis=dict(domain=[0, 0.45], title="epoch", dtick=1, range=x_range),
        xaxis2=dict(domain=[0.55, 1], title="epoch", dtick=1, anchor="y2", range=x_range),
        yaxis=dict(title="loss", **({} if history else {"range": [0, 1]})),
        yaxis2=dict(anchor="x2", title="accuracy", ticksuffix="%",
                    **({} if history else {"range": [0, 100]})),
        legend=dict(orientation="h", y=-0.25),
        shapes=shapes, annotations=notes,
    )
    _live_axes(fig)
    return fig


def _live_axes(fig: go.Figure) -> None:
    """Axes a browser can redraw about every second. plotly.js's default tick-label overflow
    check and automatic margins measure every label against the page (a forced layout of the whole
    Train page at each draw): profiled in Chromium, about a third of a running page's main-thread
    time. The figures' own margins leave room for their labels."""
    fig.update_xaxes(ticklabeloverflow="allow", automargin=False)
    fig.update_yaxes(ticklabeloverflow="allow", automargin=False)


def weight_grid_figure(weights: np.ndarray, image_shape: tuple[int, int], units: Sequence[int],
                       columns: int = 8, title: str = "", limit: float | None = None) -> go.Figure:
    """First-layer weights, one small image per unit, RdBu with a scale symmetric around zero:
    -limit..limit (default: the largest weight shown; give one limit for every epoch of a run so
    that their colours compare)."""
    weights = np.asarray(weights, dtype=np.float32)
    rows = math.ceil(len(units) / columns)
    h, w = image_shape
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan, dtype=np.float32)
    for k, unit in enumerate(units):
        r, c = divmod(k, columns)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = weights[unit].reshape(h, w)
    limit = limit or float(np.nanmax(np.abs(canvas))) or 1.0
    fig = go.Figure(go.Heatmap(z=canvas[::-1], colorscale="RdBu", zmin=-limit, zmax=limit,
                               zmid=0, showscale=True, hoverongaps=False))
    fig.update_layout(title=title, height=max(220, 90 * rows), margin=dict(t=40, b=10, l=10, r=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def annotate_grid(fig: go.Figure, labels: Sequence[str], image_shape: tuple[int, int],
                  columns: int = GRID_COLUMNS) -> go.Figure:
    """Write a small label in the top-left corner of each tile of a `weight_grid_figure`."""
    h, w = image_shape
    rows = math.ceil(len(labels) / columns) if labels else 0
    height = rows * (h + 1) - 1
    notes = []
    for k, label in enumerate(labels):
        r, c = divmod(k, columns)
        notes.append(go.layout.Annotation(
            x=c * (w + 1) - 0.5, y=height - r * (h + 1) - 0.5, text=str(label), showarrow=False,
            xanchor="left", yanchor="top", font=dict(size=9, color="black"),
            bgcolor="rgba(255,255,255,0.6)", borderpad=0))
    # one layout update: fig.add_annotation per tile validates the whole layout each time (slow)
    fig.update_layout(annotations=list(fig.layout.annotations) + notes)
    return fig


def heatmap_figure(matrix: np.ndarray, labels: Sequence[str], title: str, *,
                   colorscale: str = "Blues", zmid: float | None = None, text_format: str = "d"
                   ) -> go.Figure:
    """A confusion-style heatmap: rows true class, columns predicted, values written in the cells."""
    matrix = np.asarray(matrix)
    text = [[format(v, text_format) for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(z=matrix, x=list(labels), y=list(labels), colorscale=colorscale,
                               zmid=zmid, text=text, texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, height=480, margin=dict(t=40, b=40, l=40, r=10))
    fig.update_xaxes(title_text="predicted", type="category")
    fig.update_yaxes(title_text="true", type="category", autorange="reversed")
    return fig


def confusion_click_figure(matrix: np.ndarray, labels: Sequence[str], title: str, *,
                           text_format: str = "d", highlight: tuple[int, int] | None = None
                           ) -> go.Figure:
    """`heatmap_figure` plus one invisible marker per cell, so that a click on a cell selects
    a point (plotly heatmaps themselves cannot be selected), and a frame around `highlight`."""
    matrix = np.asarray(matrix)
    labels = list(labels)
    fig = heatmap_figure(matrix, labels, title, text_format=text_format)
    fig.data[0].hoverinfo = "skip"
    n = len(labels)
    rows, cols = np.divmod(np.arange(n * n), n)
    text = [format(matrix[r, c], text_format) for r, c in zip(rows, cols, strict=True)]
    fig.add_trace(go.Scatter(
        x=[labels[c] for c in cols], y=[labels[r] for r in rows], mode="markers",
        customdata=np.stack([rows, cols], axis=1).tolist(), text=text, showlegend=False,
        marker=dict(symbol="square", size=26, color="rgba(0,0,0,0)", line=dict(width=0)),
        selected=dict(marker=dict(color="rgba(0,0,0,0)")),
        unselected=dict(marker=dict(opacity=0)),
        hovertemplate="true %{y}, predicted %{x}: %{text}<br>click to see these images<extra></extra>",
        name="cells"))
    if highlight is not None:
        r, c = highlight
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                      line=dict(color="orange", width=3), xref="x", yref="y")
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def image_heatmap(image: np.ndarray, title: str = "", colorscale: str = "gray",
                  symmetric: bool = False, height: int = 260) -> go.Figure:
    """One 2-D array as an image (a digit, a feature map, feature importances)."""
    image = np.asarray(image, dtype=np.float32)
    kwargs = {}
    if symmetric:
        limit = float(np.abs(image).max()) or 1.0
        kwargs = dict(zmin=-limit, zmax=limit, zmid=0)
    fig = go.Figure(go.Heatmap(z=image[::-1], colorscale=colorscale, **kwargs))
    fig.update_layout(title=title, height=height, margin=dict(t=30, b=10, l=10, r=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def image_grid_figure(images: np.ndarray, title: str = "", columns: int = GRID_COLUMNS,
                      labels: Sequence[str] | None = None, colorscale: str = "Viridis") -> go.Figure:
    """Several 2-D maps (n, h, w) side by side on one colour scale (feature maps)."""
    images = np.asarray(images, dtype=np.float32)
    n, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan, dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, columns)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[k]
    fig = go.Figure(go.Heatmap(z=canvas[::-1], colorscale=colorscale, hoverongaps=False))
    fig.update_layout(title=title, height=max(200, 40 + 110 * rows), margin=dict(t=40, b=10, l=10, r=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    if labels:
        annotate_grid(fig, labels, (h, w), columns)
    return fig


def activation_figure(name: str, output: torch.Tensor, max_maps: int = 8) -> go.Figure:
    """One layer's output for one image: bars for a vector, the first few maps for a conv output."""
    values = output.detach().float().cpu().numpy()
    if values.ndim == 3:
        shown = min(max_maps, len(values))
        title = f"{name}: {shown} of {len(values)} maps, {values.shape[1]}×{values.shape[2]}"
        return image_grid_figure(values[:shown], title=title, labels=[str(i) for i in range(shown)])
    values = values.reshape(-1)
    fig = go.Figure(go.Bar(x=np.arange(len(values)), y=values,
                           hovertemplate="unit %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{name}: {len(values)} values", height=220, bargap=0,
                      margin=dict(t=40, b=30, l=40, r=10))
    fig.update_xaxes(title_text="unit")
    return fig


def probability_bars(probabilities: Sequence[float], classes: Sequence[str], title: str = ""
                     ) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(classes), y=list(probabilities)))
    fig.update_layout(title=title, height=260, yaxis_range=[0, 1], margin=dict(t=30, b=30, l=40, r=10))
    fig.update_xaxes(type="category")
    return fig


RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf")


OVERLAY_SPACING = 0.15  # of the figure's width, between the two panels


def runs_overlay_figure(overlay, labels: dict, split: str = "test") -> go.Figure:
    """Several runs' curves on one figure: accuracy per epoch (left, shown in %) and loss per epoch
    (right), one trace per run and panel, named by the run's label (shown as typed: plotly_literal).
    `overlay` has columns run, epoch and <split>_acc / <split>_loss (dlcore.views.experiments.overlay_frame);
    the accuracies stay fractions 0..1, their axis and hover written in percent. The panel titles
    are short and dark (PANEL_TITLE), the panels far enough apart that they never touch."""
    shown = SPLIT_STYLE[split][2] if split in SPLIT_STYLE else split
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=OVERLAY_SPACING,
                        subplot_titles=(f"{shown} accuracy", f"{shown} loss"))
    fig.update_annotations(**PANEL_TITLE)
    for i, (run_id, label) in enumerate(labels.items()):
        rows = overlay[overlay["run"] == run_id]
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for col, metric in ((1, "acc"), (2, "loss")):
            values = [None if v != v else float(v) for v in rows[f"{split}_{metric}"]]
            fig.add_trace(go.Scatter(x=[int(e) for e in rows["epoch"]], y=values, mode="lines+markers",
                                     name=plotly_literal(label), legendgroup=f"run-{run_id}",
                                     showlegend=col == 1, line=dict(color=color),
                                     meta=[int(run_id), metric]),
                          row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    shown_acc = overlay[overlay["run"].isin(list(labels))][f"{split}_acc"] if len(overlay) else []
    fig.update_yaxes(title_text="accuracy", hoverformat=".2%", row=1, col=1,
                     **accuracy_axis(shown_acc))
    fig.update_yaxes(title_text="loss", hoverformat=".4f", row=1, col=2)
    fig.update_layout(height=400, margin=dict(t=50, b=70, l=50, r=10), uirevision="overlay",
                      legend=dict(orientation="h", y=-0.25))  # beside the panels it squeezed them
    return fig


def accuracy_axis(values: Sequence[float]) -> dict:
    """A y axis for accuracies (0..1, shown in %): around the values with a little room, never
    below 0% or above 100% (plotly's own range put one run's point between 50% and 150%)."""
    present = np.asarray([v for v in values if v == v], dtype=np.float64)
    if not present.size:
        return dict(range=[0, 1], tickformat=".0%")
    lo, hi = float(present.min()), float(present.max())
    pad = max(0.01, 0.1 * (hi - lo))
    low, high = max(0.0, lo - pad), min(1.0, hi + pad)
    return dict(range=[low, high], tickformat=".0%" if high - low > 0.05 else ".1%")


def config_scatter_figure(frame, field: str, numeric: bool, log_x: bool = False) -> go.Figure:
    """One point per run: `field` (x) against final test accuracy (y); selected runs highlighted.
    `frame` has columns label, x, test_acc, selected (dlcore.views.experiments.scatter_data); the labels and
    category values are shown as typed (plotly_literal)."""
    fig = go.Figure()
    shown_field = plotly_literal(field)
    for selected, name, marker in (
            (False, "other runs", dict(color="#b0b7c3", size=9)),
            (True, "selected runs", dict(color="#d62728", size=13, line=dict(color="black", width=1)))):
        rows = frame[frame["selected"] == selected]
        if rows.empty:
            continue
        fig.add_trace(go.Scatter(
            x=[plotly_literal(x) for x in rows["x"]] if not numeric else rows["x"].tolist(),
            y=rows["test_acc"].astype(float).tolist(), mode="markers",
            name=name, marker=marker, text=[plotly_literal(t) for t in rows["label"]],
            hovertemplate=f"%{{text}}<br>{shown_field}: %{{x}}<br>test accuracy: %{{y:.2%}}<extra></extra>"))
    fig.update_xaxes(title_text=shown_field, type="log" if log_x else ("linear" if numeric else "category"))
    if log_x:  # one label a decade, written 0.001 (plotly's own: "100µ", then "2" and "5")
        fig.update_xaxes(dtick=1, exponentformat="none")
    if not numeric:
        fig.update_xaxes(categoryorder="category ascending")
    fig.update_yaxes(title_text="final test accuracy", **accuracy_axis(frame["test_acc"]))
    fig.update_layout(height=360, margin=dict(t=30, b=40, l=50, r=10), uirevision=f"scatter-{field}")
    return fig


# One colour per model on every figure that compares them (dlcore.views.baseline's series names):
# blue and orange, told apart by colour-blind viewers and on a washed-out projector alike.
MODEL_COLORS = {"network": "#1f77b4", "random forest": "#ff7f0e"}


def model_color(name: str) -> str | None:
    """The colour of the model a series is named after; None (plotly's default) for any other."""
    return MODEL_COLORS.get(name)


def grouped_bar_figure(categories: Sequence[str], series: dict[str, Sequence[float]], title: str = "",
                       yaxis_title: str = "", yaxis_range: Sequence[float] | None = None,
                       xaxis_title: str = "") -> go.Figure:
    """Bars side by side per category, one colour per series (e.g. per-class accuracy of two
    models, each in its MODEL_COLORS colour)."""
    fig = go.Figure([go.Bar(x=list(categories), y=list(values), name=name,
                            marker_color=model_color(name))
                     for name, values in series.items()])
    fig.update_layout(title=title, barmode="group", height=340, yaxis_title=yaxis_title,
                      xaxis_title=xaxis_title, margin=dict(t=40, b=30, l=50, r=10),
                      legend=dict(orientation="h", y=-0.3 if xaxis_title else -0.15))
    if yaxis_range is not None:
        fig.update_yaxes(range=list(yaxis_range))
    fig.update_xaxes(type="category")
    return fig


def ranked_bar_figure(names: Sequence[str], values: Sequence[float], title: str = "",
                      xaxis_title: str = "") -> go.Figure:
    """Horizontal bars, the first name on top (e.g. the most important features)."""
    fig = go.Figure(go.Bar(x=list(values), y=list(names), orientation="h"))
    fig.update_layout(title=title, height=max(260, 22 * len(names) + 60), xaxis_title=xaxis_title,
                      margin=dict(t=30, b=30, l=10, r=10))
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def log_x_lines_figure(x: Sequence[float], series: dict[str, Sequence[float]], title: str = "",
                       xaxis_title: str = "", yaxis_title: str = "") -> go.Figure:
    """Lines with markers against a log-scale x (e.g. test accuracy against training-set size),
    a model's series in its MODEL_COLORS colour."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(values), mode="lines+markers", name=name,
                                line=dict(color=model_color(name)),
                                marker=dict(color=model_color(name)))
                     for name, values in series.items()])
    fig.update_layout(title=title, height=360, xaxis_title=xaxis_title, yaxis_title=yaxis_title,
                      margin=dict(t=40, b=40, l=50, r=10))
    fig.update_xaxes(type="log")
    return fig
