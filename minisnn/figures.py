"""Small Pillow plotting helpers for every figure of the project (no matplotlib).

Line, bar and labelled scatter plots, panel grids and training curves.
Plots are drawn at twice the requested size and downsampled with LANCZOS,
which anti-aliases lines and text. Colours come from the Okabe-Ito
palette, which stays distinguishable under the common colour-vision
deficiencies. Every function validates its data and raises ValueError
naming the output file and the offending series or point.
"""

import functools
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import write_atomically

# Okabe-Ito, reordered so the first colours are the most distinct on white
# (its yellow is faint on white, so it comes last).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
HIGHLIGHT = PALETTE[1]

_S = 2  # supersampling factor: everything below is laid out in final pixels times _S
_TEXT = "#222222"
_AXIS = "#444444"
_GRID = "#E4E4E4"


@functools.lru_cache(maxsize=None)
def _font(px):
    # Pillow >= 10.1 scales its bundled FreeType font; px is in final pixels.
    return ImageFont.load_default(size=px * _S)


def _line_height(font):
    ascent, descent = font.getmetrics()
    return ascent + descent


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


# -- validation -------------------------------------------------------------

def _finite_1d(values, path, what):
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {what} must be numbers") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{path}: {what} must be a non-empty 1-D sequence, found shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{path}: {what} has a non-finite value {arr[bad[0]]} at index {bad[0]}")
    return arr


# -- axes -------------------------------------------------------------------

class _Axis:
    """Limits and ticks of one axis; ``frac`` maps data values to 0..1."""

    def __init__(self, lo, hi, ticks, labels, log=False, minor=()):
        self.lo, self.hi, self.log = lo, hi, log
        self.ticks, self.labels, self.minor = list(ticks), list(labels), list(minor)

    def frac(self, v):
        v = np.asarray(v, dtype=np.float64)
        if self.log:
            return (np.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)


def _nice_step(span, target=5):
    raw = span / target
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag * (1 + 1e-9))


def _format_ticks(values, step):
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    big = max(abs(v) for v in values) >= 1e4  # thousands separators from 10,000 up
    return [f"{v + 0.0:{',' if big else ''}.{decimals}f}" for v in values]


