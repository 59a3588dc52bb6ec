"""`lookalike eval` reads the dataset and the configurations in either order: `--config` takes
one or more names, repeated or comma-separated, and never swallows the dataset."""

from __future__ import annotations

import pytest

from lookalike.cli import build_parser
from lookalike.cli.evaluate import config_names


@pytest.mark.parametrize(("argv", "dataset", "configs"), [
    (["eval", "sets/corel", "--config", "baseline", "+dba"], "sets/corel", ["baseline", "+dba"]),
    (["eval", "--config", "best", "sets/corel"], "sets/corel", ["best"]),
    (["eval", "--config", "best", "+dba", "sets/corel", "--json"], "sets/corel", ["best", "+dba"]),
    (["eval", "--config", "best,+dba", "sets/corel"], "sets/corel", ["best", "+dba"]),
    (["eval", "--config", "best", "--config", "+qe", "sets/corel"], "sets/corel", ["best", "+qe"]),
    (["eval", "sets/corel", "--config", "best", "--config", "+qe,+dba"], "sets/corel",
     ["best", "+qe", "+dba"]),
    (["eval", "sets/corel"], "sets/corel", ["baseline"]),
])
def test_dataset_and_configs_in_either_order(argv: list[str], dataset: str,
                                             configs: list[str]) -> None:
    """Each spelling gives the same dataset and configuration names."""
    args = build_parser().parse_args(argv)
    assert args.dataset == dataset
    assert config_names(args.config) == configs


@pytest.mark.parametrize("argv", [["eval"], ["eval", "--config", "best"], ["eval", "--json"]])
def test_a_missing_dataset_is_a_usage_error(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Without a dataset argparse exits 2 naming it, as when `--config` could not take it."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: dataset" in err
    assert "[dataset]" not in err
