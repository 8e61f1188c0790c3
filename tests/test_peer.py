"""End-to-end: `ff peer lightgbm RUN_DIR` (the console script) next to a real trained run.

A tiny walk-forward run is trained by the trainer (one process); its LightGBM peer must have exactly the run's
prediction rows (date, time, sid, fold, split), the same targets and the same columns and dtypes, render its IC
report, and print its one line. The answers (no leak, learning, determinism, resume) are tested in nbs/20_peer.ipynb.
"""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from factor_forecasting.synthetic import write_synthetic

FF = str(Path(sys.executable).parent / "ff")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

TINY = """
data: {{path: {data}, seq_len: 4}}
model: {{name: linear}}
trainer: {{epochs: 1, batch_size: 4, warmup_steps: 1, device: cpu}}
rolling: {{train_days: 10, valid_days: 3, test_days: 4, embargo_days: 1, max_folds: 2}}
run: {{root: {root}, name: model, log_level: WARNING}}
"""


def test_peer_like_a_trained_run(tmp_path):
    data = write_synthetic(tmp_path / "data", stocks=30, days=24, features=10, snapshots=2, signal=4.0)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(data=data, root=tmp_path))
    res = subprocess.run([sys.executable, "-m", "factor_forecasting.walkforward", "--config", str(config)], capture_output=True,
                         text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "model"

    res = subprocess.run([FF, "peer", "lightgbm", str(run), "--quiet"], capture_output=True, text=True, env=ENV,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    peer = tmp_path / "model_lightgbm"
    assert res.stdout.strip().splitlines()[-1].startswith("lightgbm peer: 2 folds, "), res.stdout
    assert res.stdout.strip().endswith(f"-> {peer}"), res.stdout

    want, got = pd.read_parquet(run / "predictions.parquet"), pd.read_parquet(peer / "predictions.parquet")
    assert list(got.columns) == list(want.columns)
    assert dict(got.dtypes) == dict(want.dtypes)
    keys = ["date", "time", "sid", "fold", "split", "intra30m", "nextT1d", "ema1d"]
    pd.testing.assert_frame_equal(got[keys], want[keys])
    assert got.filter(like="pred_").notna().all().all()
    html = (peer / "ic_report.html").read_text()
    assert "Traceback" not in html and "RankIC" in html
    assert {"config.yaml", "peer.json", "metrics.jsonl"} <= {p.name for p in peer.iterdir()}

    res = subprocess.run([FF, "peer", "lightgbm", str(run), "--out-dir", str(run), "--quiet"], capture_output=True,
                         text=True, env=ENV, timeout=120)
    assert (res.returncode, res.stderr.strip()) == (2, f"ff: error: --out-dir {run} is the run directory itself; the peer needs "
                                                       "its own directory"), res.stderr
