import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageColor

from minisnn import figures
from minisnn.figures import bar_plot, grid, line_plot, scatter_plot, training_curves

MAGENTA = "#FF00FF"  # in no palette: any pixel of it was drawn by the series under test


def load(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB")).astype(int)


def colour_mask(pixels, colour, tol=40):
    return np.abs(pixels - np.array(ImageColor.getrgb(colour))).sum(axis=-1) < tol


def test_line_plot_draws_the_line_where_the_data_is(tmp_path):
    x = np.arange(20)
    path = line_plot([{"x": x, "y": x ** 2, "label": "rising", "color": MAGENTA},
                      {"x": x, "y": 400 - x ** 2, "label": "falling"}],
                     tmp_path / "deep" / "dir" / "line.png", title="t", xlabel="x", ylabel="y",
                     size=(640, 400))
    assert path == tmp_path / "deep" / "dir" / "line.png"
    pixels = load(path)
    assert pixels.shape == (400, 640, 3)
    ys, xs = np.nonzero(colour_mask(pixels, MAGENTA))
    assert len(xs) > 300
    # A rising line: its magenta pixels on the left sit lower (larger row) than on the right.
    mid = np.median(xs)
    assert ys[xs < mid].mean() > ys[xs > mid].mean()
    assert colour_mask(pixels, figures.PALETTE[1]).sum() > 300  # second series, default colour
    assert (pixels.reshape(-1, 3) == 255).all(axis=1).mean() > 0.5  # mostly white background


def test_line_plot_without_the_series_has_no_magenta(tmp_path):
    path = line_plot([{"x": [0, 1], "y": [0, 1], "label": "a"}], tmp_path / "l.png")
    assert colour_mask(load(path), MAGENTA).sum() == 0


def test_ylim_clips_and_logy(tmp_path):
    x = np.linspace(0, 1, 50)
    # No label, so no legend swatch in the same colour.
    path = line_plot([{"x": x, "y": 10 ** (4 * x), "color": MAGENTA}],
                     tmp_path / "log.png", logy=True, size=(500, 300))
    ys, xs = np.nonzero(colour_mask(load(path), MAGENTA))
    # On a log axis an exponential is a straight line: rows fall linearly with columns.
    slope, intercept = np.polyfit(xs, ys, 1)
    assert slope < 0 and np.abs(ys - (slope * xs + intercept)).max() < 6
    # With ylim the plot's size is unchanged and nothing is drawn outside the axes.
    path = line_plot([{"x": x, "y": 100 * x, "color": MAGENTA}], tmp_path / "clip.png",
                     ylim=(0, 10), size=(500, 300))
    ys, xs = np.nonzero(colour_mask(load(path), MAGENTA))
    assert len(xs) and xs.max() < 250  # the line leaves the top of the axes early


@pytest.mark.parametrize("series, match", [
    ([], "at least one series"),
    ([{"x": [1, 2, 3], "y": [1, 2]}], "3 x values but 2 y values"),
    ([{"x": [1, 2], "y": [1, float("nan")], "label": "loss"}], r"'loss'.*y.*non-finite.*nan.*index 1"),
    ([{"x": [1, float("inf")], "y": [1, 2]}], r"x.*non-finite"),
    ([{"x": [], "y": []}], "non-empty"),
    ([{"y": [1]}], "needs both"),
    ([{"x": ["a", "b"], "y": [1, 2]}], "must be numbers"),
])
def test_line_plot_bad_input(tmp_path, series, match):
    with pytest.raises(ValueError, match=match):
        line_plot(series, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_line_plot_bad_options(tmp_path):
    good = [{"x": [1, 2], "y": [0, 1]}]
    with pytest.raises(ValueError, match="logy needs positive"):
        line_plot(good, tmp_path / "a.png", logy=True)
    with pytest.raises(ValueError, match="ylim"):
        line_plot(good, tmp_path / "a.png", ylim=(1, 1))
    with pytest.raises(ValueError, match="ylim"):
        line_plot(good, tmp_path / "a.png", ylim=(0, float("nan")))


def test_bar_plot_highlight(tmp_path):
    values = np.linspace(1, 2, 64)
    path = bar_plot(values, tmp_path / "bar.png", title="freq", highlight=[0, 1, 2],
                    size=(700, 300), legend=("other", "codebook"))
    pixels = load(path)
    assert pixels.shape == (300, 700, 3)
    hi = colour_mask(pixels, figures.HIGHLIGHT)
    lo = colour_mask(pixels, figures.PALETTE[0])
    assert hi.sum() > 200 and lo.sum() > 10 * hi.sum() / 3
    # Highlighted bars are the first three: left of every plain bar, bar for bar
    # (the legend swatch aside, which is small).
    hi_cols = np.nonzero(hi.sum(axis=0) > 20)[0]
    lo_cols = np.nonzero(lo.sum(axis=0) > 20)[0]
    assert hi_cols.max() < lo_cols.min()
    # A boolean mask means the same as the index set.
    mask = np.zeros(64, bool)
    mask[:3] = True
    again = bar_plot(values, tmp_path / "bar2.png", title="freq", highlight=mask,
                     size=(700, 300), legend=("other", "codebook"))
    assert np.array_equal(load(again), pixels)
    plain = bar_plot(values, tmp_path / "bar3.png", size=(700, 300))
    assert colour_mask(load(plain), figures.HIGHLIGHT).sum() == 0


def test_bar_plot_512_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = bar_plot(rng.random(512), tmp_path / "k.png", labels=[f"{i:09b}" for i in range(512)],
                    highlight=rng.random(512) < 0.1)
    assert load(path).shape == (400, 1000, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(values=[]), "non-empty"),
    (dict(values=[1, float("nan")]), "non-finite"),
    (dict(values=[[1, 2]]), "1-D"),
    (dict(values=[1, 2], highlight=np.array([True])), r"shape \(1,\), expected \(2,\)"),
    (dict(values=[1, 2], highlight=[5]), r"indices.*\[0, 2\)"),
    (dict(values=[1, 2], highlight=[0.5]), "integers"),
    (dict(values=[1, 2], labels=["a"]), "1 labels for 2 bars"),
])
def test_bar_plot_bad_input(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bar_plot(path=tmp_path / "b.png", **kwargs)


def test_scatter_plot(tmp_path):
    points = [{"x": 1.0, "y": 84.0, "label": "BNN", "color": MAGENTA},
              {"x": 0.67, "y": 82.5, "label": "SNN tau=6"},
              {"x": 0.44, "y": 80.0, "label": "SNN tau=4"}]
    path = scatter_plot(points, tmp_path / "s.png", title="acc", xlabel="bits", ylabel="acc")
    pixels = load(path)
    assert pixels.shape == (500, 800, 3)
    ys, xs = np.nonzero(colour_mask(pixels, MAGENTA))
    assert 20 < len(xs) < 400  # one marker, not a line
    assert xs.min() > 400 and ys.max() < 250  # the top-right point
    # Labels are text: dark pixels just beside the marker.
    near = pixels[max(ys.min() - 30, 0):ys.max() + 30, max(xs.min() - 120, 0):xs.max() + 120]
    assert (near.sum(axis=-1) < 300).sum() > 30


@pytest.mark.parametrize("points, match", [
    ([], "at least one point"),
    ([{"x": 1.0, "label": "a"}], "no 'y'"),
    ([{"x": float("nan"), "y": 1.0, "label": "a"}], r"'a'.*x = nan"),
    ([{"x": "one", "y": 1.0}], "must be a number"),
])
def test_scatter_plot_bad_input(tmp_path, points, match):
    with pytest.raises(ValueError, match=match):
        scatter_plot(points, tmp_path / "s.png")


def test_grid_tiles_images_and_paths(tmp_path):
    red = Image.new("RGB", (100, 80), "red")
    blue_path = tmp_path / "blue.png"
    Image.new("RGB", (60, 40), "blue").save(blue_path)
    path = grid([red, blue_path, red], tmp_path / "g.png", ncols=2)
    pixels = load(path)
    assert pixels.shape == (160, 200, 3)
    assert tuple(pixels[40, 50]) == (255, 0, 0)  # cell (0, 0)
    assert tuple(pixels[40, 150]) == (0, 0, 255)  # cell (0, 1), centred in its cell
    assert tuple(pixels[5, 105]) == (255, 255, 255)  # the smaller panel's white border
    assert tuple(pixels[120, 50]) == (255, 0, 0)  # cell (1, 0)
    assert tuple(pixels[120, 150]) == (255, 255, 255)  # empty cell


def test_grid_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one image"):
        grid([], tmp_path / "g.png", 2)
    with pytest.raises(ValueError, match="ncols"):
        grid([Image.new("RGB", (4, 4))], tmp_path / "g.png", 0)
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="junk.png"):
        grid([tmp_path / "junk.png"], tmp_path / "g.png", 1)


