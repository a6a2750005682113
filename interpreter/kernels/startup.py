# Run by every Python kernel of roost-interpreter at its start (python.py
# runs it in the shell): the display formats E2B's code interpreter
# adds to IPython's. A pandas DataFrame shown also gives "e2b/data", its
# columns as lists (the package's result.data); a matplotlib figure gives
# "e2b/chart", what it plots (the package's result.chart: line, scatter,
# bar, pie, box_and_whisker, or a superchart of several axes).
def _roost_setup():
    import math
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    def plain(v):
        if hasattr(v, "isoformat"):  # timestamps, dates
            return v.isoformat()
        if hasattr(v, "item"):  # numpy scalars
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    def frame(df):
        return {str(col): [plain(v) for v in values] for col, values in df.to_dict(orient="list").items()}

    shell = get_ipython()
    formatter = DataFormatter(parent=shell.display_formatter)
    formatter.for_type_by_name("pandas.core.frame", "DataFrame", frame)
    shell.display_formatter.formatters["e2b/data"] = formatter

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

    # A figure's chart comes from a method the formatter looks for on it:
    # a printer registered for Figure would be dropped as IPython's inline
    # backend starts (it clears every formatter's Figure printers).
    shell.display_formatter.formatters["e2b/chart"] = ChartFormatter(parent=shell.display_formatter)
    _roost_watch_matplotlib()


def _roost_watch_matplotlib():
    """Patches matplotlib's modules as they are imported: figures give
    their chart, and Axes.boxplot keeps what it drew on its axes (a box
    plot is lines and patches, not one artist to find)."""
    import importlib.abc
    import sys

    def figure(module):
        module.Figure._repr_e2b_chart_ = _roost_chart

    def axes(module):
        draw = module.Axes.boxplot

        def boxplot(self, *args, **kwargs):
            drawn = draw(self, *args, **kwargs)
            self._roost_boxplots = getattr(self, "_roost_boxplots", []) + [(drawn, kwargs.get("vert", True) is not False)]
            return drawn

        module.Axes.boxplot = boxplot

    patches = {"matplotlib.figure": figure, "matplotlib.axes": axes}

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in patches:
                return None
            for finder in sys.meta_path:
                spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
                if spec is not None and spec.loader is not None:
                    run = spec.loader.exec_module

                    def exec_module(module):
                        run(module)
                        patches[name](module)

                    spec.loader.exec_module = exec_module
                    return spec
            return None

    for name in list(patches):
        if name in sys.modules:
            patches.pop(name)(sys.modules[name])
    sys.meta_path.insert(0, Watch())


def _roost_chart(fig):
    """The chart of a matplotlib figure, or None when none of its axes
    plots something it knows (the PNG still comes)."""
    try:
        fig.draw_without_rendering()  # tick labels are set as it draws
        found = [c for c in map(_roost_axes_chart, fig.get_axes()) if c is not None]
    except Exception:
        return None
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return {"type": "superchart", "title": title, "elements": found}


def _roost_axes_chart(ax):
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer
    from matplotlib.patches import Wedge

    title = ax.get_title()
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    if wedges:
        return {"type": "pie", "title": title, "elements": [
            {"label": _roost_label(w), "angle": float(w.theta2 - w.theta1), "radius": float(w.r)} for w in wedges]}
    if getattr(ax, "_roost_boxplots", None):
        return _roost_box_chart(ax, title)
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        return _roost_bar_chart(ax, title, bars)
    scatters = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    if scatters:
        return _roost_point_chart(ax, title, "scatter", [(_roost_label(c), c.get_offsets()) for c in scatters])
    lines = [l for l in ax.get_lines() if len(l.get_xydata())]
    if lines:
        return _roost_point_chart(ax, title, "line", [(_roost_label(l), l.get_xydata()) for l in lines])
    return None


def _roost_label(artist):
    label = artist.get_label()
    return "" if label is None or label.startswith("_") else str(label)


def _roost_axes_2d(ax, kind, title):
    chart = {"type": kind, "title": title}
    for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
        label = axis.get_label().get_text()
        chart[name + "_label"] = label
        chart[name + "_unit"] = _roost_unit(label)
    return chart


