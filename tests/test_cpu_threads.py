"""How PyTorch's CPU threads wait: PyTorch's defaults on idle cores, one sleeping thread per free
core beside busy processes, and the user's own values always kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from segtrain.runtime.cpu_threads import choose_before_torch_loads, decide

CLEAN = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}


def test_idle_cores_keep_pytorch_defaults():
    assert decide({}, cores=2, busy=0.1).env == {}
    assert decide({}, cores=2, busy=None).env == {}


def test_busy_cores_get_one_sleeping_thread_per_free_core():
    assert decide({}, cores=2, busy=1.0).env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    assert decide({}, cores=8, busy=2.6).env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "5"}
    assert decide({}, cores=2, busy=7.0).env["OMP_NUM_THREADS"] == "1"  # never fewer than one


def test_a_value_the_user_set_wins():
    assert decide({"OMP_WAIT_POLICY": "ACTIVE"}, cores=2, busy=1.0).env == {"OMP_NUM_THREADS": "1"}
    assert decide({"OMP_NUM_THREADS": "2"}, cores=2, busy=1.0).env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"GOMP_SPINCOUNT": "1000", "OMP_NUM_THREADS": "2"}
    choice = choose_before_torch_loads(env)
    assert choice.env == {} and env == {"GOMP_SPINCOUNT": "1000", "OMP_NUM_THREADS": "2"}


def test_importing_segtrain_beside_a_busy_process_sets_passive_waits_before_torch_loads():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        code = ("import segtrain, os, torch; print(os.environ.get('OMP_WAIT_POLICY'), "
                "os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())")
        out = subprocess.run([sys.executable, "-c", code], env=CLEAN, capture_output=True, text=True, timeout=120)
    finally:
        spinner.kill()
        spinner.wait()
    policy, threads, torch_threads = out.stdout.split()
    cores = len(os.sched_getaffinity(0))
    assert policy == "PASSIVE"
    assert int(threads) == int(torch_threads) <= max(1, cores - 1)
