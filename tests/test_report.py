"""End-to-end: `render_report` / `ff report` on small fabricated run directories (papermill starts a kernel: seconds)."""
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from factor_forecasting.report import render_report
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
    assert html.count("data:image/png;base64") >= 8
    assert "<script src=" not in html and "Traceback" not in html      # self-contained, and nothing raised
    assert "def " not in html                                          # inputs hidden
    assert "By group and after neutralization" in html and "size+group-neutral" in html and "RankIC by sector" not in html.split("By group")[0]


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
    assert "By group and after neutralization" in dom                  # the rendered page shows the new section
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
