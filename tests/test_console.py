"""End-to-end: the installed `ff` console script (what a user types), not the in-process parser."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from support import write_example_run, write_panel

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


def test_stock_ids_of_two_types_are_one_line_naming_a_file_of_each(tmp_path):
    "`ff data check`, and `ff train` (also --dry-run) before torchrun: one line, no traceback."
    data = write_panel(tmp_path / "data", [20200102 + i for i in range(5)], stocks=30)
    odd = data / "20200104.parquet"
    pd.read_parquet(odd).assign(sid=lambda df: df.sid.astype(str)).to_parquet(odd, index=False)
    want = (f"ff: error: {odd}: column `sid` holds string ids but {data / '20200102.parquet'} holds int64 ids: every file of a "
            "dataset must write the stock ids as the same type (an id 600000 and an id '600000' are two stocks)")
    for args in (["data", "check", "cpu_demo", f"data.path={data}"],
                 ["train", "cpu_demo", f"data.path={data}", f"run.root={tmp_path / 'runs'}", "--dry-run"]):
        res = ff(*args)
        assert (res.returncode, res.stderr.strip()) == (2, want), res.stderr
    assert not (tmp_path / "runs").exists()


def test_data_check_warns_of_infinite_targets_gaps_and_exclude_typos(tmp_path):
    def inf_target(df, date, rng):
        if date == 20200103: df.loc[:2, "nextT1d"] = np.inf
        return df
    data = write_panel(tmp_path / "data", (20200102, 20200103, 20200203), stocks=30, features=("f", "g"), edit=inf_target)
    res = ff("data", "check", "cpu_demo", f"data.path={data}", "data.exclude=[f, fx]")
    assert res.returncode == 0, res.stderr
    warnings = [l for l in res.stdout.splitlines() if l.startswith("warning: ")]
    assert "warning: target `nextT1d`: 3 infinite value(s), treated as missing (neither trained on nor scored): a return of " \
           "+-inf is a data error" in warnings, res.stdout
    assert "warning: no day file between 20200103 and 20200203 (31 calendar days): missing files? a context reaching over the " \
           "gap joins the two days as if adjacent" in warnings, res.stdout
    assert "warning: data.exclude `fx` names no column of the data (a typo would let the real column through as a feature)" \
           in warnings, res.stdout
    res = ff("data", "check", "cpu_demo", f"data.path={data}", "data.features=[f, g, f]")
    assert (res.returncode, res.stderr.strip()) == (2, "ff: error: `data.features` in override `data.features=[f, g, f]`: must be "
                                                       "a list without repeats, got `f` listed 2 times")


def test_ensemble_of_an_unreadable_member_or_over_another_ensemble_is_one_line(tmp_path):
    a = write_example_run(tmp_path / "a")
    b, c = (Path(shutil.copytree(a, tmp_path / n)) for n in "bc")          # members: the same rows and targets
    assert ff("ensemble", str(a), str(b), "--out-dir", str(tmp_path / "ab")).returncode == 0
    res = ff("ensemble", str(a), str(c), "--out-dir", str(tmp_path / "ab"))
    assert (res.returncode, res.stderr.strip()) == (2, f"ff: error: ensemble: {tmp_path / 'ab'} holds another ensemble (members "
                                                       f"{a}, {b}): choose another output directory, or remove it first")
    assert ff("ensemble", str(b), str(a), "--out-dir", str(tmp_path / "ab")).returncode == 0     # the same members: rebuilt
    (c / "predictions.parquet").write_bytes(b"garbage" * 50)
    res = ff("ensemble", str(a), str(c), "--out-dir", str(tmp_path / "ac"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"ff: error: ensemble member {c / 'predictions.parquet'}: not a readable parquet file ("), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "ac").exists()
