"""What the tests share, kept out of the package: fabricated run directories, hand-made day files, the tiny
walk-forward run the end-to-end tests train, and the no-leak checker of the walk-forward folds.

tests/*.py import it by name (pytest puts tests/ on sys.path); a notebook in nbs/ puts ../tests on sys.path first.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from factor_forecasting.config import TARGETS
from factor_forecasting.config_files import load_config, save_config
from factor_forecasting.atomic import atomic_target

TINY_RUN = """\
base: cpu_demo
data:
  path: data
  seq_len: 4
  synth: {stocks: 40, days: 36, features: 10, snapshots: 2, generate: true}
model: {hidden: 8, layers: 1, heads: 1}
trainer: {epochs: 3, batch_size: 4, log_every_steps: 2, heartbeat_every_s: 0.5}
rolling: {train_days: 20, valid_days: 4, test_days: 4, embargo_days: 1, max_folds: 2}
run: {root: runs}
"""


def write_tiny(directory, name="tiny.yaml", extra=""):
    "Write the tiny run's YAML (as `run.yaml`) into `directory`, and `name` on top of it with `extra` YAML; returns its path."
    (directory / "run.yaml").write_text(TINY_RUN)
    path = directory / name
    path.write_text("base: run.yaml\n" + extra)
    return path


def write_example_run(run_dir, days: int = 30, stocks: int = 60, snapshots: int = 2, seed: int = 0,
                      oos: bool = True, data=None) -> Path:
    """Write a small fabricated run directory (config, predictions with train/test splits of two folds, metrics.jsonl,
    fold records) holding a known signal: two targets, a weight and a price-limit column. Its data.path (`no_data`) is
    empty and its fold records fingerprint an imaginary "example market" (every such run read the same data); with
    `data` (a directory of day files), data.path is that directory, the run's days are its first `days` files and the
    fold records hold their real fingerprints, as the trainer writes them."""
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    targets = ["intra30m", "nextT1d"]
    cfg = load_config(None, [f"run.root={run_dir.parent}", f"run.name={run_dir.name}", f"data.targets=[{', '.join(targets)}]",
                             f"data.path={data or run_dir / 'no_data'}", "backtest.topk=10", "report.min_stocks=10"])
    save_config(cfg, run_dir / "config.yaml")
    dates = (np.array(sorted(int(f.stem) for f in Path(data).glob("[0-9]*.parquet"))[:days], np.int32) if data is not None
             else pd.bdate_range("2021-01-04", periods=days).strftime("%Y%m%d").astype(np.int32))
    days = len(dates)
    half = days // 2
    folds = [(0, dates[:half - 5], dates[half - 5:half]), (1, dates[:days - 5], dates[days - 5:])] if oos else \
            [(0, dates, dates[:0])]
    signal = rng.standard_normal(stocks)                         # a persistent stock effect: turnover below 1
    parts = []
    for fold, train, test in folds:
        for split, ds, noise in (("train", train, 1.0), ("test", test, 3.0)):
            for d in ds:
                for s in range(snapshots):
                    alpha = 0.7 * signal + rng.standard_normal(stocks)
                    y = np.stack([alpha + 2 * rng.standard_normal(stocks), alpha + 3 * rng.standard_normal(stocks)], 1) * 1e-3
                    p = alpha[:, None] + noise * rng.standard_normal((stocks, 2))
                    parts.append(pd.DataFrame({"date": d, "time": np.int32(100000 + 3000 * s), "sid": np.arange(stocks),
                                               "fold": fold, "split": split, "intra30m": y[:, 0], "nextT1d": y[:, 1],
                                               "pred_intra30m": p[:, 0], "pred_nextT1d": p[:, 1],
                                               "luld": (rng.random(stocks) < 0.02).astype(np.int8),
                                               "ADV50": rng.lognormal(10, 1, stocks)}))
    preds = pd.concat(parts, ignore_index=True)
    preds.loc[rng.random(len(preds)) < 0.03, "nextT1d"] = np.nan
    with atomic_target(run_dir / "predictions.parquet") as tmp: preds.to_parquet(tmp, index=False)
    lines, step = [], 0
    for fold, _, _ in folds:
        for epoch in range(3):
            for _ in range(5):
                step += 1
                lines.append({"kind": "train", "time": 1.6e9 + step, "fold": fold, "epoch": epoch, "step": step,
                              "loss": 2.0 / (1 + 0.1 * step) + 0.05 * rng.random(), "lr": 1e-3, "samples_per_s": 5000.0})
            lines.append({"kind": "eval", "time": 1.6e9 + step, "fold": fold, "epoch": epoch, "step": step,
                          **{f"valid_rank_ic/{t}": 0.02 * epoch + 0.01 * rng.random() for t in targets},
                          **{f"valid_ic/{t}": 0.02 * epoch for t in targets}, "valid_rank_ic": 0.02 * epoch})
    with atomic_target(run_dir / "metrics.jsonl") as tmp: tmp.write_text("".join(json.dumps(l) + "\n" for l in lines))
    write_fold_records(run_dir, folds, data)
    return run_dir


def label_valid(run_dir, days: int = 3) -> Path:
    """Relabel the last `days` train days of each fold of a fabricated run (`write_example_run`) as that fold's valid
    days (`split == "valid"`), as the trainer's folds have them: a run whose predictions hold validation rows."""
    path = Path(run_dir) / "predictions.parquet"
    preds = pd.read_parquet(path)
    for _, rows in preds[preds.split == "train"].groupby("fold"):
        preds.loc[rows.index[rows.date.isin(np.sort(rows.date.unique())[-days:])], "split"] = "valid"
    with atomic_target(path) as tmp: preds.to_parquet(tmp, index=False)
    return Path(run_dir)


