"""Harvest's numbers on their way to web's metrics listener (docs/observability.md).

Harvest runs under its own uid and listens on nothing; web alone serves metrics. Every
``SNAPSHOT_SECONDS`` harvest writes what it counted to ``<runtime_dir>/harvest-metrics/
harvest.json``: a temporary file renamed over the last one, so a reader sees one whole
snapshot or the one before. The directory is harvest's, group web's, 0750, so no other
user can read it; the file itself is 0644 (it is not written as web's group).

Web reads the file at each scrape and trusts nothing in it. It is dropped, and web's
``inboxlens_harvest_snapshot_state`` gauge says why, when it is missing, unreadable, not a
regular file, over ``MAX_SNAPSHOT_BYTES``, not this shape, or written more than ``STALE_SECONDS``
ago (harvest stopped or hangs)::

    {"format": FORMAT, "written_at": <Unix time>, "samples": [[name, {label: value}, number], ...]}

Each sample must belong to a family of ``FAMILIES`` (its name, or the name with the suffix
its kind allows), carry exactly the family's labels (and ``le`` for a bucket, one of
``DURATION_BUCKETS``), label values of a few lower-case letters, digits and ``_``, and a
finite number that is not negative; at most ``MAX_SAMPLES``. This module is standard
library only: the supervisor imports it for the directory's path.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from inboxlens.vault.client import VaultClient

FORMAT = "inboxlens-harvest-metrics/1"
SNAPSHOT_NAME = "harvest.json"
SNAPSHOT_SECONDS = 5.0  # how often harvest writes it
STALE_SECONDS = 60.0  # twelve missed writes: harvest is gone or stuck
MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_SAMPLES = 1000
# Seconds: a sync of a quiet mailbox takes well under one, a first sync of a big one minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
STATES = ("ok", "missing", "unreadable", "too_large", "malformed", "stale")
_LABEL_VALUE = re.compile(r"[a-z][a-z0-9_]{0,39}")

Labels = dict[str, str]
Sample = tuple[str, Labels, float]


@dataclass(frozen=True)
class Family:
    kind: str  # "counter" or "histogram"
    labels: tuple[str, ...]
    help: str


# What harvest may report; the vault's two families are counted by web's vault client too.
FAMILIES: dict[str, Family] = {
    "inboxlens_harvest_syncs": Family("counter", ("outcome",), "Account syncs finished: ok, failed (before "
                                      "folding), fold_failed (stored, folding failed) or interrupted."),
    "inboxlens_harvest_sync_duration_seconds": Family("histogram", (), "How long account syncs took."),
    "inboxlens_harvest_messages": Family("counter", (), "New messages stored by syncs."),
    "inboxlens_harvest_folds": Family("counter", ("outcome",), "Folds of new rows into rollups: ok or failed."),
    "inboxlens_harvest_fold_duration_seconds": Family("histogram", (), "How long folds took."),
    "inboxlens_vault_requests": Family("counter", ("process", "op", "outcome"), "Calls to the vault by the "
                                       "calling process, operation and answer: ok, the vault's error code, "
                                       "unavailable or protocol_error."),
    "inboxlens_vault_refreshes": Family("counter", ("process",), "Vault get answers carrying an access token "
                                        "this process had not had (the vault refreshed it; after a restart, "
                                        "the first one per account may have been cached)."),
}


def snapshot_dir(runtime_dir: Path) -> Path:
    """Harvest writes here, web reads: owner harvest, group web, 0750 (the supervisor makes it)."""
    return runtime_dir / "harvest-metrics"


def vault_samples(vault: VaultClient, process: str) -> list[Sample]:
    """What ``process``'s vault client counted, as samples of the two vault families."""
    samples: list[Sample] = [("inboxlens_vault_requests_total", {"process": process, "op": op, "outcome": outcome},
                              float(n)) for (op, outcome), n in sorted(vault.outcomes.items())]
    samples.append(("inboxlens_vault_refreshes_total", {"process": process}, float(vault.refreshes)))
    return samples


