"""The whole walkthrough in --quick mode, end to end, on the shared CIFAR-10 archive."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minisnn.checkpoint import load_checkpoint, write_json

ROOT = Path(__file__).resolve().parents[1]
STEPS = sorted((ROOT / "walkthrough").glob("0*.py"))
PNG = b"\x89PNG\r\n\x1a\n"


def _run(step, out, *extra):
    proc = subprocess.run([sys.executable, str(step), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, f"{step.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    out = tmp_path_factory.mktemp("walkthrough")
    assert [s.name[:3] for s in STEPS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"]
    # step 7 on the rows that make each kind of its runs (the others differ by arguments)
    only = {"07": ["--only", "step1_a1", "snn5_1a_kd"]}
    logs = {step.name[:2]: _run(step, out, *only.get(step.name[:2], [])) for step in STEPS}
    return out, logs


def test_steps_run_on_published_models_alone(walked, tmp_path):
    """publish.py writes inference checkpoints and a manifest; --pretrained runs the
    later steps from them alone, in an empty results folder, with the same figures."""
    out, _ = walked
    shelf = tmp_path / "models"
    names = ["fp", "bnn_32a", "bnn_1a", "snn5_1a", "step1_a1", "bnn_1a_kd", "snn5_1a_kd"]
    proc = subprocess.run([sys.executable, str(ROOT / "walkthrough" / "publish.py"), "--quick",
                           "--out", str(out), "--to", str(shelf), "--only", *names],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((shelf / "manifest.json").read_text())
    assert sorted(manifest) == sorted(names)
    fresh = tmp_path / "fresh"
    table = _run(ROOT / "walkthrough" / "04_compare.py", fresh, "--pretrained", str(shelf))
    assert "minisnn.train" not in table
    rows = {r["name"]: r for r in json.loads((fresh / "results.json").read_text())["rows"]}
    for name in names:
        trained = json.loads((out / "models" / name / "metrics.json").read_text())
        assert rows[name]["test_accuracy"] == round(100 * trained["final_test_acc"], 2) \
            == manifest[name]["test_accuracy"], name
    engine = _run(ROOT / "walkthrough" / "05_integer_engine.py", fresh, "--pretrained", str(shelf))
    assert "pretrained" in engine and "minisnn.train" not in engine
    missing = subprocess.run([sys.executable, str(ROOT / "walkthrough" / "07_two_step_recipe.py"),
                              "--quick", "--out", str(fresh), "--pretrained", str(shelf)],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode != 0 and "snn6_1a_kd" in missing.stderr and "not published" in missing.stderr
    kernels = _run(ROOT / "walkthrough" / "02_kernel_distribution.py", fresh, "--pretrained", str(shelf))
    assert "minisnn.train" not in kernels
    assert (fresh / "02_bnn_1a_kd_kernels.png").read_bytes()[:8] == PNG


def test_the_two_step_recipe_distils_and_starts_step_2_from_step_1(walked):
    out, logs = walked
    teacher = str(out / "models" / "fp" / "checkpoint.npz")
    for name, starts in (("step1_a1", None), ("snn5_1a_kd", "step1_a1")):
        _, config = load_checkpoint(out / "models" / name / "checkpoint.npz")
        assert config["model"]["block"] == "reactnet" and config["train"]["teacher"] == teacher
        assert config["train"]["optimizer"] == "adam" and config["train"]["schedule"] == "linear"
        want = None if starts is None else str(out / "models" / starts / "checkpoint.npz")
        assert config["train"]["weights_from"] == want, name
    assert config["model"]["quant"] == "snn" and config["train"]["weight_decay"] == 0
    # both rows have seed 0: the second read the first one's teacher logits
    assert len(list((out / "teacher-logits").glob("*/epoch-*.npy"))) == 2
    assert (out / "07_recipe_accuracy.png").read_bytes()[:8] == PNG
    assert (out / "07_snn5_1a_kd_kernels.png").read_bytes()[:8] == PNG
    assert "layer3.5.binary_conv" in logs["07"] and "fp: -m minisnn.train" not in logs["07"]


def test_every_model_is_trained_once_and_tabled(walked):
    out, logs = walked
    results = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in results["rows"] if r["recipe"] == "sgd-cosine"]
    assert names == ["fp", "bnn_32a", "snn6_32a", "snn5_32a", "snn4_32a", "snn5_32a_norefine",
                     "snn5_32a_frequent", "bnn_1a", "snn5_1a"]
    assert results["quick"] and "--quick" in results["data"]
    # step 2 trained the two-step recipe's 1W/1A (and its step 1) for its figure; step 4
    # runs before step 7, whose other rows it lists as not trained yet
    assert [r["name"] for r in results["rows"] if r["recipe"] == "reactnet-kd"] == \
        ["step1_a1", "bnn_1a_kd"]
    assert results["not_trained_yet"] == ["snn6_1a_kd", "snn5_1a_kd", "snn4_1a_kd",
                                          "snn5_1a_kd_norefine", "snn5_1a_kd_s1",
                                          "snn5_1a_kd_norefine_s1"]
    assert set(results["recipes"]) == {"sgd-cosine", "reactnet-kd"}
    for name in names:
        metrics = json.loads((out / "models" / name / "metrics.json").read_text())
        assert metrics["epoch"] == [1, 2], name
    # binary and sub-bit rows start from the trained full-precision weights
    for name in names:
        _, config = load_checkpoint(out / "models" / name / "checkpoint.npz")
        want = None if name == "fp" else str(out / "models" / "fp" / "checkpoint.npz")
        assert config["train"]["weights_from"] == want, name
        want = str(out / "models" / "bnn_32a" / "checkpoint.npz") if "frequent" in name else None
        assert config["train"]["init_from"] == want, name
    # refinement ran (quick mode shortens its period): it moved the codebooks' real
    # parameters P off their start, all of one magnitude, which the ablation kept
    for name, moved in (("snn5_32a", True), ("snn5_32a_norefine", False)):
        arrays, _ = load_checkpoint(out / "models" / name / "checkpoint.npz")
        p = [v for k, v in arrays.items() if k.endswith("codebook.weight")]
        assert len(p) == 18 and any(len(np.unique(np.abs(a))) > 1 for a in p) == moved, name
    # steps 5 and 7 needed models that earlier steps had trained: nothing was trained twice
    assert "bnn_1a_kd: reusing" in logs["05"] and "bnn_1a_kd: -m minisnn.train" not in logs["05"]
    assert "minisnn.train" not in logs["07"]


def test_table_rows_are_consistent(walked):
    out, _ = walked
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["fp"]["bits_per_weight"] == 32 and rows["fp"]["dot9_ops"] is None
    # the epochs of the models a row starts from are counted beside its own
    assert rows["fp"]["starts_from"] == {} and rows["fp"]["prior_epochs"] == 0
    assert rows["bnn_1a"]["starts_from"] == {"weights-from": "fp"}
    assert rows["bnn_1a"]["prior_epochs"] == rows["fp"]["epochs"]
    assert rows["snn5_32a_frequent"]["starts_from"] == {"weights-from": "fp", "init-from": "bnn_32a"}
    assert rows["snn5_32a_frequent"]["prior_epochs"] == rows["fp"]["epochs"] + rows["bnn_32a"]["epochs"]
    for name in ("bnn_32a", "bnn_1a"):
        assert rows[name]["bits_per_weight"] == 1 and rows[name]["compression_vs_bnn"] == 1
    for tau in (4, 5, 6):
        r = rows[f"snn{tau}_32a"]
        assert r["bits_per_weight"] == round(tau / 9, 4)
        assert r["size_bytes"] < rows["bnn_32a"]["size_bytes"] < rows["fp"]["size_bytes"]
        assert r["compression_vs_bnn"] == round(rows["bnn_32a"]["size_bytes"] / r["size_bytes"], 3)
    assert rows["snn4_32a"]["size_bytes"] < rows["snn5_32a"]["size_bytes"] < rows["snn6_32a"]["size_bytes"]
    # models of the same tau share one size and Dot9 count
    same = ("size_bytes", "dot9_ops")
    for name in ("snn5_32a_norefine", "snn5_32a_frequent", "snn5_1a"):
        assert all(rows[name][k] == rows["snn5_32a"][k] for k in same), name
    for r in rows.values():
        assert 0 <= r["test_accuracy"] <= 100


def test_earlier_runs_join_the_table_tagged(walked, tmp_path):
    out, _ = walked
    table = json.loads((out / "results.json").read_text())
    # run A: an earlier results folder, now gone, of which only results.json is left
    earlier = tmp_path / "earlier.json"
    kept = ("fp", "bnn_32a", "snn5_32a", "bnn_1a", "snn5_1a")
    earlier.write_text(json.dumps(dict(table, rows=[r for r in table["rows"] if r["name"] in kept])))
    # run B: this folder, holding other models (the same checkpoints, linked)
    later = tmp_path / "later"
    (later / "models").mkdir(parents=True)
    for name in ("fp", "bnn_32a", "snn6_32a", "snn5_32a_norefine"):
        (later / "models" / name).symlink_to(out / "models" / name)
    log = _run(ROOT / "walkthrough" / "04_compare.py", later, "--include", str(earlier))
    merged = json.loads((later / "results.json").read_text())
    assert [(r["name"], r["run"]) for r in merged["rows"]] == [
        ("fp", "A"), ("fp", "B"), ("bnn_32a", "A"), ("bnn_32a", "B"), ("snn6_32a", "B"),
        ("snn5_32a", "A"), ("snn5_32a_norefine", "B"), ("bnn_1a", "A"), ("snn5_1a", "A")]
    assert merged["not_trained_yet"][:2] == ["snn4_32a", "snn5_32a_frequent"]
    assert merged["not_trained_yet"][2:] == ["step1_a1", "bnn_1a_kd", "snn6_1a_kd", "snn5_1a_kd",
                                             "snn4_1a_kd", "snn5_1a_kd_norefine",
                                             "snn5_1a_kd_s1", "snn5_1a_kd_norefine_s1"]
    assert merged["runs"] == [
        {"run": "A", "source": str(earlier), "rows": list(kept)},
        {"run": "B", "source": str(later), "rows": ["fp", "bnn_32a", "snn6_32a", "snn5_32a_norefine"]}]
    checks = {}
    for c in merged["targets"]:
        checks.setdefault(c["target"], []).append(c)
    # checked in every run that has the rows, else across runs, naming each row's run
    assert [c["runs"] for c in checks["1W/32A >= 85%"]] == [{"bnn_32a": "A"}, {"bnn_32a": "B"}]
    assert [c["runs"] for c in checks["tau=6 W/32A within 1.5 of 1W/32A"]] == [
        {"bnn_32a": "B", "snn6_32a": "B"}]
    [refine] = checks["refinement beats no refinement at tau=5"]
    assert refine["runs"] == {"snn5_32a": "A", "snn5_32a_norefine": "B"}
    acc = {(r["name"], r["run"]): r["test_accuracy"] for r in merged["rows"]}
    assert refine["value"] == round(acc["snn5_32a", "A"] - acc["snn5_32a_norefine", "B"], 2)
    assert "| run | model | recipe |" in log and "across runs" in log
    # rows of another recipe do not compare: refused, naming the file
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(table, recipe="--optimizer adam")))
    proc = subprocess.run([sys.executable, str(ROOT / "walkthrough" / "04_compare.py"), "--quick",
                           "--out", str(later), "--include", str(other)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and str(other) in proc.stderr and "recipe" in proc.stderr


SUBBIT = ("snn6_32a", "snn5_32a", "snn4_32a", "snn5_1a", "snn5_32a_norefine", "snn5_32a_frequent")


def test_figures_exist(walked):
    out, _ = walked
    for name in ("01_baselines_accuracy", "02_bnn_32a_kernels", "02_bnn_1a_kd_kernels",
                 "03_subbit_accuracy", *(f"03_{n}_kernels" for n in SUBBIT),
                 "04_accuracy_vs_bits"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG, name
    coverage = json.loads((out / "02_coverage.json").read_text())
    assert set(coverage) == {"bnn_32a", "bnn_1a_kd"}
    for layers in coverage.values():
        for layer in layers.values():
            cov = [layer["coverage"][t] for t in ("4", "5", "6")]
            assert 0 < cov[0] <= cov[1] <= cov[2] <= 1


def test_subbit_layers_use_only_their_codebook_and_reruns_keep_other_records(walked):
    out, _ = walked
    # a rerun of step 3 for one model redraws it and keeps the other models' records
    _run(ROOT / "walkthrough" / "03_train_subbit.py", out, "--only", "snn4_32a")
    coverage = json.loads((out / "03_coverage.json").read_text())
    assert set(coverage) == set(SUBBIT)
    for name, layers in coverage.items():
        tau = int(name[3])
        assert len(layers) == 18, name
        for layer, s in layers.items():
            assert len(s["codebook"]) == 1 << tau and s["distinct"] <= 1 << tau, (name, layer)
            assert s["coverage"][str(tau)] == 1.0, (name, layer)
            # what refinement changed: nothing without it, unknown for 'frequent' codebooks
            if name.endswith("norefine"):
                assert s["codebook_new"] == 0, (name, layer)
            elif name.endswith("frequent"):
                assert s["codebook_new"] is None, (name, layer)
            else:
                assert 0 <= s["codebook_new"] <= 1 << tau, (name, layer)


def test_integer_engine_agrees(walked):
    out, _ = walked
    engine = json.loads((out / "05_integer_engine.json").read_text())
    assert set(engine) == {"bnn_1a_kd", "snn5_1a_kd"}
    for r in engine.values():
        assert r["images"] == 500 and r["differing_predictions"] == r["differing_at_float_ties"]


def test_rtl_equals_python_on_a_real_image(walked):
    out, logs = walked
    hw = json.loads((out / "06_hardware.json").read_text())
    assert hw["tau"] == 5 and (hw["c_in"], hw["c_out"]) == (64, 64)
    for engine in ("snn", "bnn", "dec"):
        r = hw["engines"][engine]
        assert r["equals_golden_model"] and r["equals_float_model"]  # check_layer: cycles too
        assert r["cycles"] > 0 and r["lut"] > 0 and r["dot9_units"] == 4
    assert hw["engines"]["snn"]["lanes"] == 16
    assert hw["engines"]["snn"]["weight_bits"] < hw["engines"]["bnn"]["weight_bits"]
    # equal Dot9 units, four lanes per unit: the sub-bit engine needs fewer cycles at C_out 64
    assert hw["engines"]["snn"]["cycles"] < hw["engines"]["bnn"]["cycles"]
    assert (out / "06_rom" / "manifest.json").is_file()
    assert "snn / bnn" in logs["06"]


def test_a_model_another_process_trains_is_waited_for_not_trained_twice(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "walkthrough"))
    try:
        import common
    finally:
        sys.path.pop(0)
    args = common.parser("test", ("fp",)).parse_args(["--quick", "--out", str(tmp_path)])
    run_dir = common.model_dir(args, "fp")
    run_dir.mkdir(parents=True)
    (run_dir / "train.lock").write_text(str(os.getpid()))  # a live Python process holds it

    def other_driver_finishes():
        time.sleep(1.0)
        # as minisnn.train writes it: atomically, so the waiter never reads half a file
        write_json(run_dir / "metrics.json",
                   {"final_test_acc": 0.5, "epoch": [1, 2], "total_seconds": 60.0})

    threading.Thread(target=other_driver_finishes).start()
    common.train_models(args, ["fp"])
    out = capsys.readouterr().out
    assert f"being trained by process {os.getpid()}" in out and "done elsewhere" in out
    assert not (run_dir / "train.log").exists()  # no child was started


def test_a_shipped_model_stands_in_for_a_missing_dependency(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "walkthrough"))
    try:
        import common
    finally:
        sys.path.pop(0)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    write_json(shelf / "manifest.json", {"fp": {"file": "fp.npz", "seed": 0},
                                         "step1_a1": {"file": "step1_a1.npz", "seed": 0}})
    monkeypatch.setattr(common, "MODELS_DIR", shelf)

    def args(*extra):
        return common.parser("test", tuple(common.MODELS)).parse_args(["--out", str(tmp_path / "out"),
                                                                      *extra])

    full = args()
    # full mode: fp and step 1 come from the shelf; what was asked for is trained
    assert common.to_train(full, ["bnn_32a", "snn5_1a_kd"]) == ["bnn_32a", "snn5_1a_kd"]
    assert common.checkpoint(full, "fp") == shelf / "fp.npz"
    command = common.train_command(full, "snn5_1a_kd")
    assert command[command.index("--weights-from") + 1] == str(shelf / "step1_a1.npz")
    assert command[command.index("--teacher") + 1] == str(shelf / "fp.npz")
    # a model named in --only is trained even when shipped
    assert common.to_train(full, ["step1_a1", "bnn_1a_kd"]) == ["step1_a1", "bnn_1a_kd"]
    # quick mode, another seed, or a finished run of its own in --out: no stand-in
    assert common.to_train(args("--quick"), ["bnn_32a"]) == ["fp", "bnn_32a"]
    assert common.to_train(args("--seed", "1"), ["bnn_32a"]) == ["fp", "bnn_32a"]
    run = common.model_dir(full, "fp")
    run.mkdir(parents=True)
    write_json(run / "metrics.json", {"final_test_acc": 0.5, "epoch": [1], "total_seconds": 1.0})
    assert common.checkpoint(full, "fp") == run / "checkpoint.npz"
    assert common.to_train(full, ["bnn_32a"]) == ["bnn_32a"]
