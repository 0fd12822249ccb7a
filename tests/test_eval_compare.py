"""internvlx eval-compare: paired differences of two eval folders with a bootstrap interval."""

import json

import pytest

from internvlx.errors import ConfigError, DataError
from internvlx.evaluation import compare_runs, render_comparison


def _run(folder, answers, predictions, qtypes, metric="synth_exact"):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"task": "synth", "metric": metric, "variant": "internvl"}))
    rows = [{"id": f"s{i}", "prediction": p, "answers": [a], "meta": {"qtype": q}}
            for i, (a, p, q) in enumerate(zip(answers, predictions, qtypes, strict=True))]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_paired_difference_counts_and_interval(tmp_path):
    n = 200
    answers = ["red"] * n
    qtypes = ["colour" if i % 2 else "shape" for i in range(n)]
    a = ["red" if i < 100 else "blue" for i in range(n)]  # 50 %
    b = ["red" if i < 100 or i % 4 == 0 else "blue" for i in range(n)]  # + every 4th of the rest
    result = compare_runs(_run(tmp_path / "a", answers, a, qtypes), _run(tmp_path / "b", answers, b, qtypes),
                          resamples=2000)
    every = result["groups"]["all"]
    assert every["n"] == n and every["a"] == 0.5 and every["b"] == 0.625
    assert every["diff"] == pytest.approx(0.125) and every["only_a"] == 0 and every["only_b"] == 25
    lo, hi = every["ci"]
    assert 0 < lo < 0.125 < hi < 0.25  # a clear gain: the interval excludes zero and holds the truth
    # i % 4 == 0 rows are all even, i.e. shape questions: colour gains nothing
    assert result["groups"]["qtype=colour"]["diff"] == 0 and result["groups"]["qtype=colour"]["ci"] == [0, 0]
    assert result["groups"]["qtype=shape"]["only_b"] == 25
    assert list(result["groups"]) == ["all", "qtype=colour", "qtype=shape"]
    table = render_comparison(result)
    assert "| all | 200 | 50.0 % | 62.5 % | +12.5 |" in table


def test_unshared_samples_are_counted_not_compared(tmp_path):
    a = _run(tmp_path / "a", ["x", "y", "z"], ["x", "y", "z"], ["t"] * 3)
    b = _run(tmp_path / "b", ["x", "y"], ["x", "n"], ["t"] * 2)
    result = compare_runs(a, b, group_by=None, resamples=100)
    assert result["only_in_a"] == 1 and result["groups"]["all"]["n"] == 2 and list(result["groups"]) == ["all"]
    assert "1 samples only in A" in render_comparison(result)


def test_mismatched_or_unpairable_runs_are_refused(tmp_path):
    a = _run(tmp_path / "a", ["x"], ["x"], ["t"])
    with pytest.raises(ConfigError, match="one metric"):
        compare_runs(a, _run(tmp_path / "b", ["x"], ["x"], ["t"], metric="exact_match"))
    with pytest.raises(ConfigError, match="not scored per sample"):
        compare_runs(a, _run(tmp_path / "p", ["yes"], ["yes"], ["t"], metric="pope"))
    other = _run(tmp_path / "c", ["x"], ["x"], ["t"])
    (other / "predictions.jsonl").write_text(json.dumps({"id": "zz", "prediction": "x", "answers": ["x"]}) + "\n")
    with pytest.raises(DataError, match="share no scored sample"):
        compare_runs(a, other)
    with pytest.raises(DataError, match="summary.json"):
        compare_runs(a, tmp_path)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    from internvlx.cli import main

    a = _run(tmp_path / "a", ["x", "y"], ["x", "n"], ["t", "t"])
    b = _run(tmp_path / "b", ["x", "y"], ["x", "y"], ["t", "t"])
    assert main(["eval-compare", str(a), str(b), "--resamples", "50", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "| qtype=t | 2 | 50.0 % | 100.0 % | +50.0 |" in out
    assert json.loads((tmp_path / "c.json").read_text())["groups"]["all"]["only_b"] == 1