def test_training_curves(tmp_path):
    epochs = list(range(1, 11))
    metrics = {"epoch": epochs, "train_loss": [2.0 / e for e in epochs],
               "train_acc": [0.5 + 0.04 * e for e in epochs], "test_acc": [0.45 + 0.04 * e for e in epochs]}
    two = Image.open(training_curves(metrics, tmp_path / "tc.png")).size
    three = Image.open(training_curves({**metrics, "lr": [0.1] * 10}, tmp_path / "tc_lr.png")).size
    assert two[1] == three[1] and 2 * three[0] == 3 * two[0]  # one more equal panel for lr
    pixels = load(tmp_path / "tc.png")
    for colour in figures.PALETTE[:2]:  # train and test lines
        assert colour_mask(pixels, colour).sum() > 200
    with pytest.raises(ValueError, match="'test_acc'"):
        training_curves({k: v for k, v in metrics.items() if k != "test_acc"}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="10 x values but 9 y values"):
        training_curves({**metrics, "train_loss": metrics["train_loss"][:9]}, tmp_path / "x.png")


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6))
def test_linear_ticks_are_round_and_cover_the_data(lo, span):
    assume(span > 1e-6 * abs(lo))  # narrower ranges are below float64 resolution for ticks
    hi = lo + span
    axis = figures._linear_axis(lo, hi)
    ticks = np.array(axis.ticks)
    slack = 1e-6 * span  # float noise is not worth a whole extra tick
    assert axis.lo <= lo + slack and axis.hi >= hi - slack
    assert 2 <= len(ticks) <= 11
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0], rtol=1e-3)  # ticks far from 0 carry rounding noise
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]) + 1e-9)
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-3
    assert len(set(axis.labels)) == len(axis.labels)  # enough decimals to tell ticks apart


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-8, 1e8), st.floats(1.0, 1e6))
def test_log_ticks_are_powers_of_ten_covering_the_data(lo, ratio):
    hi = lo * ratio
    axis = figures._log_axis(lo, hi)
    assert axis.lo <= lo * (1 + 1e-9) and axis.hi >= hi * (1 - 1e-9)
    exps = np.log10(axis.ticks)
    assert len(exps) >= 2 and np.allclose(exps, np.round(exps))


def test_log_axis_inside_one_decade_still_has_labels():
    axis = figures._log_axis(2.0, 5.0, fixed=True)
    assert axis.labels == ["2", "3", "4", "5"]
    axis = figures._log_axis(0.5, 3.0, fixed=True)
    assert axis.labels == ["0.5", "0.6", "0.7", "0.8", "0.9", "1", "2", "3"]


def test_a_failed_write_keeps_the_old_figure_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "curve.png"
    series = [{"x": [1, 2, 3], "y": [1.0, 2.0, 1.5], "label": "a"}]
    line_plot(series, path)
    before = path.read_bytes()

    def full_disk(self, fp, format=None, **params):
        fp.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        line_plot(series, path, title="another")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"]
