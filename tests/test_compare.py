"""End-to-end: the comparison page (`render_compare` / `ff compare`) on a small fabricated sweep (papermill starts a kernel: seconds)."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from factor_forecasting.compare import COMPARE_PAGE, SWEEP_INDEX, render_compare
from factor_forecasting.config import SynthConfig
from factor_forecasting.synthetic import write_synthetic
from support import label_valid, write_example_run

CHROMIUM = "/usr/bin/chromium"
FF = str(Path(sys.executable).parent / "ff")
RUNS = [("p00_s0", "model", "p00", 0), ("p00_s1", "model", "p00", 1), ("p01_s0", "model", "p01", 0),
        ("p01_s1", "model", "p01", 1), ("lightgbm_s0", "peer", "lightgbm", 0), ("p00_ensemble", "ensemble", "p00", None)]


PEER = {"peer": "lightgbm", "lightgbm_version": "4.6.0", "seed": 0, "params": {"objective": "regression", "seed": 0},
        "num_boost_round": 500, "early_stopping_rounds": 30, "features": {"recipe": "f, f_lag{l}", "lags": [1, 2], "window": 8}}


def write_sweep(root):
    "A sweep directory of fabricated runs (same OOS days, different seeds) and its sweep.json."
    for i, (name, *_) in enumerate(RUNS):
        label_valid(write_example_run(root / name, days=20, stocks=40, seed=10 + i))
    (root / "lightgbm_s0" / "peer.json").write_text(json.dumps(PEER))
    index = {"name": "example", "base": "cpu_demo", "overrides": [], "seeds": [0, 1], "peers": ["lightgbm"], "configs_tried": 2,
             "points": [{"id": "p00", "label": "model.name=tcn_attention", "overrides": ["model.name=tcn_attention"]},
                        {"id": "p01", "label": "model.name=gru", "overrides": ["model.name=gru"]}],
             "runs": [{"dir": n, "kind": k, "point": p, "seed": s, "status": "finished"} for n, k, p, s in RUNS]}
    (root / SWEEP_INDEX).write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return render_compare(write_sweep(tmp_path_factory.mktemp("compare") / "sweep"))


def test_page_holds_the_table_the_test_and_the_figures(page):
    html = page.read_text()
    assert page.name == COMPARE_PAGE and page.with_suffix(".ipynb").exists()
    assert "OOS figures and the paired test against the reference" in html
    for text in ("HAC t", "ΔRankIC", "p x N", "configs tried: 2", "reference <strong>lightgbm</strong>", "p00 ensemble",
                 "model.name=gru", "RankICIR", "long-only net IR", "turnover", "long-short", "intra30m", "nextT1d", " ± ",
                 "valid RankIC", "✓", "LightGBM 4.6.0", "at most 500 trees", "after 30 rounds", "lags [1, 2] snapshots, window 8"):
        assert text in html, text
    assert html.count("validation pick: ") == 2 and " rows on OOS" in html   # one line per target
    assert html.count("data:image/png;base64") >= 2                    # cumulative RankIC, bars with seed error bars
    assert "<script src=" not in html and "Traceback" not in html      # self-contained, and nothing raised
    assert "def " not in html                                          # inputs hidden


def test_chromium_renders_a_page_with_the_table(page):
    if not Path(CHROMIUM).exists():
        print(f"SKIP: {CHROMIUM} not found; .ci/run installs Chromium for this check")
        pytest.skip(f"{CHROMIUM} not found (CI installs it via .ci/run)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryDirectory() as out:
        png = Path(out) / "page.png"
        res = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
                              page.as_uri()], capture_output=True, text=True, timeout=120)
        assert png.exists(), res.stderr[-2000:]
        import matplotlib.image as mpimg
        img = mpimg.imread(png)[..., :3]
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    tables = dom.split("<table")[1:]
    assert len(tables) >= 2 and "HAC t" in tables[0] and "p00 ensemble" in tables[0]   # the table, as the browser built it
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 0.05                                            # text, tables and figures, not a blank page
    assert (img.mean(axis=2) < 0.5).mean() > 0.005                     # a fair share of dark (ink) pixels


def test_ff_compare_run_directories_with_a_reference(tmp_path):
    a, b = (write_example_run(tmp_path / n, days=12, stocks=30, seed=i) for i, n in enumerate(("a", "b")))
    res = subprocess.run([FF, "compare", str(a), str(b), "--out", str(tmp_path / "ab.html"), "--reference", "b"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == str(tmp_path / "ab.html")
    html = (tmp_path / "ab.html").read_text()
    assert "reference <strong>b</strong>" in html and "configs tried: 2" in html and "Traceback" not in html


def test_ff_compare_refuses_runs_over_different_days(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    write_example_run(sweep / "p01_s1", days=22, stocks=40, seed=3)    # a rerun over more days: other OOS days
    res = subprocess.run([FF, "compare", str(sweep)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"ff: error: {sweep / 'p01_s1'}: its OOS days differ from {sweep / 'p00_s0'}'s (")
    assert "Traceback" not in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (sweep / COMPARE_PAGE).exists() and not (sweep / "compare.ipynb").exists()


def test_ff_compare_pairs_runs_only_on_the_same_data(tmp_path):
    "Two synthetic markets over the same dates: runs on different markets are refused in one line; runs on one market compare."
    markets = [write_synthetic(tmp_path / f"market{s}", SynthConfig(stocks=30, days=12, features=10, snapshots=2, seed=s))
               for s in (1, 2)]
    a, a2, b = (write_example_run(tmp_path / name, days=12, stocks=30, seed=seed, data=markets[m])
                for name, seed, m in (("a", 0, 0), ("a2", 1, 0), ("b", 0, 1)))
    res = subprocess.run([FF, "compare", str(a), str(b), "--out", str(tmp_path / "ab.html")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"ff: error: runs {a} and {b} read different data: 20200102.parquet differs (sha256 ")
    assert not (tmp_path / "ab.html").exists() and not (tmp_path / "ab.ipynb").exists()
    res = subprocess.run([FF, "compare", str(a), str(a2), "--out", str(tmp_path / "aa.html"), "backtest.n_drop=2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    html = (tmp_path / "aa.html").read_text()
    assert "n_drop 2" in html and "long-only net IR" in html and "Traceback" not in html
