"""`pyro-vae compare`: two estimates of the same points, B - A with its paired standard error."""

import json
import math

from pyro_vae.cli import main


def test_compare_pairs_two_runs_estimates_point_by_point_and_refuses_other_points(tmp_path, capsys):
    """`pyro-vae compare A B`: B - A as the mean of the per-datapoint differences, with the standard
    error of that mean (paired), beside the unpaired error; two evaluations of other points are refused."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for run, seed in zip(runs, (0, 1)):
        assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1",
                     "--set", f"seed={seed}"]) == 0
        assert main(["evaluate", str(run), "--k", "20", "--n", "30", "--no-progress"]) == 0
    a_path, b_path = (run / "eval_iwae_k20_test_n30.json" for run in runs)
    a, b = (json.loads(p.read_text()) for p in (a_path, b_path))
    assert len(a["per_datapoint"]) == 30 and abs(sum(a["per_datapoint"]) / 30 - a["value"]) < 1e-9  # every point's log p(x)
    capsys.readouterr()
    assert main(["compare", str(a_path), str(b_path)]) == 0
    out = capsys.readouterr().out
    diffs = [vb - va for va, vb in zip(a["per_datapoint"], b["per_datapoint"])]
    mean = sum(diffs) / 30
    paired = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 29 / 30)
    assert f"compare on test, n=30 (the same points: data {a['data']['fingerprint']['test']}" in out
    assert f"B - A: {mean:.3f} +- {paired:.3f} nats per datapoint, paired over the same points" in out
    assert f"(unpaired the error would be {math.hypot(a['stderr'], b['stderr']):.3f}); B higher at {sum(d > 0 for d in diffs)} of 30" in out
    assert paired < math.hypot(a["stderr"], b["stderr"])  # the points' own spread cancels
    # other points, other data, other kinds of file: refused with what differs
    assert main(["evaluate", str(runs[1]), "--k", "20", "--n", "20", "--no-progress"]) == 0
    assert main(["evaluate", str(runs[1]), "--estimator", "gaps", "--k", "5", "--n", "3", "--ais-steps", "3", "--ais-chains", "2",
                 "--no-progress"]) == 0
    other_binarization = tmp_path / "edited.json"
    other_binarization.write_text(json.dumps(dict(b, data=dict(b["data"], binarize="static"))))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in b.items() if k != "per_datapoint"}))
    (tmp_path / "not.json").write_text("{oops")
    capsys.readouterr()
    for other, message in (
        (runs[1] / "eval_iwae_k20_test_n20.json", "did not score the same points (n 30 / 20 (the first n points of the split: pass --n alike))"),
        (other_binarization, "did not score the same points (data.binarize none / static)"),
        (runs[1] / "eval_gaps_k5_steps3_chains2_test_n3.json", "is a gaps report: compare reads one log p(x) estimate per point"),
        (old, "holds no per-datapoint values (written before evaluations kept them); run the same `pyro-vae evaluate` again"),
        (tmp_path / "not.json", "is not JSON"),
        (tmp_path / "missing.json", "cannot read"),
    ):
        assert main(["compare", str(a_path), str(other)]) == 2
        assert message in capsys.readouterr().err, other
