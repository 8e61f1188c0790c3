"""End-to-end: `ff run` executes the train pipeline (papermill -> torchrun -> trainer -> IC report).

Small on purpose (a tiny synthetic panel, one fold, one epoch): these check the plumbing, not the model.
"""
import subprocess
import sys
from pathlib import Path

import nbformat

FF = str(Path(sys.executable).parent / "ff")


def ff(*args, cwd, timeout=300):
    return subprocess.run([FF, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def notebook_errors(path):
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def test_failing_job_fails_the_pipeline_visibly(tmp_path):
    "A job that dies inside torchrun: `ff run` exits 1, and the executed notebook shows the job's own error."
    data = tmp_path / "data"
    data.mkdir()
    (data / "20200102.parquet").write_bytes(b"not a parquet file")
    res = ff("run", "--config", "cpu_demo", "--name", "broken", "-p", f"data.path={data}",
             "-p", f"run.root={tmp_path / 'runs'}", "-p", "nproc_per_node=1", cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    nb_path = tmp_path / "runs" / "broken" / "train.ipynb"
    assert res.stderr.strip().endswith(f"the executed notebook shows the error: {nb_path}"), res.stderr[-3000:]
    errors = notebook_errors(nb_path)
    assert [e["ename"] for e in errors] == ["JobFailed"]
    assert "the job exited with status 1" in errors[0]["evalue"]
    assert "20200102.parquet" in errors[0]["evalue"]          # the trainer's own message, from inside torchrun
    assert not (tmp_path / "runs" / "broken" / "ic_report.html").exists()


TINY = """\
base: cpu_demo
data:
  path: data
  seq_len: 4
  synth: {stocks: 40, days: 36, features: 10, snapshots: 2}
model: {hidden: 8, layers: 1, heads: 1}
trainer: {epochs: 1, batch_size: 4}
rolling: {train_days: 20, valid_days: 4, test_days: 4, embargo_days: 1, max_folds: 2}
run: {root: runs}
"""


def test_demo_end_to_end(tmp_path):
    "`ff demo` on a tiny config: data generated, 2-process torchrun run, report rendered, headline printed."
    (tmp_path / "tiny.yaml").write_text(TINY)
    res = ff("demo", "--config", "tiny.yaml", "--name", "tiny", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    run_dir = tmp_path / "runs" / "tiny"
    assert (tmp_path / "data" / "meta.json").exists()                     # generated because it was missing
    assert f"IC report: {run_dir / 'ic_report.html'}" in res.stdout
    head = res.stdout.split("out-of-sample RankIC per target")[1]
    assert "oracle RankIC" in head and all(t in head for t in ("intra30m", "nextT1d", "ema1d")), res.stdout[-2000:]
    assert "(oracle: oracle on the same OOS rows)" in head
    for nb in ("train.ipynb", "ic_report.ipynb"):
        assert notebook_errors(run_dir / nb) == []
    text = "".join(o.get("text", "") for c in nbformat.read(run_dir / "train.ipynb", as_version=4).cells
                   if c.cell_type == "code" for o in c.get("outputs", []))
    assert "--nproc_per_node=2" in text and "finished:" in text            # the job's own log streamed into the notebook
    assert (run_dir / "ic_report.html").stat().st_size > 10_000
    mon = ff("monitor", str(run_dir), "--once", cwd=tmp_path)
    assert mon.returncode == 0 and "FINISHED" in mon.stdout, mon.stdout + mon.stderr
