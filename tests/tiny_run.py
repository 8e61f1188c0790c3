"""The tiny walk-forward run the end-to-end tests train: a 40-stock synthetic market generated next to the YAML."""

TINY_RUN = """\
base: cpu_demo
data:
  path: data
  seq_len: 4
  synth: {stocks: 40, days: 36, features: 10, snapshots: 2, generate: true}
model: {hidden: 8, layers: 1, heads: 1}
trainer: {epochs: 3, batch_size: 4, log_every_steps: 2, heartbeat_every_s: 0.5}
rolling: {train_days: 20, valid_days: 4, test_days: 4, embargo_days: 1, max_folds: 2}
run: {root: runs}
"""


def write_tiny(directory, name="tiny.yaml", extra=""):
    "Write the tiny run's YAML (as `run.yaml`) into `directory`, and `name` on top of it with `extra` YAML; returns its path."
    (directory / "run.yaml").write_text(TINY_RUN)
    path = directory / name
    path.write_text("base: run.yaml\n" + extra)
    return path
