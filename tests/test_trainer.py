"""End-to-end: the trainer under torchrun on a tiny synthetic market (CPU, gloo).

- kill test: a 2-process run SIGKILLed (launcher and workers) at 3 random moments during training and restarted
  with the same command ends with a predictions.parquet bitwise equal to an uninterrupted run;
- no leakage: scrambling the targets from fold 0's first test day onwards leaves fold 0's predictions unchanged
  (and does change the fold that trains on them, so the test can fail);
- crash restart: under `torchrun --max_restarts=1`, SIGKILLing one rank mid-training restarts the job, which resumes from
  its checkpoint and ends with the same predictions;
- DDP: 2 processes x 1 micro-batch and 1 process x 2 accumulated micro-batches give the same parameters;
- `ff train` (torchrun through `launch.torchrun_main`): bad input met inside the job is its one line and exit 2; a
  second job in a run directory that a job holds is refused by name; SIGTERM stops the job with a checkpoint (exit 143)
  and the rerun ends with the same predictions; a SIGKILLed `ff train` or torchrun takes its workers down.
"""
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from factor_forecasting.config_files import load_config
from factor_forecasting.run_lock import is_locked
from factor_forecasting.rundir import RunDir
from factor_forecasting.synthetic import write_synthetic

TINY = """
data:
  path: {data}
  synth: {{stocks: 48, days: 34, features: 10, snapshots: 2, seed: 0}}
  seq_len: 6
model: {{name: tcn_attention, hidden: 8, layers: 2, heads: 2, dropout: 0.1}}
trainer: {{epochs: 3, batch_size: 2, lr: 0.003, warmup_steps: 4, patience: 3, log_every_steps: 4,
          checkpoint_every_steps: 2, heartbeat_every_s: 0.5, ic_report_every_s: 1.0}}
rolling: {{train_days: 16, valid_days: 3, test_days: 5, embargo_days: 1, max_folds: 3}}
run: {{root: {root}, seed: 7, log_level: WARNING}}
"""


