"""End-to-end: `ff run` executes the train pipeline (papermill -> torchrun -> trainer -> IC report).

Small on purpose (a tiny synthetic panel, two folds, short epochs): these check the plumbing, not the model.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import psutil

from factor_forecasting.run_lock import lock_job
from factor_forecasting.synthetic import write_synthetic
from support import write_tiny

FF = str(Path(sys.executable).parent / "ff")



def ff(*args, cwd, timeout=300):
    return subprocess.run([FF, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def notebook_errors(path):
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def test_failing_job_says_its_own_error_first(tmp_path):
    "A job that dies inside torchrun on bad input: `ff run` exits 2, its first line is the job's own error, then the notebook."
    write_tiny(tmp_path)
    data = write_synthetic(tmp_path / "data", stocks=40, days=36, features=10, snapshots=2)
    bad = sorted(data.glob("*.parquet"))[-1]        # a feature of strings: the launcher reads names, sids and a sample;
    pd.read_parquet(bad).astype({"3": str}).to_parquet(bad)          # the job's scan of every column finds it
    res = ff("run", "tiny.yaml", "run.name=broken", "--nproc", "2", "data.leak_check=false", cwd=tmp_path)                  # the leak check would read it before the job
    assert res.returncode == 2, res.stderr[-3000:]
    nb_path = tmp_path / "runs" / "broken" / "train.failed.ipynb"       # a failed run never replaces a good train.ipynb
    said = res.stderr[res.stderr.index("ff: error: "):].strip().splitlines()
    assert f"{bad}: column `3` should be a numeric feature, got large_string" in "\n".join(said[:-1]), res.stderr[-3000:]
    assert said[-1] == f"(the train pipeline failed with JobFailed; the executed notebook shows it: {nb_path})", said
    errors = notebook_errors(nb_path)
    assert [e["ename"] for e in errors] == ["JobFailed"]
    assert "(the job exited with status 2: " in errors[0]["evalue"] and f"{bad}: column `3` should be a numeric feature" in errors[0]["evalue"]
    log = "".join(o.get("text", "") for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert not any(s in log for s in ("ChildFailedError", "Traceback", "[rank")), log[-3000:]   # one line, not a dump
    assert not (tmp_path / "runs" / "broken" / "ic_report.html").exists()
    assert not (tmp_path / "runs" / "broken" / "train.ipynb").exists()


def test_checks_before_anything_starts(tmp_path):
    "Too few days for one fold, and a run directory another job holds: refused in the launcher, nothing written."
    write_tiny(tmp_path)
    res = ff("run", "tiny.yaml", "run.name=short", "data.synth.days=26", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("ff: error: 26 trading days are too few for one fold"), res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
    with lock_job(tmp_path / "runs" / "busy", "ff train tiny.yaml run.name=busy"):
        res = ff("run", "tiny.yaml", "run.name=busy", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"ff: error: {tmp_path / 'runs' / 'busy'} is in use by another job (pid {os.getpid()} on host "), res.stderr
    assert not (tmp_path / "runs" / "busy" / "train.ipynb").exists()


def test_killed_ff_run_takes_its_job_down_and_demo_resumes(tmp_path):
    """SIGKILL of `ff run` mid-training: its kernel, torchrun and workers all end (the workers after saving a checkpoint).
    Then `ff demo` on the same run: data kept, the run resumed, 2-process torchrun, report rendered, headline printed."""
    write_tiny(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    t0 = time.time()
    p = subprocess.Popen([FF, "run", "tiny.yaml", "run.name=tiny"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    while not any(json.loads(l)["kind"] == "train" for l in _lines(run_dir / "metrics.jsonl")):
        assert p.poll() is None and time.time() - t0 < 240, "the job never reached a training step"
        time.sleep(0.1)
    tree = psutil.Process(p.pid).children(recursive=True)
    assert any("ipykernel" in " ".join(q.cmdline()) for q in tree) and len(tree) >= 4, tree   # kernel, torchrun, 2 workers
    p.kill(); p.wait()
    gone, alive = psutil.wait_procs(tree, timeout=60)
    assert not alive, alive
    assert json.loads((run_dir / "heartbeat.json").read_text())["status"] == "stopped"

    res = ff("demo", "tiny.yaml", "run.name=tiny", "--seeds", "0", cwd=tmp_path)   # one seed: the run itself
    assert res.returncode == 0, res.stderr[-4000:]
    assert (tmp_path / "data" / "meta.json").exists()                     # generated by the first job's trainer
    events = (run_dir / "metrics.jsonl").read_text()       # resumed mid-fold, or (stop noted in a fold's predictions) after it
    assert "resumed at epoch" in events or '"message": "keeping fold' in events, events[-3000:]
    assert f"IC report: {run_dir / 'ic_report.html'}" in res.stdout
    head = res.stdout.split("out-of-sample RankIC per target")[1]
    assert "oracle RankIC" in head and all(t in head for t in ("intra30m", "nextT1d", "ema1d")), res.stdout[-2000:]
    assert "(oracle: oracle on the same OOS rows)" in head
    for nb in ("train.ipynb", "ic_report.ipynb"):
        assert notebook_errors(run_dir / nb) == []
    text = "".join(o.get("text", "") for c in nbformat.read(run_dir / "train.ipynb", as_version=4).cells
                   if c.cell_type == "code" for o in c.get("outputs", []))
    assert "--nproc_per_node=2" in text and "finished:" in text            # the job's own log streamed into the notebook
    assert (run_dir / "ic_report.html").stat().st_size > 10_000
    mon = ff("monitor", str(run_dir), "--once", cwd=tmp_path)
    assert mon.returncode == 0 and "FINISHED" in mon.stdout, mon.stdout + mon.stderr


def _lines(path):
    try: return path.read_text().splitlines()
    except FileNotFoundError: return []


def test_sigterm_to_ff_run_stops_the_job_and_says_so(tmp_path):
    """SIGTERM to `ff run`: forwarded to the job, which stops with a checkpoint; `ff` waits for it, says `stopped`,
    exits 143, and leaves no process, no kernel directory and no train.ipynb from the stopped attempt."""
    write_tiny(tmp_path)
    (tmp_path / "tmp").mkdir()
    run_dir = tmp_path / "runs" / "term"
    t0 = time.time()
    p = subprocess.Popen([FF, "run", "tiny.yaml", "run.name=term"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    while not any(json.loads(l)["kind"] == "train" for l in _lines(run_dir / "metrics.jsonl")):
        assert p.poll() is None and time.time() - t0 < 240, "the job never reached a training step"
        time.sleep(0.1)
    tree = psutil.Process(p.pid).children(recursive=True)
    p.terminate()
    out, err = p.communicate(timeout=180)
    assert p.returncode == 143, err[-3000:]
    assert "ff: stopped by SIGTERM at fold" in err and "checkpoint saved" in err, err[-3000:]
    gone, alive = psutil.wait_procs(tree, timeout=5)                     # nothing outlives `ff`
    assert not alive, alive
    assert json.loads((run_dir / "heartbeat.json").read_text())["status"] == "stopped"
    assert list((tmp_path / "tmp").glob("ff-kernel-*")) == []             # the kernel's socket directory is gone
    assert (run_dir / "train.failed.ipynb").exists() and not (run_dir / "train.ipynb").exists()
