"""End-to-end: the loader under a real `torchrun --nproc_per_node=2` (gloo), 2 DataLoader workers per rank, for both
samplings (sequence: blocks; window: batches of windows).

Every valid sample of the epoch appears exactly once across ranks x workers (a block's loss rows, a batch's rows),
and both ranks run the same number of steps (checked inside the run with an all_reduce, and again here from what
each rank wrote)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TORCHRUN = str(Path(sys.executable).parent / "torchrun")

WORKER = r'''
import json, os, sys
import torch, torch.distributed as dist
from factor_forecasting.config import config_from_dict
from factor_forecasting.loader import PanelDataset, make_loader

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
cfg = config_from_dict({"data": {"path": sys.argv[1], "seq_len": 5, "num_workers": 2, "sampling": sys.argv[3]},
                        "trainer": {"batch_size": 4}})
ds = PanelDataset(cfg, rank=rank, world_size=world, train=True, context=5)     # the loader's test: not the model's context
ds.set_epoch(1)
keys, steps = [], 0
for b in make_loader(ds):
    assert type(b).__name__ == {"sequence": "Block", "window": "Batch"}[sys.argv[3]], type(b)
    steps += 1
    keys += [[int(d), int(t), str(s)] for d, t, s in zip(b.date, b.time, ds.universe.ids_of(b.sid))]
counts = torch.tensor([steps, ds.steps_per_epoch])
lo, hi = counts.clone(), counts.clone()
dist.all_reduce(lo, op=dist.ReduceOp.MIN); dist.all_reduce(hi, op=dist.ReduceOp.MAX)
assert lo.tolist() == hi.tolist() == [steps, steps], (rank, counts, lo, hi)
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f: json.dump({"steps": steps, "keys": keys}, f)
dist.destroy_process_group()
'''


def _panel(d: Path, n=12, days=7, times=(93000, 100000, 103000)):
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2021-03-01", periods=days).strftime("%Y%m%d").astype(int)
    for i, date in enumerate(dates):
        sids = [f"X{j:02d}" for j in range(n) if (j + i) % 5]            # a different fifth of stocks missing each day
        df = pd.DataFrame({"date": np.int32(date), "time": np.repeat(np.int32(times), len(sids)), "sid": np.tile(sids, len(times))})
        for c in ["0", "1", "2", "intra30m", "nextT1d", "ema1d"]: df[c] = rng.standard_normal(len(df)).astype(np.float32)
        if i == days - 1: df[["intra30m", "nextT1d", "ema1d"]] = np.nan      # untrainable day: not a valid sample
        df.to_parquet(d / f"{date}.parquet", index=False)
    df = pd.concat(pd.read_parquet(p) for p in d.glob("*.parquet"))
    df = df[df[["intra30m", "nextT1d", "ema1d"]].notna().any(axis=1)]
    return sorted(zip(df.date.astype(int), df.time.astype(int), df.sid))


@pytest.mark.parametrize("sampling", ["sequence", "window"])
def test_torchrun_two_ranks_two_workers_exactly_once(tmp_path, sampling):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir(); out.mkdir()
    expected = _panel(data)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    res = subprocess.run([TORCHRUN, "--standalone", "--nnodes=1", "--nproc_per_node=2", str(script), str(data), str(out), sampling],
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0
    keys = [tuple(k) for r in ranks for k in r["keys"]]
    assert len(keys) == len(set(keys)), "a sample was delivered twice"
    assert sorted(keys) == expected
    assert ranks[0]["keys"] and ranks[1]["keys"]                          # both ranks did work
