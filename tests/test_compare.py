"""Comparing two runs' metrics tables is one command."""

from __future__ import annotations

import pandas as pd

from eagle_pipelines.compare import compare, main


def _write(history, run, ins):
    folder = history / run
    folder.mkdir(parents=True)
    pd.DataFrame({"method": ["eagle", "random"], "level": ["sentence"] * 2, "protocol": ["regions"] * 2,
                  "n_samples": [10, 10], "insertion_auc": ins, "deletion_auc": [0.4, 0.7]}).to_csv(
        folder / "metrics.csv", index=False)


def test_compare_prints_both_runs_and_the_difference(tmp_path, capsys):
    _write(tmp_path, "2026-01-01T00.00.00.000Z", [0.90, 0.70])
    _write(tmp_path, "2026-01-02T00.00.00.000Z", [0.95, 0.70])
    table = compare(tmp_path, "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", ["insertion_auc"])
    eagle = table[table.method == "eagle"].iloc[0]
    assert eagle.insertion_auc_a == 0.90 and eagle.insertion_auc_b == 0.95
    assert abs(eagle.insertion_auc_delta - 0.05) < 1e-12
    assert main(["--history", str(tmp_path), "--metrics", "insertion_auc", "deletion_auc"]) == 0
    out = capsys.readouterr().out
    assert "A = 2026-01-01T00.00.00.000Z" in out and "0.0500" in out
    assert main(["--history", str(tmp_path), "nope", "2026-01-02T00.00.00.000Z"]) == 2
    assert main(["--history", str(tmp_path / "empty")]) == 2