def _linear_axis(lo, hi, fixed=False, target=5):
    """Nice round ticks; unless ``fixed``, the limits grow to the outer ticks."""
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) if fixed else math.floor(lo / step + 1e-9)
    last = math.floor(hi / step + 1e-9) if fixed else math.ceil(hi / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    if not fixed:
        lo, hi = ticks[0], ticks[-1]
    return _Axis(lo, hi, ticks, _format_ticks(ticks, step))


def _log_label(k):
    return f"{10.0 ** k:g}" if -3 <= k <= 4 else f"1e{k}"


def _log_axis(lo, hi, fixed=False):
    """Ticks at powers of ten (every other one beyond 8 decades), minor ticks at 2..9."""
    klo, khi = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if khi == klo:
        khi += 1
    if not fixed:
        lo, hi = 10.0 ** klo, 10.0 ** khi
    stride = 1 if khi - klo <= 8 else 2
    ks = [k for k in range(klo, khi + 1, stride) if lo * (1 - 1e-9) <= 10.0 ** k <= hi * (1 + 1e-9)]
    minor = [m * 10.0 ** k for k in range(klo, khi) for m in range(2, 10)
             if stride == 1 and lo <= m * 10.0 ** k <= hi]
    if len(ks) < 2:  # a fixed range inside one decade: label the 2..9 multiples instead
        ticks = sorted(minor + [10.0 ** k for k in ks])
        return _Axis(lo, hi, ticks, [f"{t:g}" for t in ticks], log=True)
    return _Axis(lo, hi, [10.0 ** k for k in ks], [_log_label(k) for k in ks], log=True, minor=minor)


def _y_axis(ys, ylim, logy, path):
    if logy:
        if ylim is None and ys.min() <= 0:
            raise ValueError(f"{path}: logy needs positive y values, found {ys.min()}")
        if ylim is not None and min(ylim) <= 0:
            raise ValueError(f"{path}: logy needs positive ylim, found {tuple(ylim)}")
        return _log_axis(*(ylim or (ys.min(), ys.max())), fixed=ylim is not None)
    if ylim is not None:
        return _linear_axis(*ylim, fixed=True)
    return _linear_axis(ys.min(), ys.max())


def _check_ylim(ylim, path):
    if ylim is None:
        return None
    lo, hi = (float(v) for v in ylim)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{path}: ylim must be two finite numbers low < high, found {tuple(ylim)}")
    return lo, hi


# -- the canvas -------------------------------------------------------------

class _Plot:
    """A supersampled canvas with title, axis labels, ticks, grid and a data area."""

    def __init__(self, size, title, xlabel, ylabel, xaxis, yaxis, xgrid=True):
        w, h = (int(v) for v in size)
        if w < 200 or h < 150:
            raise ValueError(f"plot size must be at least (200, 150), found {tuple(size)}")
        self.size = (w, h)
        self.img = Image.new("RGB", (w * _S, h * _S), "white")
        self.draw = ImageDraw.Draw(self.img)
        self.xaxis, self.yaxis = xaxis, yaxis
        tick_font, label_font, title_font = _font(12), _font(13), _font(16)
        pad = 8 * _S

        tick_w = max((_text_size(self.draw, s, tick_font)[0] for s in yaxis.labels), default=0)
        tick_h, label_h, title_h = (_line_height(f) for f in (tick_font, label_font, title_font))
        first_x, last_x = (_text_size(self.draw, xaxis.labels[i], tick_font)[0] if xaxis.labels else 0
                           for i in (0, -1))

        # Margins hold the tick labels, axis labels and title, and half of the
        # outermost x tick labels, which are centred on the frame's corners.
        x0 = max(pad + (label_h if ylabel else 0) + tick_w + 9 * _S, first_x // 2 + pad)
        x1 = w * _S - max(2 * pad, last_x // 2 + pad)
        y0 = title_h + 2 * pad if title else 2 * pad
        y1 = h * _S - (pad + (label_h if xlabel else 0) + tick_h + 8 * _S)
        self.box = (x0, y0, x1, y1)

        d = self.draw
        for v in yaxis.ticks:
            y = self._py(v)
            d.line([(x0, y), (x1, y)], fill=_GRID, width=_S)
        if xgrid:
            for v in xaxis.ticks:
                x = self._px(v)
                d.line([(x, y0), (x, y1)], fill=_GRID, width=_S)
        d.rectangle([x0, y0, x1, y1], outline=_AXIS, width=_S)
        tick = 5 * _S
        for v, s in zip(yaxis.ticks, yaxis.labels):
            y = self._py(v)
            d.line([(x0 - tick, y), (x0, y)], fill=_AXIS, width=_S)
            d.text((x0 - tick - 3 * _S, y), s, font=tick_font, fill=_TEXT, anchor="rm")
        for v in yaxis.minor:
            y = self._py(v)
            d.line([(x0 - tick // 2, y), (x0, y)], fill=_AXIS, width=_S)
        for v, s in zip(xaxis.ticks, xaxis.labels):
            x = self._px(v)
            d.line([(x, y1), (x, y1 + tick)], fill=_AXIS, width=_S)
            d.text((x, y1 + tick + 3 * _S), s, font=tick_font, fill=_TEXT, anchor="mt")
        if title:
            d.text(((x0 + x1) / 2, pad), title, font=title_font, fill=_TEXT, anchor="mt")
        if xlabel:
            d.text(((x0 + x1) / 2, h * _S - pad), xlabel, font=label_font, fill=_TEXT, anchor="md")
        if ylabel:
            tw, th = _text_size(d, ylabel, label_font)
            layer = Image.new("RGBA", (tw + 4 * _S, th + 4 * _S), (255, 255, 255, 0))
            ImageDraw.Draw(layer).text((layer.width / 2, layer.height / 2), ylabel,
                                       font=label_font, fill=_TEXT, anchor="mm")
            layer = layer.rotate(90, expand=True)
            self.img.paste(layer, (pad - 2 * _S, int((y0 + y1) / 2 - layer.height / 2)), layer)

    def _px(self, x):
        x0, _, x1, _ = self.box
        return x0 + self.xaxis.frac(x) * (x1 - x0)

    def _py(self, y):
        _, y0, _, y1 = self.box
        return y1 - self.yaxis.frac(y) * (y1 - y0)

    def to_px(self, x, y):
        return self._px(x), self._py(y)

    def data_layer(self):
        """A transparent layer the size of the canvas; :meth:`paste_clipped` clips it to the axes."""
        layer = Image.new("RGBA", self.img.size, (255, 255, 255, 0))
        return layer, ImageDraw.Draw(layer)

    def paste_clipped(self, layer):
        x0, y0, x1, y1 = (int(round(v)) for v in self.box)
        inner = (x0 + _S, y0 + _S, x1 - _S + 1, y1 - _S + 1)  # keep the frame on top
        crop = layer.crop(inner)
        self.img.paste(crop, inner[:2], crop)

    def legend(self, entries, avoid):
        """Draw a legend box in the plot corner covering fewest of the ``avoid`` pixels.

        entries: (label, colour, kind) with kind "line", "line+marker", "marker" or "patch".
        """
        if not entries:
            return
        font, pad, swatch = _font(12), 6 * _S, 22 * _S
        row_h = max(_text_size(self.draw, "Xg", font)[1], 10 * _S) + 5 * _S
        text_w = max(_text_size(self.draw, label, font)[0] for label, _, _ in entries)
        bw, bh = pad * 3 + swatch + text_w, pad * 2 + row_h * len(entries) - 5 * _S
        x0, y0, x1, y1 = self.box
        inset = 8 * _S
        corners = [(x1 - inset - bw, y0 + inset), (x0 + inset, y0 + inset),
                   (x1 - inset - bw, y1 - inset - bh), (x0 + inset, y1 - inset - bh)]
        ax, ay = avoid
        m = 5 * _S  # data just beside the box crowds it too
        scores = [np.count_nonzero((ax >= cx - m) & (ax <= cx + bw + m) & (ay >= cy - m) & (ay <= cy + bh + m))
                  for cx, cy in corners]
        cx, cy = corners[int(np.argmin(scores))]  # argmin keeps the first corner on ties
        d = self.draw
        d.rounded_rectangle([cx, cy, cx + bw, cy + bh], radius=3 * _S, fill="white",
                            outline="#BBBBBB", width=_S)
        for i, (label, colour, kind) in enumerate(entries):
            ym = cy + pad + i * row_h + (row_h - 5 * _S) / 2
            sx = cx + pad
            if kind == "patch":
                d.rectangle([sx + 4 * _S, ym - 5 * _S, sx + swatch - 4 * _S, ym + 5 * _S], fill=colour)
            if "line" in kind:
                d.line([(sx, ym), (sx + swatch, ym)], fill=colour, width=2 * _S)
            if "marker" in kind:
                _marker(d, sx + swatch / 2, ym, colour)
            d.text((sx + swatch + pad, ym), label, font=font, fill=_TEXT, anchor="lm")

    def save(self, path):
        return _save(self.image(), path)

    def image(self):
        return self.img.resize(self.size, Image.LANCZOS)


def _marker(draw, x, y, colour, r=3.5):
    r = r * _S
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline="white", width=_S)


def _save(img, path):
    """Write the PNG atomically: a crash or a full disk never leaves half a figure."""
    return write_atomically(pathlib.Path(path), lambda f: img.save(f, format="PNG"))


def _densify(px, py, step=3 * _S):
    """Points every ``step`` pixels along a polyline, so legends avoid lines, not just vertices."""
    seg = np.hypot(np.diff(px), np.diff(py))
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.arange(0.0, dist[-1] + step, step) if dist[-1] > 0 else dist
    return np.interp(at, dist, px), np.interp(at, dist, py)


# -- public plots -----------------------------------------------------------

def _check_series(series, path):
    if not series:
        raise ValueError(f"{path}: line_plot needs at least one series, found none")
    checked = []
    for i, s in enumerate(series):
        label = str(s.get("label", f"series {i}"))
        name = f"series {i} ({label!r})"
        if "x" not in s or "y" not in s:
            raise ValueError(f"{path}: {name} needs both 'x' and 'y'")
        x = _finite_1d(s["x"], path, f"{name} x")
        y = _finite_1d(s["y"], path, f"{name} y")
        if x.size != y.size:
            raise ValueError(f"{path}: {name} has {x.size} x values but {y.size} y values")
        colour = s.get("color") or PALETTE[i % len(PALETTE)]
        checked.append((x, y, label, colour, bool(s.get("marker", False))))
    return checked


def _line_image(series, path, title, xlabel, ylabel, size, ylim, logy):
    checked = _check_series(series, path)
    ylim = _check_ylim(ylim, path)
    xs = np.concatenate([s[0] for s in checked])
    ys = np.concatenate([s[1] for s in checked])
    plot = _Plot(size, title, xlabel, ylabel, _linear_axis(xs.min(), xs.max()),
                 _y_axis(ys, ylim, logy, path))
    layer, d = plot.data_layer()
    avoid_x, avoid_y, entries = [], [], []
    for x, y, label, colour, marker in checked:
        # Clip to the visible y range before the log so values off a fixed ylim still draw.
        px, py = plot.to_px(x, np.clip(y, *ylim) if ylim and logy else y)
        if len(px) > 1:
            d.line(list(zip(px, py)), fill=colour, width=2 * _S, joint="curve")
        if marker or len(px) == 1:
            for xx, yy in zip(px, py):
                _marker(d, xx, yy, colour)
        dx, dy = _densify(px, py)
        avoid_x.append(dx)
        avoid_y.append(dy)
        entries.append((label, colour, "line+marker" if marker else "line" if len(px) > 1 else "marker"))
    plot.paste_clipped(layer)
    if any("label" in s for s in series):
        plot.legend(entries, (np.concatenate(avoid_x), np.concatenate(avoid_y)))
    return plot.image()


def line_plot(series, path, title="", xlabel="", ylabel="", size=(800, 500), ylim=None, logy=False):
    """Lines from ``series``: dicts {"x", "y", "label", optional "color", optional "marker"}.

    Writes a PNG of ``size`` at ``path`` (parent directories created) and
    returns the path. A legend is drawn when any series has a label.
    """
    return _save(_line_image(series, path, title, xlabel, ylabel, size, ylim, logy), path)


def _highlight_mask(highlight, n, path):
    h = np.asarray(highlight)
    if h.dtype == bool:
        if h.shape != (n,):
            raise ValueError(f"{path}: highlight mask has shape {h.shape}, expected ({n},)")
        return h
    idx = h.reshape(-1)
    if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{path}: highlight indices must be integers in [0, {n}), "
                         f"found {idx.min()}..{idx.max()} ({idx.dtype})")
    mask = np.zeros(n, dtype=bool)
    mask[idx.astype(np.intp)] = True
    return mask


def bar_plot(values, path, title="", xlabel="", ylabel="", highlight=None, size=(1000, 400),
             labels=None, ylim=None, legend=("other", "highlighted")):
    """One bar per value; bars in ``highlight`` (boolean mask or indices) in a second colour.

    ``labels`` are per-bar tick labels, thinned so they never overlap;
    without them the x axis shows bar indices. ``legend`` names the plain
    and highlighted bars (a legend is drawn only with ``highlight``).
    """
    v = _finite_1d(values, path, "bar values")
    n = v.size
    ylim = _check_ylim(ylim, path)
    mask = None if highlight is None else _highlight_mask(highlight, n, path)
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != n:
            raise ValueError(f"{path}: {len(labels)} labels for {n} bars")

    # 5% headroom so the tallest bar does not end on the frame.
    yaxis = (_linear_axis(*ylim, fixed=True) if ylim
             else _linear_axis(min(0.0, 1.05 * v.min()), max(0.0, 1.05 * v.max())))
    # Each bar gets a full slot, the first and last included.
    if labels is None:
        step = max(1, int(_nice_step(n - 1, target=8))) if n > 1 else 1
        ticks = range(0, n, step)
        xaxis = _Axis(-0.5, n - 0.5, ticks, [str(t) for t in ticks])
    else:
        xaxis = _Axis(-0.5, n - 0.5, range(n), labels)
        _thin_labels(xaxis, size, n)
    plot = _Plot(size, title, xlabel, ylabel, xaxis, yaxis, xgrid=False)

    layer, d = plot.data_layer()
    x0, _, x1, _ = plot.box
    slot = (x1 - x0) / n
    half = max(slot * 0.4, _S / 2) if slot > 4 * _S else slot / 2  # no gaps once bars get thin
    centres, base = plot._px(np.arange(n)), plot._py(np.clip(0.0, yaxis.lo, yaxis.hi))
    tops = plot._py(np.clip(v, yaxis.lo, yaxis.hi))
    for i in range(n):
        colour = HIGHLIGHT if mask is not None and mask[i] else PALETTE[0]
        top, bottom = sorted((tops[i], base))
        d.rectangle([centres[i] - half, top, centres[i] + half, bottom], fill=colour)
    plot.paste_clipped(layer)
    if mask is not None:
        # Sample every bar along its height so the legend lands over short bars.
        avoid = [(np.full(k.size, c), k) for c, t in zip(centres, tops)
                 for k in [np.linspace(t, base, max(2, int(abs(base - t) / (4 * _S))))]]
        plot.legend([(legend[0], PALETTE[0], "patch"), (legend[1], HIGHLIGHT, "patch")],
                    (np.concatenate([a for a, _ in avoid]), np.concatenate([b for _, b in avoid])))
    return plot.save(path)


def _thin_labels(xaxis, size, n):
    """Keep every k-th category label (k a round number) so neighbours do not overlap."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = max(_text_size(probe, s, _font(12))[0] for s in xaxis.labels) + 8 * _S
    slot = size[0] * _S * 0.85 / n  # the axes span most of the width
    stride = int(_nice_step(widest / slot, target=1)) if widest > slot else 1
    xaxis.ticks, xaxis.labels = xaxis.ticks[::stride], xaxis.labels[::stride]


def scatter_plot(points, path, title="", xlabel="", ylabel="", size=(800, 500)):
    """Labelled points: dicts {"x", "y", "label", optional "color"}; each point carries its label."""
    if not points:
        raise ValueError(f"{path}: scatter_plot needs at least one point, found none")
    xs = np.empty(len(points))
    ys = np.empty(len(points))
    for i, p in enumerate(points):
        for axis, out in (("x", xs), ("y", ys)):
            if axis not in p:
                raise ValueError(f"{path}: point {i} has no {axis!r}")
            try:
                out[i] = float(p[axis])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: point {i} {axis!r} must be a number, found {p[axis]!r}") from None
            if not math.isfinite(out[i]):
                raise ValueError(f"{path}: point {i} ({p.get('label', '')!r}) has {axis} = {out[i]}")

    def padded(a):
        # Room around the extreme points so markers and labels do not sit on the frame.
        span = a.max() - a.min() or abs(a.max()) or 1.0
        return _linear_axis(a.min() - 0.08 * span, a.max() + 0.08 * span)

    plot = _Plot(size, title, xlabel, ylabel, padded(xs), padded(ys))
    px, py = plot.to_px(xs, ys)
    font = _font(12)
    r = 5 * _S
    taken = [(x - r, y - r, x + r, y + r) for x, y in zip(px, py)]
    bx0, by0, bx1, by1 = plot.box
    for i, p in enumerate(points):
        colour = p.get("color") or PALETTE[i % len(PALETTE)]
        _marker(plot.draw, px[i], py[i], colour, r=4.5)
        label = str(p.get("label", ""))
        if not label:
            continue
        off = 6 * _S
        best = None
        for dx, dy, anchor in ((off, -off, "ld"), (off, off, "la"), (-off, -off, "rd"),
                               (-off, off, "ra"), (off + 2 * _S, 0, "lm"), (-off - 2 * _S, 0, "rm")):
            box = plot.draw.textbbox((px[i] + dx, py[i] + dy), label, font=font, anchor=anchor)
            inside = box[0] >= bx0 and box[2] <= bx1 and box[1] >= by0 and box[3] <= by1
            overlap = sum(_overlap(box, t) for j, t in enumerate(taken) if j != i)
            cost = overlap + (0 if inside else 1e9)
            if best is None or cost < best[0]:
                best = (cost, (px[i] + dx, py[i] + dy), anchor, box)
            if cost == 0:
                break
        _, xy, anchor, box = best
        plot.draw.text(xy, label, font=font, fill=_TEXT, anchor=anchor)
        taken.append(box)
    return plot.save(path)


def _overlap(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def grid(images, path, ncols):
    """Tile PIL images or PNG paths row by row, ``ncols`` per row, into one PNG."""
    if not images:
        raise ValueError(f"{path}: grid needs at least one image, found none")
    if int(ncols) < 1:
        raise ValueError(f"{path}: ncols must be at least 1, found {ncols}")
    tiles = [im.convert("RGB") if isinstance(im, Image.Image) else _open(im, path) for im in images]
    cw, ch = max(t.width for t in tiles), max(t.height for t in tiles)
    ncols = min(int(ncols), len(tiles))
    nrows = math.ceil(len(tiles) / ncols)
    out = Image.new("RGB", (cw * ncols, ch * nrows), "white")
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        out.paste(t, (c * cw + (cw - t.width) // 2, r * ch + (ch - t.height) // 2))
    return _save(out, path)


def _open(src, path):
    try:
        with Image.open(src) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read grid panel {src}: {exc}") from None


def training_curves(metrics, path):
    """Loss and train/test accuracy against epoch (plus the learning rate if given), side by side.

    metrics: {"epoch", "train_loss", "train_acc", "test_acc", optional "lr"}, equal-length lists.
    """
    missing = [k for k in ("epoch", "train_loss", "train_acc", "test_acc") if k not in metrics]
    if missing:
        raise ValueError(f"{path}: metrics lack {', '.join(map(repr, missing))}")
    epoch = metrics["epoch"]
    panel = (600, 420)
    panels = [
        _line_image([{"x": epoch, "y": metrics["train_loss"], "label": "train"}], path,
                    "Loss", "epoch", "cross-entropy", panel, None, False),
        _line_image([{"x": epoch, "y": metrics["train_acc"], "label": "train"},
                     {"x": epoch, "y": metrics["test_acc"], "label": "test"}], path,
                    "Accuracy", "epoch", "accuracy", panel, None, False),
    ]
    if "lr" in metrics:
        panels.append(_line_image([{"x": epoch, "y": metrics["lr"], "label": "lr",
                                    "color": PALETTE[2]}], path,
                                  "Learning rate", "epoch", "learning rate", panel, None, False))
    return grid(panels, path, ncols=len(panels))
