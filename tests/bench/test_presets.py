"""Leave-one-set-out preset choice: each set's preset is chosen on the others only."""

from __future__ import annotations

from bench.presets import Score, choose, grid, leave_one_out, render


def _scores() -> list[Score]:
    # "tuned" wins on a and b, "lucky" only on c: c's preset must be tuned, chosen on a and b.
    table = {("baseline", "a"): 0.80, ("baseline", "b"): 0.70, ("baseline", "c"): 0.60,
             ("tuned", "a"): 0.90, ("tuned", "b"): 0.85, ("tuned", "c"): 0.55,
             ("lucky", "a"): 0.81, ("lucky", "b"): 0.71, ("lucky", "c"): 0.99}
    return [Score(config, dataset, p10=value, map=value)
            for (config, dataset), value in table.items()]


def test_a_set_never_chooses_its_own_preset() -> None:
    """The held-out set's score plays no part in its choice; a loss there is reported as one."""
    rows = leave_one_out(_scores(), {"p": ["baseline", "tuned", "lucky"]}, "baseline")
    by_set = {r.dataset: r for r in rows}
    assert by_set["c"].chosen == "tuned"
    assert by_set["c"].chosen_on == ("a", "b")
    assert not by_set["c"].beats_baseline
    assert by_set["a"].chosen == "lucky"
    assert by_set["a"].beats_baseline
    assert "**no**" in render(rows, "lookalike bench presets")


def test_choose_takes_the_best_mean_and_the_first_of_ties() -> None:
    """Highest mean mAP over the named sets; a tie keeps the earlier candidate."""
    scores = _scores()
    assert choose(scores, ["baseline", "tuned"], ["a"]) == "tuned"
    tied = [Score("x", "a", 0.5, 0.5), Score("y", "a", 0.5, 0.5)]
    assert choose(tied, ["x", "y"], ["a"]) == "x"


def test_the_grid_names_each_candidate_once() -> None:
    """Every candidate of the grid has its own name (rows are looked up by it)."""
    names = [c.name for c in grid()]
    assert len(names) == len(set(names)) == 54