def write_snapshot(directory: Path, samples: Iterable[Sample], now: float) -> None:
    """Replace the snapshot in one rename; OSError when the directory is missing or not ours."""
    body = json.dumps({"format": FORMAT, "written_at": now, "samples": [list(s) for s in samples]},
                      separators=(",", ":")).encode()
    if len(body) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"the metrics snapshot would be {len(body)} bytes, over {MAX_SNAPSHOT_BYTES}")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".harvest-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # the directory, not the file, keeps others out
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(temporary, directory / SNAPSHOT_NAME)
    except BaseException:
        os.unlink(temporary)
        raise


def remove_leftovers(directory: Path) -> None:
    """Temporary files of a harvest killed mid-write (at start: no write is under way then)."""
    for leftover in directory.glob(".harvest-*.tmp"):
        leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class Snapshot:
    state: str  # one of STATES; samples only when "ok"
    age: float | None = None  # seconds since harvest wrote it, when that is known
    samples: tuple[Sample, ...] = ()


def read_snapshot(directory: Path, now: float) -> Snapshot:
    """Harvest's last snapshot, checked; anything wrong gives a state and no samples."""
    try:
        raw = _read_bounded(directory / SNAPSHOT_NAME)
    except FileNotFoundError:
        return Snapshot("missing")
    except PermissionError:  # the directory's group is not web's (docs/observability.md)
        return Snapshot("unreadable")
    except OSError:  # a symbolic link or not a regular file: not what harvest writes
        return Snapshot("malformed")
    if len(raw) > MAX_SNAPSHOT_BYTES:
        return Snapshot("too_large")
    try:
        written_at, samples = parse_snapshot(raw)
    except ValueError:
        return Snapshot("malformed")
    age = now - written_at
    if not -STALE_SECONDS <= age <= STALE_SECONDS:  # stopped long ago, or a clock far off
        return Snapshot("stale", age)
    return Snapshot("ok", age, samples)


def _read_bounded(path: Path) -> bytes:
    """At most one byte over the cap; never follows a link or blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_SNAPSHOT_BYTES + 1)
    finally:
        os.close(fd)


def parse_snapshot(raw: bytes) -> tuple[float, tuple[Sample, ...]]:
    """(written_at, samples), or ValueError naming the first thing wrong."""
    document = json.loads(raw)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(document, dict) or set(document) != {"format", "written_at", "samples"}:
        raise ValueError("not a snapshot object")
    if document["format"] != FORMAT:
        raise ValueError(f"format is not {FORMAT}")
    written_at, samples = document["written_at"], document["samples"]
    if not _number(written_at) or not isinstance(samples, list) or len(samples) > MAX_SAMPLES:
        raise ValueError("written_at or samples malformed")
    return float(written_at), tuple(_sample(s) for s in samples)


def _sample(item: Any) -> Sample:
    if not isinstance(item, list) or len(item) != 3:
        raise ValueError("a sample is [name, labels, value]")
    name, labels, value = item
    base = family_name(name) if isinstance(name, str) else None
    if base is None or not isinstance(labels, dict) or not _number(value) or value < 0:
        raise ValueError(f"sample {str(name)[:60]!r}: unknown, or labels or value malformed")
    family = FAMILIES[base]
    wanted = set(family.labels) | ({"le"} if name.endswith("_bucket") else set())
    if set(labels) != wanted or not all(_label_value(k, v) for k, v in labels.items()):
        raise ValueError(f"sample {name!r}: labels are not exactly {sorted(wanted)} with plain values")
    return name, dict(labels), float(value)


def family_name(sample_name: str) -> str | None:
    """The family in ``FAMILIES`` a sample belongs to: its name plus a suffix its kind has."""
    for name, family in FAMILIES.items():
        if sample_name.startswith(name) and sample_name[len(name):] in SUFFIXES[family.kind]:
            return name
    return None


def _label_value(key: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if key == "le":
        return value == "+Inf" or value in {str(b) for b in DURATION_BUCKETS}
    if key == "process":
        return value == "harvest"  # a snapshot speaks for harvest only
    return _LABEL_VALUE.fullmatch(value) is not None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
