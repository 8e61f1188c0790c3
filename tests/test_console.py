"""End-to-end: the installed `ff` console script (what a user types), not the in-process parser."""
import subprocess
import sys
from pathlib import Path

FF = str(Path(sys.executable).parent / "ff")


def ff(*args):
    return subprocess.run([FF, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands():
    res = ff("--help")
    assert res.returncode == 0, res.stderr
    assert "config" in res.stdout


def test_config_typo_is_one_clear_line():
    res = ff("config", "cpu_demo", "trainer.lrr=1")
    assert res.returncode == 2
    assert res.stderr.strip() == "ff: error: unknown key `trainer.lrr` in override `trainer.lrr=1`; did you mean `trainer.lr`?"
    assert "Traceback" not in res.stderr
