"""Importing minisnn leaves the process alone; the tools tune it through runtime."""

import json
import os
import subprocess
import sys

PROBE = """
import json, os, sys
before = dict(os.environ)
import minisnn, minisnn.train, minisnn.compile, minisnn.infer
after_import = dict(os.environ)
from minisnn import runtime
applied = runtime.tune_process()
print(json.dumps({"import_changed": before != after_import, "applied": applied,
                  "omp": os.environ.get("OMP_WAIT_POLICY"),
                  "again": runtime.tune_process()}))
"""


def _probe(**env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "MINISNN_NO_TUNING")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_changes_nothing_and_tune_process_applies_once():
    r = _probe()
    assert not r["import_changed"]
    assert {"OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "mallopt"} <= set(r["applied"])
    assert r["omp"] == "passive"
    assert "OMP_WAIT_POLICY" not in r["again"]  # already set: a second call leaves it


def test_users_settings_win_and_the_opt_out_leaves_everything():
    assert _probe(OMP_WAIT_POLICY="active")["omp"] == "active"
    r = _probe(MINISNN_NO_TUNING="1")
    assert r["applied"] == [] and r["omp"] is None


def test_command_line_tools_tune_before_numpy_loads():
    code = ("import runpy, sys, os; sys.argv = ['x', '--help']\n"
            "try:\n    runpy.run_module('minisnn.summary', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TUNED', os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert "TUNED 4" in out


def _thread_counts(**env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS",
                         "NUMBA_NUM_THREADS")}
    full.update(env)
    code = "import json; from minisnn import runtime; print(json.dumps(runtime.thread_counts()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_thread_counts_follow_the_variables_openblas_and_numba_read():
    assert _thread_counts(NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1") == {"numba": 1, "blas": 1}
    assert _thread_counts(OMP_NUM_THREADS="3")["blas"] == 3
    assert _thread_counts(GOTO_NUM_THREADS="2", OMP_NUM_THREADS="3")["blas"] == 2
    cpus = len(os.sched_getaffinity(0))
    assert _thread_counts() == {"numba": cpus, "blas": cpus}