def _roost_unit(label):
    """The unit a label ends with in brackets: "Time (s)" is in s."""
    import re

    m = re.search(r"[(\[]([^()\[\]]+)[)\]]\s*$", label)
    return m.group(1) if m else None


def _roost_scale(axis, scale):
    """The scale of an axis, and how a value on it reads."""
    import matplotlib.category
    import matplotlib.dates

    if isinstance(axis.get_units(), matplotlib.category.UnitData):
        names = {v: k for k, v in axis.get_units()._mapping.items()}
        return "categorical", lambda v: names.get(float(v), float(v))
    if isinstance(axis.get_major_formatter(), (matplotlib.dates.AutoDateFormatter, matplotlib.dates.ConciseDateFormatter, matplotlib.dates.DateFormatter)):
        return "datetime", lambda v: matplotlib.dates.num2date(v).isoformat()
    return scale, float


def _roost_point_chart(ax, title, kind, series):
    chart = _roost_axes_2d(ax, kind, title)
    x_scale, x_value = _roost_scale(ax.xaxis, ax.get_xscale())
    y_scale, y_value = _roost_scale(ax.yaxis, ax.get_yscale())
    chart.update({
        "x_scale": x_scale, "x_ticks": [x_value(v) for v in ax.get_xticks()],
        "x_tick_labels": [t.get_text() for t in ax.get_xticklabels()],
        "y_scale": y_scale, "y_ticks": [y_value(v) for v in ax.get_yticks()],
        "y_tick_labels": [t.get_text() for t in ax.get_yticklabels()],
        "elements": [{"label": label, "points": [[x_value(x), y_value(y)] for x, y in points]} for label, points in series],
    })
    return chart


def _roost_tick_label(ticks, labels, at, width):
    """The label of the tick at a bar's centre, else the centre."""
    for tick, label in zip(ticks, labels):
        if abs(tick - at) <= width / 2 and label.get_text():
            return label.get_text()
    return format(at, "g")


def _roost_bar_chart(ax, title, containers):
    chart = _roost_axes_2d(ax, "bar", title)
    elements = []
    for c in containers:
        vertical = getattr(c, "orientation", "vertical") != "horizontal"
        axis = ax.xaxis if vertical else ax.yaxis
        ticks, labels = axis.get_majorticklocs(), axis.get_majorticklabels()
        for bar in c.patches:
            at = bar.get_x() + bar.get_width() / 2 if vertical else bar.get_y() + bar.get_height() / 2
            size = bar.get_width() if vertical else bar.get_height()
            value = bar.get_height() if vertical else bar.get_width()
            elements.append({"label": _roost_tick_label(ticks, labels, at, size), "value": format(float(value), "g"), "group": _roost_label(c)})
    chart["elements"] = elements
    return chart


def _roost_box_chart(ax, title):
    chart = _roost_axes_2d(ax, "box_and_whisker", title)
    elements = []
    for drawn, vertical in ax._roost_boxplots:
        axis = ax.xaxis if vertical else ax.yaxis
        ticks, labels = axis.get_majorticklocs(), axis.get_majorticklabels()

        def values(line):
            return [float(v) for v in (line.get_ydata() if vertical else line.get_xdata())]

        def place(line):
            return float((line.get_xdata() if vertical else line.get_ydata())[0])

        for i, median in enumerate(drawn["medians"]):
            low, high = values(drawn["whiskers"][2 * i]), values(drawn["whiskers"][2 * i + 1])
            at = sum(median.get_xdata() if vertical else median.get_ydata()) / 2
            fliers = drawn["fliers"][i] if i < len(drawn["fliers"]) else None
            elements.append({
                "label": _roost_tick_label(ticks, labels, at, 1.0),
                "min": min(low), "first_quartile": max(low), "median": values(median)[0],
                "third_quartile": min(high), "max": max(high),
                "outliers": values(fliers) if fliers is not None else [],
            })
    chart["elements"] = elements
    return chart


_roost_setup()
del _roost_setup
