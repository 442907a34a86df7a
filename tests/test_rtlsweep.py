"""rtl/results.json: rows, headline and co-simulation checks agree with the code that made them."""

import json
import os

import pytest

from minisnn import rtlmodel, rtlsweep

RESULTS = os.path.join(os.path.dirname(__file__), "..", "rtl", "results.json")


@pytest.fixture(scope="module")
def results():
    with open(RESULTS) as f:
        return json.load(f)


def test_rows_have_exactly_the_issue_fields(results):
    assert results["format"] == rtlsweep.RESULTS_FORMAT and results["rows"]
    for row in results["rows"]:
        assert tuple(row) == rtlsweep.ROW_FIELDS, row
        assert row["target"] in ("ice40", "xilinx")
        assert (row["fmax_mhz"] is None) or row["target"] == "ice40"


def test_row_cycles_are_the_cycle_model_at_full_size(results):
    for row in results["rows"]:
        stride = 2 if " s2" in row["layer"] else 1
        assert row["cycles"] == rtlmodel.cycle_model(row["c_in"], row["c_out"], row["height"], row["width"], stride,
                                                     rtlsweep.row_config(row), row["tau"]), row


def test_cosim_cycles_equal_the_cycle_model_at_reduced_size(results):
    shapes = {s.name: s for net in rtlsweep.NETWORKS.values() for s in net}
    keys = ("engine", "layer", "tau", "act_bits", "lanes", "dot9_units", "table")
    checked = {tuple(c[k] for k in keys) for c in results["cosim"]}
    # every iCE40 configuration, and every ResNet-20 and ResNet-18 layer shape, was co-simulated
    assert all(tuple(r[k] for k in keys) in checked for r in results["rows"] if r["target"] == "ice40")
    assert {c["layer"] for c in results["cosim"]} == set(shapes)
    for check in results["cosim"]:
        s = shapes[check["layer"]]
        cfg = rtlsweep.row_config(check)
        assert check["cycles_sim"] == rtlmodel.cycle_model(s.c_in, s.c_out, check["sim_height"], check["sim_width"],
                                                           s.stride, cfg, check["tau"]), check


def test_headline_is_recomputed_from_the_rows(results):
    # every headline number comes from the rows (and the exact cycle model)
    assert rtlsweep.headline(results["rows"]) == results["headline"]
    head = results["headline"]
    measured = {str(r["act_bits"]) for r in results["rows"]}
    for key in ("equal_dot9_speedup_resnet18", "equal_dot9_lanes_per_dot9", "equal_area_speedup_ice40"):
        assert set(head[key]) == {str(t) for t in rtlsweep.TAUS}, key
        assert all(set(head[key][str(t)]) == measured for t in rtlsweep.TAUS), key


def test_headline_moves_with_the_rows(results):
    # a headline that ignores the rows cannot pass the test above
    rows = [dict(r) for r in results["rows"]]
    for r in rows:
        if r["engine"] == "snn" and r["target"] == "xilinx" and r["lanes"] > r["dot9_units"]:
            r["lut"] *= 100
    changed = rtlsweep.headline(rows)
    assert changed["equal_dot9_lanes_per_dot9"] != results["headline"]["equal_dot9_lanes_per_dot9"]
    assert changed["equal_dot9_lanes_per_dot9"]["5"]["1"] == 1  # the only row left unpenalized


def test_grid_records_every_row(results):
    grid = results["grid"]
    for row in results["rows"]:
        table = f"-{row['table']}" if row["table"] else ""
        entry = grid[f"{row['target']} {row['engine']}{table} A{row['act_bits']}"]
        assert entry["layer"] == row["layer"] and [row["lanes"], row["dot9_units"]] in entry["lanes_dot9"]
        assert entry["headline_only"] == (row["act_bits"] in rtlsweep.HEADLINE_ONLY_ACT_BITS)


def test_every_swept_activation_width_has_rows(results):
    assert {r["act_bits"] for r in results["rows"]} == set(rtlsweep.SWEEP_ACT_BITS)
    assert {p.act_bits for p in rtlsweep.sweep_points()} == set(rtlsweep.SWEEP_ACT_BITS)