def torchrun(config, name, nproc=2, max_restarts=0, extra=(), **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max_restarts={max_restarts}", "-m", "factor_forecasting.walkforward", "--config", str(config),
           f"run.name={name}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, **kw)


def finish(p, timeout=300):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("trainer")
    write_synthetic(d / "data", load_config(None, ["data.synth.stocks=48", "data.synth.days=34", "data.synth.features=10",
                                                   "data.synth.snapshots=2"]).data.synth)
    cfg = d / "tiny.yaml"
    cfg.write_text(TINY.format(data=d / "data", root=d / "runs"))
    t0 = time.time()
    finish(torchrun(cfg, "ref"))
    return d, cfg, time.time() - t0


def preds(d, name):
    return pd.read_parquet(d / "runs" / name / "predictions.parquet")


def training_started(run_dir, since, p, timeout=120):
    "Wait until the job launched at `since` has logged a training step of its own."
    t0 = time.time()
    while time.time() - t0 < timeout and p.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            if any('"kind": "train"' in l and json.loads(l)["time"] > since for l in lines): return
        time.sleep(0.05)
    raise AssertionError("the job never reached a training step")


def test_kill_and_resume_is_bitwise_identical(tiny):
    d, cfg, duration = tiny
    run_dir, rng = d / "runs" / "killed", random.Random(0)
    for k in range(3):                           # SIGKILL the whole job (launcher and workers) at 3 random moments
        p = torchrun(cfg, "killed")
        training_started(run_dir, time.time(), p)
        time.sleep(rng.uniform(0.0, 1.5))
        assert p.poll() is None, "the run finished before it could be killed"
        workers = psutil.Process(p.pid).children(recursive=True)    # torchrun puts workers in their own sessions
        for w in workers: w.send_signal(signal.SIGKILL)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        psutil.wait_procs(workers, timeout=30)
    finish(torchrun(cfg, "killed"))                                 # the same command once more, to the end
    events = (d / "runs" / "killed" / "metrics.jsonl").read_text()
    assert events.count('"message": "resuming') == 3 and "resumed at epoch" in events   # restarts resumed mid-fold
    ref, got = preds(d, "ref"), preds(d, "killed")
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    assert (d / "runs" / "killed" / "predictions.parquet").read_bytes() == (d / "runs" / "ref" / "predictions.parquet").read_bytes()


def test_crashed_rank_restarts_and_resumes(tiny):
    d, cfg, _ = tiny
    run_dir = d / "runs" / "crashed"
    p = torchrun(cfg, "crashed", max_restarts=1)
    training_started(run_dir, time.time(), p)
    time.sleep(0.5)
    assert p.poll() is None, "the run finished before a rank could crash"
    rank1 = [w for w in psutil.Process(p.pid).children(recursive=True) if w.environ().get("RANK") == "1"]
    assert len(rank1) == 1, rank1
    rank1[0].send_signal(signal.SIGKILL)                            # one worker dies; torchrun restarts the group
    out = finish(p)
    assert (run_dir / "metrics.jsonl").read_text().count('"message": "resuming') == 1, out[-3000:]
    pd.testing.assert_frame_equal(preds(d, "crashed"), preds(d, "ref"), check_exact=True)


def test_scrambled_future_targets_do_not_change_earlier_predictions(tiny):
    d, cfg, _ = tiny
    ref = preds(d, "ref")
    first_test = ref.loc[(ref.fold == 0) & (ref.split == "test"), "date"].min()
    scrambled = d / "scrambled"
    scrambled.mkdir()
    rng = np.random.default_rng(0)
    for f in sorted((d / "data").glob("*.parquet")):
        df = pd.read_parquet(f)
        if int(f.stem) >= first_test:
            for t in ("intra30m", "nextT1d", "ema1d"): df[t] = rng.permutation(df[t].to_numpy()) * 3
        df.to_parquet(scrambled / f.name, index=False)
    finish(torchrun(cfg, "scrambled", extra=[f"data.path={scrambled}"]))
    got = preds(d, "scrambled")
    pred_cols = ["date", "time", "sid", "fold", "split", "pred_intra30m", "pred_nextT1d", "pred_ema1d"]
    pd.testing.assert_frame_equal(got.loc[got.fold == 0, pred_cols], ref.loc[ref.fold == 0, pred_cols], check_exact=True)
    # fold 2 trains on scrambled days (fold 1 only validates on them), so its predictions must move
    assert not np.array_equal(got.loc[got.fold == 2, "pred_nextT1d"], ref.loc[ref.fold == 2, "pred_nextT1d"])


DDP_SCRIPT = """
import sys, torch
from factor_forecasting.config_files import load_config
from factor_forecasting.runtime import seed_everything
from factor_forecasting.loader import PanelDataset
from factor_forecasting.model import build_model
from factor_forecasting.distributed import exit_now, init_distributed
from factor_forecasting.resolved import resolve
from factor_forecasting.trainer import FoldTrainer
cfg = load_config(sys.argv[1], ["model.dropout=0.0", "trainer.warmup_steps=2", *sys.argv[3:]])
d = init_distributed("cpu")
context = resolve(cfg, d.world).context
full = PanelDataset(cfg, cross_sections_per_batch=2, context=context)
days = full.days[:16]
# the same global batches: the two halves of each step come from the 2-rank split of the days
halves = [list(PanelDataset(cfg, days, rank=r, world_size=2, cross_sections_per_batch=2, context=context)) for r in range(2)]
seed_everything(0)
ds = halves[0]
ft = FoldTrainer(cfg, d, build_model(cfg, len(full.columns.features), len(full.universe)), total_steps=len(halves[0]))
for i in range(len(halves[0])):
    ft.step([halves[d.rank][i]] if d.world == 2 else [halves[0][i], halves[1][i]])
if d.rank == 0: torch.save(ft.model.state_dict(), sys.argv[2])
torch.distributed.destroy_process_group()
exit_now(0)         # as the trainer ends: gloo's threads can crash the interpreter's teardown (see distributed.exit_now)
"""


def test_two_processes_equal_one_process_with_accumulation(tiny, tmp_path):
    d, cfg, _ = tiny
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for n, accum in ((2, 1), (1, 2)):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", str(script),
                        str(cfg), str(tmp_path / f"w{n}.pt"), f"trainer.grad_accum={accum}"], check=True, env=env,
                       capture_output=True, timeout=300)
    a, b = torch.load(tmp_path / "w2.pt", weights_only=True), torch.load(tmp_path / "w1.pt", weights_only=True)
    init = build_init(cfg)
    assert any(not torch.equal(a[k], init[k]) for k in a)     # the parameters moved
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def build_init(cfg):
    from factor_forecasting.runtime import seed_everything
    from factor_forecasting.loader import PanelDataset
    from factor_forecasting.model import build_model
    from factor_forecasting.resolved import resolve
    cfg = load_config(cfg, ["model.dropout=0.0"])
    full = PanelDataset(cfg, cross_sections_per_batch=2, context=resolve(cfg).context)
    seed_everything(0)
    return build_model(cfg, len(full.columns.features), len(full.universe)).state_dict()


