"""`core.outputs`: a command replaces only its own files, each atomically, and refuses
directories it could damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import UserError
from core.io import atomic_path
from core.outputs import check_output_dir, foreign_files, manifest_name, output_dir

OWN = ("a.txt", "summary.json", "parts/p-*.txt")


def write(staging: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)


def test_only_own_files_are_replaced_and_stale_own_files_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_dir(out, OWN, label="t") as staging:
        write(staging, {"a.txt": "1", "summary.json": "{}", "parts/p-1.txt": "x", "parts/p-2.txt": "y"})
    assert (out / "parts" / "p-2.txt").read_text() == "y"
    (out / "mine.txt").write_text("keep me")  # a foreign file appears
    with pytest.raises(UserError, match=r"did not write .*mine\.txt.*--force"):
        check_output_dir(out, OWN, label="t")
    with output_dir(out, OWN, label="t", force=True) as staging:
        write(staging, {"a.txt": "2", "summary.json": "{}", "parts/p-1.txt": "z"})
    assert (out / "mine.txt").read_text() == "keep me"
    assert (out / "a.txt").read_text() == "2" and (out / "parts" / "p-1.txt").read_text() == "z"
    assert not (out / "parts" / "p-2.txt").exists()  # written by the previous run, not this one
    assert not [p for p in out.iterdir() if p.name.startswith(".i2i-staging-")]
    assert (out / manifest_name("t")).exists()


def test_force_never_deletes_a_matching_file_the_command_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, {"parts/p-9.txt": "the user's"})
    with output_dir(out, OWN, label="t", force=True) as staging:
        write(staging, {"a.txt": "1"})
    assert (out / "parts" / "p-9.txt").read_text() == "the user's"


def test_a_failed_run_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_dir(out, OWN, label="t") as staging:
        write(staging, {"a.txt": "old"})
    with pytest.raises(RuntimeError), output_dir(out, OWN, label="t") as staging:
        write(staging, {"a.txt": "new"})
        raise RuntimeError("crash")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == [manifest_name("t"), "a.txt"]


def test_staging_left_by_a_killed_run_is_not_foreign_and_is_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, {".i2i-staging-dead/a.txt": "half"})
    assert foreign_files(out, OWN, "t") == []
    with output_dir(out, OWN, label="t") as staging:
        write(staging, {"a.txt": "1"})
    assert not (out / ".i2i-staging-dead").exists()


def test_foreign_directories_are_reported_without_reading_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, {"logs/x.parquet": "", "parts/other.txt": "", "a.txt": ""})
    assert foreign_files(out, OWN, "t") == ["logs/", "parts/other.txt"]


def test_inputs_and_paths_are_checked(tmp_path: Path) -> None:
    data = tmp_path / "plat"
    write(data, {"logs/part-0.parquet": "", "notes.parquet": ""})
    with pytest.raises(UserError, match="contains the input"):
        check_output_dir(data, OWN, label="t", inputs=[data / "logs"])
    with pytest.raises(UserError, match="is the input"):
        check_output_dir(data / "logs", OWN, label="t", inputs=[data / "logs"])
    with pytest.raises(UserError, match="inside the input directory"):
        check_output_dir(data / "logs" / "pairs", OWN, label="t", inputs=[data / "logs"])
    # --force lets it write beside the inputs, but never over one.
    check_output_dir(data, OWN, label="t", inputs=[data / "logs"], force=True)
    with pytest.raises(UserError, match="would overwrite the input"):
        check_output_dir(data, ("notes.parquet",), label="t", inputs=[data / "notes.parquet"], force=True)
    with pytest.raises(UserError, match="is a file"):
        check_output_dir(data / "notes.parquet", OWN, label="t")
    with pytest.raises(UserError, match=r"lies under .*notes\.parquet, which is a file"):
        check_output_dir(data / "notes.parquet" / "x", OWN, label="t")


def test_atomic_path_never_replaces_a_directory_with_a_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(UserError, match="directory of that name"), atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert (target / "inside").is_dir()
