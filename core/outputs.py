"""Output directories that only ever gain or replace the command's own files.

A command that writes into a directory (`i2i mine-pairs --out`, `i2i synth OUT`,
`i2i eval --out`, `i2i demo --out`) declares the names it owns as glob patterns
relative to that directory (e.g. `train.parquet`, `logs/part-*.parquet`). Then:

- `check_output_dir` refuses, with one line, a path that is a file or lies under a
  file, a directory holding anything the command does not own ("foreign" files), and a
  directory that equals, contains or lies inside one of the command's inputs. `force`
  lets the command write into such a directory anyway; even then it touches only its
  own files, and it never overwrites an input.
- `output_dir` builds the outputs in a hidden staging folder inside the directory (same
  filesystem) and then moves each file into place with one atomic rename, so every file
  is either the old one or the new one, never a half-written one. When the names vary
  (patterns with wildcards), the files the previous run of the same command wrote
  (recorded in a hidden manifest, `.i2i-<label>.json`) and this run did not are
  removed; nothing else is. A staging folder left by a killed run is
  cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from core.errors import UserError

STAGING_PREFIX = ".i2i-staging-"
_EXAMPLES = 3


def manifest_name(label: str) -> str:
    """The hidden file that lists what the command `label` wrote into a directory."""
    return f".i2i-{label}.json"


def _owned(rel: str, patterns: Sequence[str], label: str) -> bool:
    if rel == manifest_name(label) or rel.split("/", 1)[0].startswith(STAGING_PREFIX):
        return True
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _may_hold(rel_dir: str, patterns: Sequence[str]) -> bool:
    """Whether some owned pattern can match a path inside the directory `rel_dir`."""
    return any(p.startswith(rel_dir + "/") or fnmatch.fnmatchcase(rel_dir + "/x", p) for p in patterns)


def foreign_files(out: Path, patterns: Sequence[str], label: str, limit: int = _EXAMPLES) -> list[str]:
    """Up to `limit` paths under `out` (relative, '/'-separated) that the command does not own.

    A directory that no pattern reaches is reported as one entry (`name/`), unread.
    """
    found: list[str] = []
    for root, dirs, files in os.walk(out):
        base = Path(root).relative_to(out).as_posix()
        prefix = "" if base == "." else base + "/"
        keep = []
        for name in sorted(dirs):
            rel = prefix + name
            if rel.startswith(STAGING_PREFIX):
                continue
            if _may_hold(rel, patterns):
                keep.append(name)
            else:
                found.append(rel + "/")
        dirs[:] = keep
        found += [prefix + f for f in sorted(files) if not _owned(prefix + f, patterns, label)]
        if len(found) >= limit:
            break
    return found[:limit]


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _first_file_ancestor(path: Path) -> Path | None:
    for p in [path, *path.parents]:
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_output_dir(
    out: str | Path,
    patterns: Sequence[str],
    *,
    label: str,
    inputs: Sequence[str | Path] = (),
    force: bool = False,
    option: str = "--out",
) -> Path:
    """Refuse an output directory the command could damage; see the module docstring.

    Raises `UserError` naming the path, what is wrong and the fix. Returns `out`.
    """
    out = Path(out)
    blocker = _first_file_ancestor(out)
    if blocker == out:
        raise UserError(f"{option} {out} is a file, not a directory; choose a directory path")
    if blocker is not None:
        raise UserError(f"{option} {out} lies under {blocker}, which is a file; choose another path")
    real_out = out.resolve()
    for given in inputs:
        real_in = Path(given).resolve()
        for pattern in patterns:
            if "*" not in pattern and (real_out / pattern) == real_in:
                raise UserError(
                    f"{option} {out} would overwrite the input {given} with its own {pattern}; "
                    "choose another output directory"
                )
        if _inside(real_in, real_out) and not force:
            relation = "is" if real_in == real_out else "contains"
            raise UserError(
                f"{option} {out} {relation} the input {given}; choose an empty or new directory "
                "(or pass --force to add this command's files there, touching nothing else)"
            )
        if real_in.is_dir() and _inside(real_out, real_in) and not force:
            raise UserError(
                f"{option} {out} lies inside the input directory {given}, so later runs would read "
                "it as input; choose a directory outside it (or pass --force)"
            )
    if out.is_dir() and not force:
        foreign = foreign_files(out, patterns, label)
        if foreign:
            raise UserError(
                f"{option} {out} already holds files this command did not write "
                f"(e.g. {', '.join(foreign)}); choose an empty or new directory "
                "(or pass --force to write only this command's files there, touching nothing else)"
            )
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out} is not writable; choose another directory or fix its permissions")
    return out


def _previous_files(out: Path, label: str) -> list[str]:
    try:
        data = json.loads((out / manifest_name(label)).read_text())
        return [str(f) for f in data.get("files", [])]
    except (OSError, ValueError, AttributeError):
        return []


def _replace_manifest(out: Path, label: str, written: list[str], patterns: Sequence[str]) -> None:
    """Remove what the previous run wrote and this one did not; record this run's files."""
    new = set(written)
    for rel in _previous_files(out, label):
        if rel not in new and _owned(rel, patterns, label):
            with contextlib.suppress(FileNotFoundError):
                (out / rel).unlink()
    tmp = out / (manifest_name(label) + ".tmp")
    tmp.write_text(json.dumps({"files": written}, indent=0) + "\n")
    os.replace(tmp, out / manifest_name(label))


@contextlib.contextmanager
def output_dir(
    out: str | Path,
    patterns: Sequence[str],
    *,
    label: str,
    inputs: Sequence[str | Path] = (),
    force: bool = False,
    option: str = "--out",
    last: Sequence[str] = (),
) -> Iterator[Path]:
    """Yield a staging directory; on success its files replace their namesakes in `out`.

    Every staged file must match `patterns` (a bug otherwise). `last` names files moved
    after all others (a summary that marks the output complete). On an exception nothing
    in `out` changes.
    """
    out = check_output_dir(out, patterns, label=label, inputs=inputs, force=force, option=option)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob(STAGING_PREFIX + "*"):  # left by a killed run
            shutil.rmtree(old, ignore_errors=True)
        staging = out / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        staging.mkdir()
    except OSError as exc:
        raise UserError(f"cannot write into {option} {out}: {exc.strerror or exc}") from None
    try:
        yield staging
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if not p.is_dir())
        stray = [f for f in written if not _owned(f, patterns, label)]
        if stray:
            raise RuntimeError(f"staged files outside the declared outputs {list(patterns)}: {stray[:3]}")
        order = [f for f in written if f not in last] + [f for f in last if f in written]
        for rel in order:
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                raise UserError(f"cannot replace {dest}: it is a directory; move it away and re-run")
            os.replace(staging / rel, dest)
        if any(set(p) & set("*?[") for p in patterns):  # a variable set of files: track it
            _replace_manifest(out, label, written, patterns)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
