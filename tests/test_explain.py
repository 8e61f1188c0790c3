"""End-to-end: `ff explain` (the console script) on a run directory.

The run directory holds what the trainer leaves (config.yaml, predictions.parquet with a fold's test days, the fold's
best weights in checkpoints/fold000.pt; the model here is untrained: this tests the command, the notebook
nbs/64_explain.ipynb tests the answers against the synthetic market's truth). A directory that is not a run, and a
run without per-fold weights, are one line naming the file, exit 2, nothing written.
"""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from factor_forecasting.config_files import load_config, save_config
from factor_forecasting.panel import open_panel
from factor_forecasting.model import build_model
from factor_forecasting.synthetic import write_synthetic

FF = str(Path(sys.executable).parent / "ff")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _ff(*args):
    return subprocess.run([FF, "explain", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)


def test_explain_console(tmp_path):
    data = write_synthetic(tmp_path / "data", stocks=30, days=8, features=10, snapshots=2)
    cfg = load_config(None, [f"data.path={data}", "data.seq_len=4", "model.hidden=8", "model.layers=1", "model.heads=1",
                             f"run.root={tmp_path}", "run.name=r"])
    run = cfg.run_dir
    save_config(cfg, run / "config.yaml")
    days = sorted(int(p.stem) for p in data.glob("*.parquet"))
    pd.DataFrame({"date": days[-3:], "fold": 0, "split": "test"}).to_parquet(run / "predictions.parquet")
    n_features = len(open_panel(cfg.data).columns.features)
    model = build_model(cfg, n_features)

    res = _ff(tmp_path / "nowhere")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"ff: error: {tmp_path / 'nowhere' / 'config.yaml'}: not found (is {tmp_path / 'nowhere'} a run directory?)"], res.stderr
    res = _ff(run)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith(
        f"ff: error: {run / 'checkpoints' / 'fold000.pt'}: not found; this run predates per-fold best weights"), res.stderr
    assert not (run / "attribution.parquet").exists()

    (run / "checkpoints").mkdir()
    torch.save({"model": model.state_dict()}, run / "checkpoints" / "fold000.pt")
    res = _ff(run, "--days", 2, "--rows", 16, "--steps", 4)
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith(f"attribution: 1 fold, permutation importance of {n_features} features on 2 OOS days (")
    assert line.endswith(f"-> {run / 'attribution.parquet'}")
    att = pd.read_parquet(run / "attribution.parquet")
    assert set(att.kind) == {"permutation", "integrated_gradients"} and set(att.fold) == {0}
    assert att[att.kind == "integrated_gradients"].n.eq(16).all() and att[att.kind == "permutation"].n.max() == 2