def write_fold_records(run_dir, folds, data=None) -> None:
    """`checkpoints/fold<NNN>.json` of each `(fold, train days, test days)`, as the trainer writes them (the fields a
    comparison reads): the days and every day file's size, mtime_ns and SHA-256, real ones when `data` holds the files."""
    (Path(run_dir) / "checkpoints").mkdir(parents=True, exist_ok=True)
    for fold, train, test in folds:
        files = {}
        for d in [*train, *test]:
            if data is None: files[f"{d}.parquet"] = {"size": 0, "mtime_ns": 0, "sha256": hashlib.sha256(f"example market {d}".encode()).hexdigest()}
            else:
                path = Path(data) / f"{d}.parquet"
                files[path.name] = {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns,
                                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        record = {"fold": fold, "train": [int(d) for d in train], "valid": [], "test": [int(d) for d in test], "files": files}
        (Path(run_dir) / "checkpoints" / f"fold{fold:03d}.json").write_text(json.dumps(record))


def _data_path(run_dir) -> Path:
    return Path(yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["data"]["path"])


def write_group_data(run_dir, size: bool = True) -> Path:
    """Day files for every day of a fabricated run, in its data.path, holding only the keys, a `sector` (sid % 4) and,
    with `size`, a `log_mcap`: what the report joins for its by-group and neutralized figures. Returns the directory."""
    data = _data_path(run_dir)
    data.mkdir(parents=True, exist_ok=True)
    keys = pd.read_parquet(Path(run_dir) / "predictions.parquet", columns=["date", "time", "sid"]).drop_duplicates()
    for day, rows in keys.groupby("date"):
        rows = rows.assign(sector=(rows.sid % 4).astype(np.int16))
        if size: rows = rows.assign(log_mcap=18 + rows.sid / 10.0)
        rows.to_parquet(data / f"{day}.parquet", index=False)
    return data


def write_oracle(run_dir, prefix: str = "") -> Path:
    """Oracle files (`<data.path>/oracle/YYYYMMDD.parquet`) for the OOS days of a fabricated run whose oracle is its own
    column `<prefix><target>`: the targets themselves (RankIC 1) by default, `pred_` for the model's predictions."""
    out = _data_path(run_dir) / "oracle"
    out.mkdir(parents=True, exist_ok=True)
    preds = pd.read_parquet(Path(run_dir) / "predictions.parquet")
    for day, g in preds[preds.split == "test"].groupby("date"):
        g[["date", "time", "sid"]].assign(oracle_intra30m=g[f"{prefix}intra30m"], oracle_nextT1d=g[f"{prefix}nextT1d"]).to_parquet(
            out / f"{day}.parquet", index=False)
    return out


def write_panel(directory, dates, stocks: int = 30, features=("f",), times=(93000,), seed: int = 0, edit=None) -> Path:
    """Hand-made day files `directory/YYYYMMDD.parquet`: every stock (sid 0..stocks-1) at every time, standard normal
    features and targets (one generator over the days, from `seed`); `edit(frame, date, rng)` returns the frame to write
    (a leak column, a short day, an infinite value). Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for date in dates:
        n = stocks * len(times)
        df = pd.DataFrame({"date": np.int32(date), "time": np.repeat(np.int32(times), stocks), "sid": np.tile(np.arange(stocks), len(times))})
        for c in [*features, *TARGETS]: df[c] = rng.standard_normal(n)
        if edit is not None: df = edit(df, date, rng)
        df.to_parquet(directory / f"{date}.parquet", index=False)
    return directory


def check_no_leak(folds, days, horizon: int) -> None:
    "Raise `AssertionError` if any walk-forward fold (`rolling.Fold`) lets a training/validation label reach a later split."
    pos = {d: i for i, d in enumerate(sorted(set(int(d) for d in days)))}
    for f in folds:
        assert f.train and f.valid and f.test, f
        for a, b in ((f.train, f.valid), (f.valid, f.test), (f.train, f.test)):
            # the label of the last earlier-split row looks `horizon` trading days ahead: it must stay before `b`
            assert pos[a[-1]] + horizon < pos[b[0]], (f, "label horizon reaches the next split")
        assert list(f.train) == sorted(f.train) and list(f.test) == sorted(f.test)


def write_ragged_panel(d, n: int = 6, days: int = 6, times=(93000, 100000, 103000), seed: int = 0, nfeat: int = 2) -> list[int]:
    """The loader tests' tiny panel: `n` stocks (`S000`..) over `days` weekdays from 2020-01-02 with `times` snapshots,
    features `"0"`.., the three targets and `ADV50`; `S000` lists on the second day, `S001` is suspended on the third,
    the last stock delists after the fourth, one feature value is NaN and one inf (day 2), the last day's
    `nextT1d`/`ema1d` are unknown (NaN), as is `intra30m` at each day's last snapshot; rows shuffled. Returns the dates."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-02", periods=days).strftime("%Y%m%d").astype(int).tolist()
    for i, date in enumerate(dates):
        sids = [f"S{j:03d}" for j in range(n) if not (j == 0 and i == 0) and not (j == 1 and i == 2) and not (j == n - 1 and i >= 4)]
        df = pd.DataFrame({"date": np.int32(date), "time": np.repeat(np.int32(times), len(sids)), "sid": np.tile(sids, len(times))})
        for f in range(nfeat): df[str(f)] = rng.standard_normal(len(df)).astype(np.float32)
        for c in TARGETS: df[c] = rng.standard_normal(len(df)).astype(np.float32)
        df.loc[df.time == times[-1], "intra30m"] = np.nan
        if i == days - 1: df[["nextT1d", "ema1d"]] = np.nan
        if i == 1: df.loc[0, "0"] = np.nan; df.loc[1, "1"] = np.inf
        df["ADV50"] = rng.uniform(1, 2, len(df)).astype(np.float32)
        df.sample(frac=1, random_state=i).to_parquet(Path(d) / f"{date}.parquet", index=False)   # row order must not matter
    return dates
