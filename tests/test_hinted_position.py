"""benchmarks/hinted_position.py: the samples are the hinted ones of the test stream, and the
three ways of asking are scored against the right answers."""

import pytest
import torch

from internvlx.synth import SynthOptions
from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("hinted_position")


OPTIONS = SynthOptions(resolution="easy", seed=8, hinted_position_fraction=0.3, multi_turn_fraction=1.0,
                       max_follow_ups=5)  # fmt: skip


def test_samples_are_hinted_test_samples(bench):
    samples = bench.hinted_samples(6, OPTIONS)
    assert len(samples) == 6 and all(s.split == "test" for s in samples)
    assert all([qa.qtype for qa in s.turns] == ["where", "where", "position"] for s in samples)


class HintReader:
    """A stand-in model that answers position from the where turns in its history (and
    "right" / "below" without them), and every where question wrongly with "top"/"left"."""

    def chat(self, processor, image, question, history=None, **_):
        if "half of the image" in question:
            return "left" if "left" in question else "top"
        halves = [a for _, a in history or []]
        if len(halves) == 2 and halves[0] != halves[1]:
            return {"left": "left", "right": "right", "top": "above", "bottom": "below"}[halves[0]]
        return "right" if "right" in question else "below"


def test_scoring_credits_what_each_way_of_asking_gets_right(bench):
    samples = bench.hinted_samples(40, OPTIONS)
    result = bench.evaluate(HintReader(), None, samples, progress=False)
    tally = result["tally"]
    n_diff = sum(s.turns[0].answer != s.turns[1].answer for s in samples)
    assert 0 < n_diff < 40 and tally["alone|all"][1] == tally["true hints|all"][1] == 40
    # true hints on objects in different halves decide the answer: the hint reader gets all right
    assert tally["true hints|different halves"] == [n_diff, n_diff]
    # alone it says "right"/"below": right exactly when that is the answer
    expect = sum(s.turns[2].answer in ("right", "below") for s in samples)
    assert tally["alone|all"][0] == expect
    # its own where answers ("left"/"top" always) are right when the true half is left/top
    wrong_halves = sum(qa.answer in ("right", "bottom") for s in samples for qa in s.turns[:2])
    assert result["where_accuracy"] == pytest.approx(1 - wrong_halves / 80)
    table = bench.render(result, "stub", 40)
    assert f"({n_diff}/{n_diff})" in table and "| own hints |" in table


def test_runs_the_shipped_model_end_to_end(bench):
    from internvlx import demo
    from internvlx.evaluation import load_for_eval

    torch.set_num_threads(1)
    model, processor = load_for_eval(demo.DEMO_MODEL, dtype="float32")
    result = bench.evaluate(model, processor, bench.hinted_samples(2, OPTIONS), progress=False)
    assert result["tally"]["own hints|all"][1] == 2 and 0 <= result["where_accuracy"] <= 1
