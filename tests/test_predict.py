"""End-to-end: `ff predict` (the console script) on today's data.

A tiny run is trained (`walkforward.run`, one process); its last day is saved alone without the
targets (what a researcher has on the morning of a trading day). Predicted on top of the run's training data (the
default history) it gets the predictions that day gets inside the full dataset, as CSV; without history every row is
flagged and counted; a bad `--out` suffix or a missing feature is one line naming the file, and nothing is written.
A stopped run is refused unless `--allow-unfinished`; rows of days the weights trained or validated on are flagged
`in_sample` and counted on stderr; a history directory missing a day of the run is one line naming the day.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factor_forecasting.synthetic import write_synthetic

FF = str(Path(sys.executable).parent / "ff")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = """
data: {{path: {data}, seq_len: 4}}
model: {{hidden: 8, layers: 1, heads: 1}}
trainer: {{epochs: 1, batch_size: 4, device: cpu}}
rolling: {{train_days: 16, valid_days: 3, test_days: 3, embargo_days: 1, max_folds: 1}}
run: {{root: {root}, name: tiny, log_level: WARNING}}
"""
KEYS = ["date", "time", "sid", "history", "full_history", "in_sample"]
PREDS = ["pred_intra30m", "pred_nextT1d", "pred_ema1d"]


def ff(*args):
    return subprocess.run([FF, *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    data = write_synthetic(d / "data", stocks=30, days=26, features=10, snapshots=2)
    (d / "tiny.yaml").write_text(TINY.format(data=data, root=d))
    train = "import sys; from factor_forecasting.config_files import load_config; from factor_forecasting.walkforward import run; " \
            "run(load_config(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", train, str(d / "tiny.yaml")], capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-4000:]
    days = sorted(int(p.stem) for p in data.glob("*.parquet"))
    for name, drop in (("today", ["intra30m", "nextT1d", "ema1d"]), ("nofeat", ["3"])):
        (d / name).mkdir()
        pd.read_parquet(data / f"{days[-1]}.parquet").drop(columns=drop).to_parquet(d / name / f"{days[-1]}.parquet", index=False)
    return d, d / "tiny", data, days


def test_today_on_top_of_history_gets_the_full_panels_predictions(tiny):
    d, run_dir, data, days = tiny
    full = ff("predict", run_dir, "--data", data, "--out", d / "full.parquet")
    assert full.returncode == 0, full.stderr
    res = ff("predict", run_dir, "--data", d / "today", "--out", d / "today.csv")
    assert res.returncode == 0, res.stderr
    want = pd.read_parquet(d / "full.parquet").query(f"date == {days[-1]}").reset_index(drop=True)
    got = pd.read_csv(d / "today.csv")
    assert list(got.columns) == KEYS[:3] + PREDS + KEYS[3:]
    assert got[KEYS].to_numpy().tolist() == want[KEYS].to_numpy().tolist()
    np.testing.assert_allclose(got[PREDS].to_numpy(), want[PREDS].to_numpy(), atol=1e-5)
    lacking = int((~want.full_history).sum())
    assert res.stderr == ""                                                  # the last day is out of sample: no line
    assert res.stdout.strip() == (f"predictions with {run_dir / 'checkpoints' / 'fold000.pt'}: {len(want)} rows for 1 day, "
                                  f"4 history days {days[-5]}..{days[-2]}; {lacking} "
                                  f"{'row lacks' if lacking == 1 else 'rows lack'} full history (context 8): flagged in "
                                  f"full_history -> {d / 'today.csv'}")


def test_without_history_every_row_is_flagged_and_counted(tiny):
    d, run_dir, _, _ = tiny
    res = ff("predict", run_dir, "--data", d / "today", "--history", d / "today", "--out", d / "alone.pq")
    assert res.returncode == 0, res.stderr
    got = pd.read_parquet(d / "alone.pq")
    assert not got.full_history.any() and got.history.max() == 2           # the day's own 2 snapshots of an 8-snapshot context
    assert res.stdout.strip() == (f"predictions with {run_dir / 'checkpoints' / 'fold000.pt'}: {len(got)} rows for 1 day, "
                                  f"no history days; {len(got)} rows lack full "
                                  f"history (context 8): flagged in full_history -> {d / 'alone.pq'}")


def test_bad_suffix_is_one_line_before_any_work(tiny):
    d, run_dir, data, _ = tiny
    res = ff("predict", run_dir, "--data", data, "--out", d / "preds.txt")
    assert (res.returncode, res.stderr.strip()) == (
        2, f"ff: error: {d / 'preds.txt'}: the file name's suffix picks the predictions' format: .parquet, .pq or .csv")
    assert not (d / "preds.txt").exists()


def test_missing_feature_is_one_line_naming_the_file_and_column(tiny):
    d, run_dir, _, days = tiny
    res = ff("predict", run_dir, "--data", d / "nofeat", "--out", d / "nofeat.csv")
    assert (res.returncode, res.stderr.strip()) == (2, f"ff: error: {d / 'nofeat' / f'{days[-1]}.parquet'}: column `3` is missing")
    assert not (d / "nofeat.csv").exists()


def test_stopped_run_is_refused_unless_allowed(tiny):
    "A stopped run's best.pt is the fold in progress, half trained: one line, nothing written; --allow-unfinished uses it."
    d, run_dir, data, _ = tiny
    stopped = Path(shutil.copytree(run_dir, d / "stopped"))
    (stopped / "predictions.parquet").unlink(); (stopped / "checkpoints" / "fold000.parquet").unlink()
    (stopped / "heartbeat.json").write_text(json.dumps({"status": "stopped"}))
    res = ff("predict", stopped, "--data", d / "today", "--out", d / "stopped.csv")
    assert (res.returncode, res.stderr.strip()) == (2, f"ff: error: {stopped}: the run is not finished (its heartbeat says stopped): "
        "its checkpoints/best.pt holds the fold in progress, half trained; finish the run (ff train), or pass --allow-unfinished "
        "to predict with those weights anyway")
    assert not (d / "stopped.csv").exists()
    res = ff("predict", stopped, "--data", d / "today", "--out", d / "stopped.csv", "--allow-unfinished")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"predictions with {stopped / 'checkpoints' / 'best.pt'}: ")


def test_in_sample_rows_are_flagged_and_counted(tiny):
    d, run_dir, data, _ = tiny
    res = ff("predict", run_dir, "--data", data, "--out", d / "all.parquet")
    assert res.returncode == 0, res.stderr
    got = pd.read_parquet(d / "all.parquet")
    rec = json.loads((run_dir / "checkpoints" / "fold000.json").read_text())
    seen = sorted(set(rec["train"] + rec["valid"]))
    assert got.in_sample.tolist() == got.date.isin(seen).tolist() and 0 < got.in_sample.sum() < len(got)
    assert res.stderr.strip() == (f"{int(got.in_sample.sum())} of {len(got)} rows ({len(seen)} days, {seen[0]}..{seen[-1]}) are in "
                                  f"sample: fold 0's weights ({run_dir / 'checkpoints' / 'fold000.pt'}) trained or validated on "
                                  "those days, so their scores are not out of sample (flagged in in_sample)")


def test_history_missing_a_day_is_one_line_naming_it(tiny):
    d, run_dir, data, days = tiny
    holey = Path(shutil.copytree(data, d / "holey"))
    (holey / f"{days[-3]}.parquet").unlink()
    res = ff("predict", run_dir, "--data", d / "today", "--history", holey, "--out", d / "holey.csv")
    assert (res.returncode, res.stderr.strip()) == (2, f"ff: error: {holey}: day {days[-3]} is missing, a trading day of the run: "
        f"the context of the forecasts of {days[-1]} reaches over it and would join the days around it; restore its file, or give "
        "--history a directory that holds it")
    assert not (d / "holey.csv").exists()
