"""End-to-end: the installed `ff` console script (what a user types), not the in-process parser."""
import subprocess
import sys
from pathlib import Path

from support import write_panel

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


def test_out_of_range_value_is_one_clear_line():
    res = ff("config", "cpu_demo", "trainer.lr=0")
    assert res.returncode == 2
    assert res.stderr.strip() == "ff: error: `trainer.lr` in override `trainer.lr=0`: must be > 0, got 0.0"


def test_mistyped_data_path_is_an_error_not_a_fake_market(tmp_path):
    "A YAML's relative data.path is taken from the YAML's directory; a missing one is named, and nothing is generated."
    (tmp_path / "my.yaml").write_text("base: cpu_demo\ndata:\n  path: synthtic\n")
    res = subprocess.run([FF, "demo", str(tmp_path / "my.yaml"), "run.name=never"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path.parent)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip() == (f"ff: error: data.path: {tmp_path / 'synthtic'} does not exist (no YYYYMMDD.parquet files); "
                                  "check the path, or set data.synth.generate=true to generate a synthetic market there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.yaml"]


def test_data_check_flags_a_leak_and_synth_help_states_limits(tmp_path):
    def forward_copy(df, date, rng):                  # a feature that is a noisy copy of a target
        return df.assign(fwd=df.ema1d * 2 + 0.01 * rng.standard_normal(len(df)))
    write_panel(tmp_path, (20200102, 20200103), stocks=30, edit=forward_copy)
    res = ff("data", "check", "cpu_demo", f"data.path={tmp_path}")
    assert res.returncode == 1, res.stderr
    assert "feature list    f, fwd\n" in res.stdout
    assert "warning: likely leak: feature `fwd` has a same-row RankIC of +" in res.stdout and "with target `ema1d`" in res.stdout
    assert ff("data", "check", "cpu_demo", f"data.path={tmp_path}", "data.label_columns=[fwd]").returncode == 0
    res = ff("data", "synth", "--help")
    text = " ".join(res.stdout.split())
    assert res.returncode == 0 and "data.synth.snapshots a divisor of 240" in text and "data.synth.stocks >= 2" in text, text
    res = ff("data", "synth", "--out", str(tmp_path / "new"), "--stocks", "50")      # an earlier release's form: one line naming the new one
    assert res.returncode == 2 and res.stderr.startswith("ff: error: `ff data synth --out` is an earlier form; now: data.path=DIR"), res.stderr
