"""End-to-end: `ff sweep` on a tiny synthetic market (2 grid points x 2 seeds + the LightGBM peer, CPU, one process per run).

- a sweep finishes every run, the peer's and one seed ensemble per point, and indexes them all in sweep.json; run again,
  it runs nothing;
- stopped (SIGTERM) during a run, it stops the run with a checkpoint and exits 143; killed (SIGKILL of the `ff sweep`
  process group) at a random moment during a run, its runs die with it; a second sweep on the directory meanwhile is
  refused by name; started again (`--parallel 2`), it resumes and ends with predictions bitwise equal to the
  uninterrupted sweep's;
- a spec with an unknown key is one line naming the spec and the key, and nothing is written.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from support import write_tiny

FF = str(Path(sys.executable).parent / "ff")

SWEEP_RUN = """\
trainer: {epochs: 2, checkpoint_every_steps: 2}
run: {nproc_per_node: 1, log_level: WARNING}
"""

SPEC = """\
name: {name}
base: tiny.yaml
grid: {{model.name: [tcn_attention, linear]}}   # p00, the run SIGTERM stops mid-training, the slower one
seeds: [0, 1]
peers: [lightgbm]
report: false
"""

RUNS = ["p00_s0", "p00_s1", "p01_s0", "p01_s1", "lightgbm_s0", "lightgbm_s1", "p00_ensemble", "p01_ensemble"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def sweep(cwd, *args, timeout=600):
    return subprocess.run([FF, "sweep", *args, "--root", "sweeps", "--quiet"], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=ENV)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    write_tiny(d, extra=SWEEP_RUN)
    (d / "ref.yaml").write_text(SPEC.format(name="ref"))
    res = sweep(d, "ref.yaml")
    assert res.returncode == 0, res.stderr[-4000:]
    return d, res


def test_sweep_finishes_and_is_indexed(reference):
    d, res = reference
    sweep_dir = d / "sweeps" / "ref"
    summary, *picks = res.stdout.strip().splitlines()
    assert summary == f"sweep ref: 8 finished, 0 failed, 0 waiting -> {sweep_dir / 'sweep.json'}", res.stdout
    targets = yaml.safe_load((sweep_dir / "p00_s0" / "config.yaml").read_text())["data"]["targets"]
    assert [p.split(": ")[0] for p in picks] == [f"validation pick {t}" for t in targets], res.stdout    # the winner on validation
    assert all(p.split(": ")[1] in ("p00 (model.name=tcn_attention)", "p01 (model.name=linear)") and p.endswith(" over 2 seeds")
               for p in picks), res.stdout
    index = json.loads((sweep_dir / "sweep.json").read_text())
    assert index["configs_tried"] == 2 and [p["label"] for p in index["points"]] == ["model.name=tcn_attention", "model.name=linear"]
    assert [(r["dir"], r["kind"], r["point"], r["seed"], r["status"]) for r in index["runs"]] == [
        ("p00_s0", "model", "p00", 0, "finished"), ("p00_s1", "model", "p00", 1, "finished"),
        ("p01_s0", "model", "p01", 0, "finished"), ("p01_s1", "model", "p01", 1, "finished"),
        ("lightgbm_s0", "peer", "lightgbm", 0, "finished"), ("lightgbm_s1", "peer", "lightgbm", 1, "finished"),
        ("p00_ensemble", "ensemble", "p00", None, "finished"), ("p01_ensemble", "ensemble", "p01", None, "finished")]
    for run in RUNS:
        assert (sweep_dir / run / "predictions.parquet").exists()
    cfg = (sweep_dir / "p01_s1" / "config.yaml").read_text()
    assert "name: linear" in cfg and "seed: 1" in cfg and f"root: {sweep_dir}" in cfg
    p0, p1 = (pd.read_parquet(sweep_dir / f"p00_s{s}" / "predictions.parquet") for s in (0, 1))
    assert not p0.pred_nextT1d.equals(p1.pred_nextT1d)                 # the seeds differ
    before = {run: (sweep_dir / run / "predictions.parquet").stat().st_mtime_ns for run in RUNS}
    again = sweep(d, "ref.yaml")                                        # finished: nothing runs again
    assert again.returncode == 0 and "8 finished" in again.stdout, again.stderr[-2000:]
    assert before == {run: (sweep_dir / run / "predictions.parquet").stat().st_mtime_ns for run in RUNS}


def _trained(run_dir, since: float):
    "Whether `run_dir` logged a training step after `since` (a run stopped before keeps its earlier steps' records)."
    try: return any(r["kind"] == "train" and r["time"] > since for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()))
    except (OSError, ValueError): return False


def _finished(run_dir):
    try: return json.loads((run_dir / "heartbeat.json").read_text())["status"] == "finished"
    except (OSError, ValueError): return False


def _start(d, name, victim):
    "Start `ff sweep NAME.yaml` in its own process group; return once `victim` has logged a training step."
    t0 = time.time()
    p = subprocess.Popen([FF, "sweep", f"{name}.yaml", "--root", "sweeps", "--quiet"], cwd=d, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    while not _trained(d / "sweeps" / name / victim, t0):
        assert p.poll() is None and time.time() - t0 < 300, f"{victim} never started training: " + p.stderr.read()[-2000:]
        time.sleep(0.1)
    return p


def test_stopped_and_killed_sweep_resumes_to_the_same_predictions(reference):
    """SIGTERM while p00_s0 trains: the run stops with a checkpoint, the sweep exits 143 and marks it pending. Started
    again and SIGKILLed (process group) while a random run trains: its runs die with it. Started again with
    --parallel 2: it finishes, skips what was finished, and every run's predictions equal the uninterrupted sweep's."""
    d, _ = reference
    (d / "kill.yaml").write_text(SPEC.format(name="kill"))
    sweep_dir = d / "sweeps" / "kill"
    p = _start(d, "kill", "p00_s0")
    tree = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and err == (f"ff: sweep kill stopped by SIGTERM (1 running run(s) told to stop); run it again to "
                                           f"resume -> {sweep_dir / 'sweep.json'}\n"), err[-3000:]
    assert not psutil.wait_procs(tree, timeout=60)[1]
    assert json.loads((sweep_dir / "p00_s0" / "heartbeat.json").read_text())["status"] == "stopped"
    assert {r["status"] for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]} == {"pending"}

    victim = random.choice(RUNS[:3])                      # killed while this run trains
    p = _start(d, "kill", victim)
    busy = sweep(d, "kill.yaml")                          # a second sweep on the directory: refused by name
    assert busy.returncode == 2 and busy.stderr.startswith(f"ff: error: {sweep_dir} is in use by another sweep (pid {p.pid} on host "), busy.stderr
    time.sleep(random.uniform(0, 1.5))
    tree = psutil.Process(p.pid).children(recursive=True)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not psutil.wait_procs(tree, timeout=90)[1]     # the runs die with the sweep
    assert not (sweep_dir / "p01_ensemble" / "ensemble.json").exists()
    done = {run: (sweep_dir / run / "predictions.parquet").stat().st_mtime_ns for run in RUNS[:4] if _finished(sweep_dir / run)}
    assert len(done) < 4

    res = sweep(d, "kill.yaml", "--parallel", "2")
    assert res.returncode == 0, res.stderr[-4000:] + res.stdout
    assert "8 finished, 0 failed" in res.stdout
    assert done == {run: (sweep_dir / run / "predictions.parquet").stat().st_mtime_ns for run in done}   # skipped, not rerun
    events = (sweep_dir / "p00_s0" / "metrics.jsonl").read_text()   # resumed mid-fold, or after a fold the stop let finish
    assert "resumed at epoch" in events or '"message": "keeping fold' in events, events[-3000:]
    for run in RUNS:
        got = pd.read_parquet(sweep_dir / run / "predictions.parquet")
        ref = pd.read_parquet(d / "sweeps" / "ref" / run / "predictions.parquet")
        pd.testing.assert_frame_equal(got, ref, check_exact=True)


def test_unknown_key_is_one_line_and_writes_nothing(tmp_path):
    write_tiny(tmp_path, extra=SWEEP_RUN)
    (tmp_path / "bad.yaml").write_text(SPEC.format(name="bad").replace("model.name", "model.nmae"))
    res = sweep(tmp_path, "bad.yaml")
    assert res.returncode == 2, res.stderr
    assert res.stderr == ("ff: error: bad.yaml: grid point p00 (model.nmae=tcn_attention), seed 0: unknown key `model.nmae` in "
                          "override `model.nmae=tcn_attention`; did you mean `model.name`?\n")
    (tmp_path / "bad.yaml").write_text(SPEC.format(name="bad") + "seed: [1]\n")
    res = sweep(tmp_path, "bad.yaml")
    assert res.returncode == 2 and res.stderr == "ff: error: bad.yaml: unknown key `seed`; did you mean `seeds`?\n"
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "data").exists()
