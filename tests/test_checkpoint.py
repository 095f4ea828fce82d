"""Checkpoints: atomic writes, refusal of corrupt, foreign and malicious files."""
import os
import pickle

import pytest
import torch

from enas.runs.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from enas.errors import UserError


def test_round_trip(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, "search", {"w": torch.arange(3), "pos": {"epoch": 2}})
    data = load_checkpoint(p, kind="search")
    assert data["pos"]["epoch"] == 2 and torch.equal(data["w"], torch.arange(3))
    assert [f for f in os.listdir(tmp_path)] == ["c.pt"]  # no temp file left


def test_truncated_and_garbage_are_refused_and_old_file_survives_failed_write(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, "search", {"x": torch.ones(1000)})
    good = p.read_bytes()
    (tmp_path / "t.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "t.pt")
    (tmp_path / "g.pt").write_bytes(b"hello")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "g.pt")


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "c.pt"
    save_checkpoint(target, "search", {"x": torch.ones(10)})
    good = target.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("enas.runs.checkpoint.os.fsync", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint(target, "search", {"x": torch.zeros(10)})
    monkeypatch.undo()
    assert target.read_bytes() == good
    assert os.listdir(tmp_path) == ["c.pt"]


def test_foreign_wrong_version_and_wrong_kind(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not an enas checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "enas-checkpoint", "version": 999, "kind": "search"}, tmp_path / "v.pt")
    with pytest.raises(UserError, match="version 999"):
        load_checkpoint(tmp_path / "v.pt")
    save_checkpoint(tmp_path / "k.pt", "train", {})
    with pytest.raises(UserError, match="expected 'search'"):
        load_checkpoint(tmp_path / "k.pt", kind="search")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running(tmp_path):
    _Evil.marker = str(tmp_path / "pwned")
    p = tmp_path / "evil.pt"
    torch.save({"format": "enas-checkpoint", "version": 1, "kind": "search", "x": _Evil()}, p)
    with pytest.raises(UserError, match="refused, not executed|corrupt"):
        load_checkpoint(p)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(UserError):
        load_checkpoint(raw)
    assert not (tmp_path / "pwned").exists()


def test_atomic_text(tmp_path):
    atomic_write_text(tmp_path / "a" / "b.json", "{}")
    assert (tmp_path / "a" / "b.json").read_text() == "{}"
