"""End-to-end: `render_report` / `ff report` on small fabricated run directories (papermill starts a kernel: seconds)."""
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from factor_forecasting.config import SynthConfig
from factor_forecasting.report import render_report
from factor_forecasting.synthetic import write_synthetic
from support import write_example_run, write_group_data

CHROMIUM = "/usr/bin/chromium"
FF = str(Path(sys.executable).parent / "ff")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = write_example_run(tmp_path_factory.mktemp("report") / "run", days=16, stocks=40)
    write_group_data(run)
    return render_report(run)


def test_html_holds_headline_and_figures(report):
    html = report.read_text()
    assert report.name == "ic_report.html" and (report.parent / "ic_report.ipynb").exists()
    assert "Headline: in-sample vs out-of-sample" in html
    for col in ("in-sample", "OOS", "ICIR", "RankIC", "RankICIR", "hit rate", "intra30m", "nextT1d"):
        assert col in html, col
    assert html.count("data:image/png;base64") >= 9
    assert "<script src=" not in html and "Traceback" not in html      # self-contained, and nothing raised
    assert "def " not in html                                          # inputs hidden
    assert "By group and after neutralization" in html and "size+group-neutral" in html and "RankIC by sector" not in html.split("By group")[0]


def test_backtest_section_is_the_topk_dropout_backtest(report):
    section = report.read_text().split("Backtest (OOS): TopkDropout")[1].split("Training curves")[0]
    for text in ("topk 10", "n_drop 5", "5 bps open, 15 bps close", "price limits from: predictions", "long_only",
                 "long_short", "annual net return", "IR (net)", "max drawdown", "mean turnover", "mean held"):
        assert text in section, text
    assert section.count("data:image/png;base64") == 2                 # the equity curves and the cost/turnover frontier


def test_chromium_renders_a_page_that_is_not_blank(report):
    if not Path(CHROMIUM).exists():
        print(f"SKIP: {CHROMIUM} not found; .ci/run installs Chromium for this check")
        pytest.skip(f"{CHROMIUM} not found (CI installs it via .ci/run)")
    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryDirectory() as out:
        png = Path(out) / "page.png"
        res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2400",
                              report.as_uri()], capture_output=True, text=True, timeout=120)
        assert png.exists(), res.stderr[-2000:]
        import matplotlib.image as mpimg
        img = mpimg.imread(png)[..., :3]
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              f"--user-data-dir={profile}", "--dump-dom", report.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout
    assert "By group and after neutralization" in dom and "TopkDropout" in dom   # the rendered page shows these sections
    assert img.shape[:2] == (2400, 1280)
    assert img.std() > 0.05                                            # text, tables and figures, not a blank page
    assert (img.mean(axis=2) < 0.5).mean() > 0.005                     # a fair share of dark (ink) pixels


def test_group_section_skipped_with_a_reason_without_group_data(tmp_path):
    html = render_report(write_example_run(tmp_path / "plain", days=8, stocks=30)).read_text()
    assert "By group and after neutralization" in html and "Skipped: the run&#39;s data" in html or "Skipped: the run's data" in html


def test_run_without_oos_says_so(tmp_path):
    html = render_report(write_example_run(tmp_path / "train_only", days=8, stocks=30, oos=False)).read_text()
    assert "no out-of-sample predictions" in html and "Traceback" not in html
    assert html.count("data:image/png;base64") >= 3                    # in-sample figures and training curves


def test_ff_report_names_a_missing_column(tmp_path):
    run = write_example_run(tmp_path / "bad", days=6, stocks=20)
    pd.read_parquet(run / "predictions.parquet").drop(columns="nextT1d").to_parquet(run / "predictions.parquet")
    res = subprocess.run([FF, "report", str(run)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "missing column `nextT1d`" in res.stderr and "Traceback" not in res.stderr
    assert not (run / "ic_report.html").exists()


def test_ff_report_takes_report_and_backtest_overrides(tmp_path):
    run = write_example_run(tmp_path / "run", days=10, stocks=30)
    res = subprocess.run([FF, "report", str(run), "backtest.topk=4", "backtest.n_drop=1", "report.quantiles=3"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == str(run / "ic_report.html") and res.stderr == ""
    html = (run / "ic_report.html").read_text()
    assert "topk 4 · n_drop 1" in html and "Traceback" not in html
    assert '"report.quantiles=3"' in (run / "ic_report.ipynb").read_text()   # the kernel got the overrides


@pytest.mark.parametrize("args, line", [
    (["backtest.topk=0"], "`backtest.topk` in override `backtest.topk=0`: must be >= 1, got 0"),
    (["--top-k", "0"], "`ff report --top-k` is an earlier form; now: backtest.topk=N, e.g. `ff report RUN_DIR backtest.topk=30`"),
    (["backtest.close_cost_bps=-50"], "`backtest.close_cost_bps` in override `backtest.close_cost_bps=-50`: must be >= 0, got -50.0"),
    (["report.quantiles=1"], "`report.quantiles` in override `report.quantiles=1`: must be >= 2, got 1"),
    (["report.min_stocks=0"], "`report.min_stocks` in override `report.min_stocks=0`: must be >= 2, got 0"),
    (["data.path=/elsewhere"], "override `data.path=/elsewhere`: only report.* and backtest.* keys apply to a finished run"),
])
def test_ff_report_refuses_a_bad_setting_in_one_line(tmp_path, args, line):
    run = write_example_run(tmp_path / "run", days=6, stocks=20)
    res = subprocess.run([FF, "report", str(run), *args], capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"ff: error: {line}\n")
    assert not (run / "ic_report.ipynb").exists()


def test_ff_report_refuses_a_baseline_over_another_market(tmp_path):
    a, b = (write_synthetic(tmp_path / f"market{s}", SynthConfig(stocks=30, days=12, features=10, snapshots=2, seed=s)) for s in (1, 2))
    run, other = write_example_run(tmp_path / "run", days=12, stocks=30, data=a), write_example_run(tmp_path / "other", days=12, stocks=30, data=b)
    res = subprocess.run([FF, "report", str(run), "--baseline", str(other)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"ff: error: runs {run} and {other} read different data: 20200102.parquet differs (sha256 ")
    assert not (run / "ic_report.ipynb").exists()