FF = str(Path(sys.executable).parent / "ff")


def ff_train(cfg, name, *extra):
    return subprocess.Popen([FF, "train", str(cfg), f"run.name={name}", "--nproc", "2", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True)


def test_bad_input_inside_the_job_is_one_line(tiny):
    "A data error every rank meets inside torchrun: the job's own line, once, exit 2; no tracebacks, no torch report."
    d, cfg, _ = tiny
    broken = d / "broken"
    broken.mkdir()
    days = sorted((d / "data").glob("*.parquet"))
    for p in days: (broken / p.name).write_bytes(p.read_bytes())
    (broken / days[-1].name).write_bytes(b"not a parquet file")          # the launcher reads names only: the job finds it
    p = ff_train(cfg, "broken", f"data.path={broken}")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 2, out
    lines = out.strip().splitlines()
    assert sum(l.startswith("ff: error: ") for l in lines) == 1, out
    assert f"{broken / days[-1].name}: unreadable parquet file" in out, out
    assert not any(s in out for s in ("Traceback", "ChildFailedError", "elastic", "[rank")), out


def test_sigterm_stops_with_a_checkpoint_and_a_second_job_is_refused(tiny):
    """While a job runs, a second one in its run directory is refused by name; SIGTERM (sent twice) stops the first with
    its checkpoint at a step every rank agreed on."""
    d, cfg, _ = tiny
    run_dir, since = d / "runs" / "termed", time.time()
    p = ff_train(cfg, "termed")
    t0 = time.time()                           # the second job runs while the first starts up: on a busy machine the
    while not is_locked(RunDir(run_dir).job_lock):   # first could otherwise finish before the SIGTERM below
        assert p.poll() is None and time.time() - t0 < 120, p.communicate()[0]
        time.sleep(0.05)
    second = subprocess.run([FF, "train", str(cfg), "run.name=termed"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith(f"ff: error: {run_dir} is in use by another job (pid {p.pid} on host "), second.stderr
    assert second.stderr.rstrip().endswith(f"ff train {cfg} run.name=termed --nproc 2); wait for it or use another run.name")
    training_started(run_dir, since, p)
    p.send_signal(signal.SIGTERM)               # twice, as supervisors do: the repeat must not stop a rank on its own
    time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 143, out
    stop = [l for l in out.splitlines() if l.startswith("ff: ")]
    assert len(stop) == 1 and stop[0].startswith("ff: stopped by SIGTERM at fold ") and \
        stop[0].endswith("; checkpoint saved: rerun the same command to resume"), out
    assert "Traceback" not in out, out
    assert json.loads((run_dir / "heartbeat.json").read_text())["status"] == "stopped"
    finish(ff_train(cfg, "termed"))
    pd.testing.assert_frame_equal(preds(d, "termed"), preds(d, "ref"), check_exact=True)


def test_killed_launcher_or_torchrun_takes_the_workers_down(tiny):
    "SIGKILL of `ff train`: its torchrun stops the workers with a checkpoint; SIGKILL of torchrun: the workers end at once."
    d, cfg, _ = tiny
    run_dir = d / "runs" / "orphans"
    p = ff_train(cfg, "orphans")
    training_started(run_dir, time.time() - 1, p)
    tree = psutil.Process(p.pid).children(recursive=True)
    assert len(tree) == 3, tree                                       # torchrun and its 2 workers
    p.kill(); p.wait()
    gone, alive = psutil.wait_procs(tree, timeout=60)
    assert not alive, alive
    hb = json.loads((run_dir / "heartbeat.json").read_text())
    assert hb["status"] == "stopped", (hb, p.stdout.read()[-4000:])     # the job's own output says why not
    p = ff_train(cfg, "orphans")
    training_started(run_dir, time.time(), p)
    tree = psutil.Process(p.pid).children(recursive=True)
    agent = [q for q in tree if "factor_forecasting.launch" in q.cmdline()]
    assert len(agent) == 1, tree
    agent[0].kill()
    t0 = time.time()
    gone, alive = psutil.wait_procs([q for q in tree if q not in agent], timeout=10)
    assert not alive and time.time() - t0 < 10, alive
    assert p.wait(timeout=30) == 137
    finish(ff_train(cfg, "orphans"))
    pd.testing.assert_frame_equal(preds(d, "orphans"), preds(d, "ref"), check_exact=True)
