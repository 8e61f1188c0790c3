"""The GPU paths. Skipped, with the reason printed, where torch sees no CUDA device (CI has none); run them on a GPU
machine with `python -m pytest tests/test_gpu.py`.

- the loader with chunks on the GPU delivers the same batches as on the CPU, windows gathered on the device;
- the model under bf16 autocast agrees with float32 within bf16's precision, forward and gradients;
- a whole walk-forward run under `torchrun` on the GPU (nccl, bf16, torch.compile, fused AdamW,
  `trainer.batch_size=auto` probing) writes finite predictions and finds the planted signal out of sample.
"""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from factor_forecasting.config import config_from_dict
from factor_forecasting.launch import torchrun_command
from factor_forecasting.loader import PanelDataset
from factor_forecasting.loss import build_loss
from factor_forecasting.model import build_model, model_context
from factor_forecasting.synthetic import write_synthetic

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=f"torch {torch.__version__} sees no CUDA device")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu") / "data"
    write_synthetic(d, stocks=300, days=60, features=16, snapshots=8, seed=3)
    return d


def _cfg(market, **data):
    return config_from_dict({"data": {"path": str(market), "seq_len": 12, **data},
                             "model": {"hidden": 32, "layers": 3, "heads": 4, "dropout": 0.0},
                             "trainer": {"batch_size": 4}, "run": {"seed": 5}})


@pytest.mark.parametrize("sampling", ["sequence", "window"])
def test_gpu_loader_matches_cpu(market, sampling):
    cfg = _cfg(market, stocks_per_cross_section=120, sampling=sampling)
    make = lambda device: PanelDataset(cfg, context=model_context(cfg), train=True, device=device)
    cpu, gpu = make("cpu"), make("cuda")
    for epoch in (0, 1):
        cpu.set_epoch(epoch); gpu.set_epoch(epoch)
        for a, b in zip(cpu, gpu, strict=True):
            assert type(a) is type(b) and b.x.is_cuda and b.y.is_cuda, "batches of a GPU dataset are formed on the GPU"
            for name in a.__dataclass_fields__:
                va, vb = getattr(a, name), getattr(b, name)
                if not isinstance(va, torch.Tensor): assert va == vb, name; continue
                torch.testing.assert_close(vb.cpu(), va, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{type(a).__name__}.{name}: {m}")


@pytest.mark.parametrize("sampling", ["sequence", "window"])
def test_bf16_autocast_agrees_with_fp32(market, sampling):
    cfg = _cfg(market, sampling=sampling)
    ds = PanelDataset(cfg, context=model_context(cfg), train=True, device="cuda")
    ds.set_epoch(0)
    b = next(iter(ds))
    torch.manual_seed(0)
    model, loss_fn = build_model(cfg, len(ds.columns.features)).cuda(), build_loss(cfg)
    def run(dtype):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            pred = b.forecast(model)
        loss_fn(pred.float(), b.y, b.group, b.weight)[0].backward()
        return pred.float().detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    ref_pred, ref_grad = run(None)
    pred, grad = run(torch.bfloat16)
    assert torch.isfinite(pred).all() and torch.isfinite(grad).all()
    assert (pred - ref_pred).norm() / ref_pred.norm() < 2e-2
    assert torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0) > 0.99


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.xfail(
    reason="torch.compile of sequence training under DDP + bf16 raised an InductorError on an H200 with torch 2.11 "
           "(2026-11-30); optimal_4gpu leaves model.compile off", strict=False))])
def test_torchrun_on_gpu_learns_the_planted_signal(market, tmp_path, compile):
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(json.dumps({
        "data": {"path": str(market), "seq_len": 12},
        "model": {"name": "tcn_attention", "hidden": 32, "layers": 3, "heads": 4, "compile": compile},
        "trainer": {"device": "cuda", "precision": "bf16", "batch_size": "auto", "epochs": 4, "lr": 0.002,
                    "warmup_steps": 10, "log_every_steps": 10},
        "rolling": {"train_days": 30, "valid_days": 5, "test_days": 10, "embargo_days": 2, "max_folds": 2},
        "run": {"root": str(tmp_path / "runs"), "name": "gpu", "seed": 1, "log_level": "WARNING"}}))
    p = subprocess.run(torchrun_command(str(cfg), nproc_per_node=1), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    run_dir = tmp_path / "runs" / "gpu"
    events = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("on cuda:0" in e.get("message", "") and "auto" in e.get("message", "") for e in events), events[:5]
    hb = json.loads((run_dir / "heartbeat.json").read_text())
    assert hb["gpu_mem_gb"] > 0, hb
    df = pd.read_parquet(run_dir / "predictions.parquet")
    test = df[df.split == "test"]
    assert len(test) and np.isfinite(test[[c for c in df if c.startswith("pred_")]].to_numpy()).all()
    ic = test.groupby(["date", "time"]).apply(lambda g: g.pred_nextT1d.corr(g.nextT1d, method="spearman")).mean()
    assert ic > 0.03, f"out-of-sample RankIC of nextT1d {ic:.4f}: the planted signal was not found"
