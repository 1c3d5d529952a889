"""How PyTorch's CPU threads wait: PyTorch's defaults on idle cores, sleeping threads beside busy
processes (the thread count stays, so a run does not depend on the load), the user's value kept."""

from __future__ import annotations

import os
import subprocess
import sys

from segtrain.runtime.cpu_threads import choose_before_torch_loads, decide, unchosen

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


def test_a_burst_or_a_job_that_just_ended_is_not_busy(monkeypatch):
    """The choice lasts the run: the quietest window of the sample and the 1-minute load average
    must both say busy."""
    from segtrain.runtime import cpu_threads

    cpus = os.cpu_count() or 1

    def readings(busy_per_window: list[float], load: float):
        ticks, busy = [(0, 0)], 0
        for cores in busy_per_window:  # 100 jiffies per CPU per window
            busy += int(cores * 100)
            ticks.append((busy, 100 * cpus * len(ticks)))
        ticks = iter(ticks)
        monkeypatch.setattr(cpu_threads, "_cpu_times", lambda: next(ticks))
        monkeypatch.setattr(cpu_threads, "_load_average", lambda: load)
        return cpu_threads.busy_cores(seconds=0, windows=len(busy_per_window))

    assert readings([1.0, 1.0, 1.0], load=0.1) < cpu_threads.BUSY_THRESHOLD  # a burst the load average missed
    assert readings([0.0, 0.0, 0.0], load=1.5) < cpu_threads.BUSY_THRESHOLD  # a job that just ended
    # ... and, just after it, a short process starting in the sample's first windows
    assert readings([1.0, 0.6, 0.0], load=1.5) < cpu_threads.BUSY_THRESHOLD
    assert readings([1.0, 0.9, 1.1], load=1.2) >= cpu_threads.BUSY_THRESHOLD  # a competitor that stays


def run_python(code: str, cwd) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], env=CLEAN, cwd=cwd, capture_output=True, text=True, timeout=120)
    return out.stdout.split("|")


def test_a_computing_command_applies_its_choice_before_torch_loads(tmp_path):
    """The CLI chooses at a command's start (not at `import segtrain`), before the command loads torch."""
    code = ("import os, sys, segtrain.cli as cli; from segtrain.runtime import cpu_threads; "
            "code = cli.main(['export', '--checkpoint', 'missing.pth.tar', '--format', 'onnx', '--out', 'x.onnx']); "
            "c = cpu_threads.current(); "
            "print(code, 'torch' in sys.modules, all(os.environ.get(k) == v for k, v in c.env.items()), c.why, sep='|')")
    code_, torch_loaded, applied, why = run_python(code, tmp_path)
    assert (code_, torch_loaded, applied) == ("1", "True", "True")  # the export failed in one line, after choosing
    assert why.startswith(("cores idle at start", "load not measurable")) or "cores busy at start" in why, why


def test_commands_that_run_no_model_and_the_import_choose_nothing(tmp_path):
    code = ("import os, sys, segtrain, segtrain.cli as cli; from segtrain.runtime import cpu_threads; "
            "code = cli.main(['plot', 'missing.csv']); "
            "print(code, 'torch' in sys.modules, cpu_threads._made, 'OMP_WAIT_POLICY' in os.environ, sep='|')")
    assert run_python(code, tmp_path) == ["1", "False", "[]", "False\n"]


def test_a_library_user_is_told_what_threads_do():
    assert "segtrain chooses only when a command or segtrain.train starts" in unchosen({}).why
    assert unchosen({"OMP_WAIT_POLICY": "PASSIVE"}).why == "set by you: OMP_WAIT_POLICY=PASSIVE"
