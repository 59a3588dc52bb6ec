"""The plain labelled-folder layout: <class>/<image files>, the sub-folder names as classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.core.errors import ConfigError
from lookalike.evaluation.datasets import load_dataset
from tests.conftest import encode, gradient_image


def write_class(root: Path, name: str, seeds: range) -> list[Path]:
    """A class folder of small JPEGs, one per seed."""
    (root / name).mkdir(parents=True)
    paths = [root / name / f"{seed}.jpg" for seed in seeds]
    for path, seed in zip(paths, seeds, strict=True):
        path.write_bytes(encode(gradient_image(width=32, height=24, seed=seed)))
    return paths


def test_sub_folders_are_classes_and_each_image_queries_its_class(tmp_path: Path) -> None:
    """Every image is in the database; each queries the rest of its class; non-images are skipped."""
    cats = write_class(tmp_path, "cats", range(3))
    dogs = write_class(tmp_path, "dogs", range(3, 5))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "cats" / ".hidden.jpg").write_bytes(b"")
    (tmp_path / "README.md").write_text("a file beside the classes")
    (tmp_path / "empty").mkdir()

    dataset = load_dataset(tmp_path)

    assert (dataset.name, dataset.kind) == (tmp_path.name, "class")
    assert [(item.label, item.path) for item in dataset.database] == (
        [("cats", p) for p in cats] + [("dogs", p) for p in dogs])
    assert len(dataset.queries) == 5
    first = dataset.queries[0]
    assert first.in_database
    assert first.relevant == {str(p.absolute()) for p in cats[1:]}


def test_an_image_alone_in_its_class_is_only_a_distractor(tmp_path: Path) -> None:
    """A class with one image stays in the database but asks no query (it has no answer)."""
    write_class(tmp_path, "cats", range(2))
    [lone] = write_class(tmp_path, "owl", range(9, 10))

    dataset = load_dataset(tmp_path)

    assert str(lone.absolute()) in {item.source for item in dataset.database}
    assert [q.path for q in dataset.queries] == [tmp_path / "cats" / "0.jpg",
                                                 tmp_path / "cats" / "1.jpg"]


@pytest.mark.parametrize("classes", [0, 1])
def test_fewer_than_two_classes_is_an_error_naming_the_folder(
    tmp_path: Path, classes: int
) -> None:
    """A folder with images of fewer than two classes is refused, naming the folder."""
    for n in range(classes):
        write_class(tmp_path, f"class{n}", range(2))
    (tmp_path / "images-not-here").mkdir()
    with pytest.raises(ConfigError, match="at least 2 classes") as refused:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(refused.value)
