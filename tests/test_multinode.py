"""End-to-end: multi-node training is torchrun's c10d rendezvous. Two "nodes" (two separate launches, 1 process each)
on 127.0.0.1 must finish with exactly the predictions of 1 node x 2 processes (CPU, gloo, same seed).

The nodes are started the way `ff train`/`ff run` start them (`launch.run_job`): node 0's launcher holds the run
directory's lock for the job, node 1's does not. c10d ranks the nodes by (host, agent pid), so starting node 1 first
puts global rank 0, the writer, on node 1: it must recognise node 0's lock as its own job's instead of refusing."""
import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import psutil

from factor_forecasting.launch import torchrun_command
from factor_forecasting.synthetic import write_synthetic

TINY = ["trainer.epochs=1", "model.hidden=8", "model.layers=1", "model.heads=1", "data.seq_len=4",
        "rolling.train_days=16", "rolling.valid_days=3", "rolling.test_days=3", "rolling.embargo_days=1",
        "rolling.max_folds=1", "trainer.batch_size=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(cmds, cwd, timeout=240):
    # torchrun sets OMP_NUM_THREADS=1 only when it starts several processes per node: pin it for every layout, or
    # intra-op threading alone changes float summation order between the two runs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


LAUNCH = ("import sys; from factor_forecasting.launch import prepare_launch, run_job; "
          "sys.exit(run_job(prepare_launch('cpu_demo', sys.argv[3:], nproc_per_node=1, nnodes=2, node_rank=int(sys.argv[1]), "
          "rdzv_endpoint=sys.argv[2])))")


def test_two_nodes_match_one_node(tmp_path):
    data = write_synthetic(tmp_path / "data", stocks=30, days=26, features=10, snapshots=2)
    common = [f"data.path={data}", f"run.root={tmp_path / 'runs'}", *TINY]
    run_all([torchrun_command("cpu_demo", [*common, "run.name=one_node"], nproc_per_node=2)], tmp_path)
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for r in (1, 0):                                                      # node 1's agent first: it gets global rank 0
        procs.append(subprocess.Popen([sys.executable, "-c", LAUNCH, str(r), endpoint, *common, "run.name=two_nodes"], cwd=tmp_path,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        while not psutil.Process(procs[-1].pid).children(): time.sleep(0.05)          # its torchrun has started
    while any(len(psutil.Process(p.pid).children(recursive=True)) < 2 for p in procs): time.sleep(0.05)   # and its worker
    node1 = {q.pid for q in psutil.Process(procs[0].pid).children(recursive=True)}
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    run_dir = tmp_path / "runs" / "two_nodes"
    assert json.loads((run_dir / "heartbeat.json").read_text())["pid"] in node1            # the writer ran on node 1 ...
    assert json.loads((run_dir / "run.lock").read_text())["pid"] == procs[1].pid          # ... under node 0's job lock
    assert any("2 process(es)" in o for o in outs), outs[0][-2000:]       # one job of world size 2, not two jobs of 1
    keys = ["date", "time", "sid", "split"]
    one = pd.read_parquet(tmp_path / "runs" / "one_node" / "predictions.parquet").sort_values(keys, ignore_index=True)
    two = pd.read_parquet(tmp_path / "runs" / "two_nodes" / "predictions.parquet").sort_values(keys, ignore_index=True)
    assert len(one) > 0 and set(one.split) >= {"test"}
    pd.testing.assert_frame_equal(one, two, check_exact=True)
