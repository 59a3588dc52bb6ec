"""The path policy's pieces: malformed names, manifest entries, job roots, and a read that a
link swapped in after the check cannot redirect."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.core.errors import ConfigError, NotFound
from lookalike.core.paths import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    JobRoots,
    LinkRedirected,
    PathRefused,
    checked_name,
    read_exact,
    relative_name,
    within_dataset,
)


@pytest.mark.parametrize(("text", "reason"), [
    ("a\x00b", "NUL byte"),
    ("/x/" + "n" * (MAX_NAME_BYTES + 1), f"names are limited to {MAX_NAME_BYTES}"),
    ("/" + "/".join(["d" * 200] * 21), f"paths are limited to {MAX_PATH_BYTES}"),
    ("/x/" + "é" * 128, f"names are limited to {MAX_NAME_BYTES}"),  # 256 bytes in UTF-8
])
def test_names_the_kernel_would_refuse_are_refused_first(text: str, reason: str) -> None:
    """NUL bytes and over-long paths or names are PathRefused, quoting at most a short prefix."""
    with pytest.raises(PathRefused, match=reason) as refused:
        checked_name(text, "source")
    assert len(str(refused.value)) < 400


def test_names_at_the_limits_pass() -> None:
    """A name of exactly NAME_MAX bytes, and a long path of short names, are fine."""
    checked_name("/x/" + "n" * MAX_NAME_BYTES, "source")
    path = "/" + "/".join(["d" * 200] * 20)
    assert len(path) <= MAX_PATH_BYTES
    assert checked_name(path, "source") == path


@pytest.mark.parametrize(("name", "reason"), [
    ("/etc/passwd", "absolute path"),
    ("../secret.jpg", "contains '..'"),
    ("a/../../b.jpg", "contains '..'"),
    ("", "not a file name"),
    (17, "not a file name"),
    (None, "not a file name"),
    ("a\x00.jpg", "NUL byte"),
])
def test_manifest_entries_must_be_relative_names_inside(name: object, reason: str) -> None:
    """Absolute names, `..`, non-strings and NULs are refused without any file-system call."""
    with pytest.raises(PathRefused, match=reason):
        relative_name(name, "labels.json: entry")


def test_relative_names_keep_their_folders() -> None:
    """A relative entry with sub-folders is kept as it is."""
    assert str(relative_name("cats/a.jpg", "entry")) == "cats/a.jpg"


def test_a_link_leading_out_of_the_dataset_is_refused_without_saying_where(tmp_path: Path) -> None:
    """within_dataset follows links inside and refuses one leading out, naming only the entry."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"a")
    (root / "images" / "same.jpg").symlink_to(root / "images" / "a.jpg")
    (root / "images" / "out.jpg").symlink_to(tmp_path / "secret.jpg")
    assert within_dataset(root, root / "images" / "same.jpg", "same") == root / "images" / "a.jpg"
    with pytest.raises(PathRefused, match="leads outside the dataset folder") as refused:
        within_dataset(root, root / "images" / "out.jpg", "entry 'out.jpg'")
    assert "secret" not in str(refused.value)


def test_job_roots_confine_paths_and_s3_prefixes(tmp_path: Path) -> None:
    """Inside a folder root: the resolved path; outside, `..` or a link out: PathRefused; a
    missing path inside: NotFound; s3 sources only under an s3 root; no roots: ConfigError."""
    root = tmp_path / "root"
    (root / "photos").mkdir(parents=True)
    (root / "out").symlink_to(tmp_path)
    roots = JobRoots([str(root), "s3://bucket/images"])
    assert roots.source(f"{root}/photos/../photos") == str(root / "photos")
    assert roots.folder(str(root / "photos"), "evaluation") == root / "photos"
    assert roots.source("s3://bucket/images/2024") == "s3://bucket/images/2024"
    for outside in (str(tmp_path), f"{root}/..", str(root / "out"), "s3://bucket/other",
                    "s3://bucket/images/../other", "file:///etc", f"/proc/self/root{tmp_path}"):
        with pytest.raises(PathRefused):
            roots.source(outside)
    with pytest.raises(NotFound, match="does not exist"):
        roots.source(str(root / "missing"))
    with pytest.raises(ConfigError, match="LOOKALIKE_SERVER__JOB_ROOTS"):
        JobRoots([]).source(str(root))


def test_read_exact_reads_a_checked_file(tmp_path: Path) -> None:
    """A resolved path that nothing changed reads as usual."""
    path = tmp_path / "a.jpg"
    path.write_bytes(b"bytes")
    assert read_exact(path) == b"bytes"


def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path: Path) -> None:
    """The checked file replaced by a link, or a folder on its way replaced by one, is
    LinkRedirected: the outside file is never read."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "a.jpg").write_bytes(b"outside")
    folder = tmp_path / "set"
    folder.mkdir()
    checked = folder / "a.jpg"
    checked.write_bytes(b"inside")
    checked.unlink()
    checked.symlink_to(tmp_path / "outside" / "a.jpg")
    with pytest.raises(LinkRedirected):
        read_exact(checked)
    checked.unlink()
    folder.rename(tmp_path / "moved")
    folder.symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRedirected, match="leads elsewhere"):
        read_exact(checked)
