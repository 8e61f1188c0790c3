"""The package works where users put it: a wheel installed outside this checkout runs its pipelines; pipeline kernels
print no transport warning; nbdev's own test runner passes; `make lab` starts as root."""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", "_docs",
                                    "_proc", ".ipynb_checkpoints")
TCP_WARNING = "without encryption"
# a fabricated run directory from tests/support.py (the package ships no fixtures), by a python that may not see tests/
WRITE_EXAMPLE_RUN = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); "
                     "from support import write_example_run; write_example_run(sys.argv[1])")


def _run(cmd, cwd, env=None, timeout=300):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return res


def _fresh_venv(path: Path) -> Path:
    """A new venv that imports this venv's dependencies but not the checkout (a path in a .pth runs none of the .pth
    files there), with their Jupyter data files (nbconvert's templates, ...) but none of the kernels registered here."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    (path / "share" / "jupyter").mkdir(parents=True)
    for data in (Path(sys.prefix) / "share" / "jupyter").iterdir():
        if data.name != "kernels": (path / "share" / "jupyter" / data.name).symlink_to(data)
    return python


def test_wheel_renders_a_report_outside_the_checkout(tmp_path):
    src, wheels, work = tmp_path / "src", tmp_path / "wheels", tmp_path / "work"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)      # build from a copy: the checkout gets no build/ of its own
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", wheels, src], tmp_path)   # sdist, then the wheel from it
    wheel, = wheels.glob("factor_forecasting-*.whl")
    python = _fresh_venv(tmp_path / "env")
    # --ignore-installed: the checkout's editable install is visible through the .pth and must be left alone
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel], tmp_path)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    where = _run([python, "-c", "import factor_forecasting; print(factor_forecasting.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "env"), where
    _run([python, "-c", WRITE_EXAMPLE_RUN, "run"], work, env)
    res = _run([tmp_path / "env" / "bin" / "ff", "report", "run"], work, env)
    assert (work / "run" / "ic_report.html").stat().st_size > 10_000, res.stdout
    assert TCP_WARNING not in res.stderr, res.stderr
    # the kernel is the wheel's interpreter: a failing report cell's traceback names the installed module
    probe = ("from factor_forecasting.pipeline_runner import execute_pipeline\n"
             "err = execute_pipeline('ic_report', 'probe.ipynb', {'run_dir': 'no_such_run'})\n"
             "print('\\n'.join(err.traceback))")
    trace = _run([python, "-c", probe], work, env).stdout
    assert str(tmp_path / "env") in trace and str(REPO) not in trace, trace
    assert sorted(p.name for p in work.iterdir()) == ["probe.failed.ipynb", "run"]   # no kernel socket files in the cwd; a failed notebook is NAME.failed.ipynb


def test_report_kernel_prints_no_transport_warning(tmp_path):
    """ipykernel warns on every start over TCP without CurveZMQ keys (pipeline kernels use IPC sockets); a good run's
    kernel says nothing else either (jupyter_client interrupts it before shutdown; nbconvert counts images without alt text)."""
    _run([sys.executable, "-c", WRITE_EXAMPLE_RUN, tmp_path / "run"], tmp_path)
    res = _run([BIN / "ff", "report", tmp_path / "run"], tmp_path)
    assert TCP_WARNING not in res.stderr, res.stderr
    assert "KeyboardInterrupt" not in res.stderr and "Alternative text" not in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], list(tmp_path.iterdir())


def test_nbdev_test_skips_the_pipelines():
    "nbdev's runner would execute the pipelines without a run directory (and train a demo run): nbs/pipelines/.notest."
    _run([BIN / "nbdev_test", "--path", "nbs/pipelines"], REPO)


def test_make_lab_allows_root():
    res = _run(["make", "-n", "lab"], REPO)
    lab = [line for line in res.stdout.splitlines() if "jupyter lab" in line]
    assert lab and ("--allow-root" in lab[-1]) == (os.geteuid() == 0), res.stdout
