"""How PyTorch's CPU threads wait: PyTorch's defaults on idle cores, sleeping threads beside busy
processes (the thread count stays, so a run does not depend on the load), the user's value kept."""

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


def test_busy_cores_get_sleeping_threads_and_the_same_thread_count():
    assert decide({}, cores=2, busy=1.0).env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert decide({}, cores=8, busy=7.5).env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_a_value_the_user_set_wins():
    for env in ({"GOMP_SPINCOUNT": "1000"}, {"OMP_WAIT_POLICY": "ACTIVE"}):
        before = dict(env)
        assert choose_before_torch_loads(env).env == {} and env == before


def import_segtrain_beside(spinning: bool) -> list[str]:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if spinning else None
    try:
        time.sleep(0.5)
        code = ("import segtrain, os, torch; print(os.environ.get('OMP_WAIT_POLICY'), "
                "os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())")
        out = subprocess.run([sys.executable, "-c", code], env=CLEAN, capture_output=True, text=True, timeout=120)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    return out.stdout.split()


def test_importing_segtrain_beside_a_busy_process_sets_passive_waits_before_torch_loads():
    policy, threads, torch_threads = import_segtrain_beside(spinning=True)
    assert policy == "PASSIVE" and threads == "None"
    plain = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=CLEAN,
                           capture_output=True, text=True, timeout=120).stdout.strip()
    assert torch_threads == plain  # PyTorch's own count
