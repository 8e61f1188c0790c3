"""Test collection for `make test`.

Every notebook directly in nbs/ is one test: nbdev's `test_nb` runs it top to bottom in a fresh process
(cells flagged `#| notest` are skipped), so a notebook's tests sit right under the code they test.
tests/*.py hold the end-to-end tests. The run ends with one line, `N passed, M failed`.
"""
import os
import subprocess
import sys

import pytest

RUN_NOTEBOOK = (
    "import sys; from pathlib import Path; from nbdev.test import test_nb; "
    "ok, _ = test_nb(Path(sys.argv[1]).resolve(), skip_flags=['notest']); sys.exit(0 if ok else 1)"
)
NOTEBOOK_TIMEOUT_S = 900


class NotebookFailure(Exception):
    pass


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".ipynb" and file_path.parent.name == "nbs" and not file_path.name.startswith("_"):
        return NotebookFile.from_parent(parent, path=file_path)


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookItem.from_parent(self, name=self.path.name)


class NotebookItem(pytest.Item):
    def runtest(self):
        # Two test workers share two cores: one intra-op thread each keeps them from fighting.
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MPLBACKEND": "Agg"}
        res = subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(self.path)], capture_output=True,
                             text=True, env=env, timeout=NOTEBOOK_TIMEOUT_S)
        if res.returncode:
            raise NotebookFailure(f"{self.path.name} failed (exit {res.returncode})\n{res.stderr[-12000:]}\n{res.stdout[-3000:]}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, NotebookFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"notebook {self.path.name}"


_outcomes = {}


def pytest_runtest_logreport(report):
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_collectreport(report):
    if report.failed:
        _outcomes[report.nodeid] = "failed"


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):   # xdist worker: the controller prints the summary
        return
    counts = {k: sum(v == k for v in _outcomes.values()) for k in ("passed", "failed", "skipped")}
    if counts["skipped"]:
        print(f"{counts['skipped']} skipped (reasons above)")
    print(f"{counts['passed']} passed, {counts['failed']} failed", flush=True)
