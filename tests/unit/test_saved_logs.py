"""A function's saved logs (what its retired pods printed) are bounded and rotated."""

from __future__ import annotations

from pathlib import Path

from allinone.kubelet.kubelet import append_bounded


def test_saved_logs_rotate_and_stay_bounded(tmp_path: Path) -> None:
    log = tmp_path / "f.log"
    for i in range(50):  # fifty pods, each having printed 40 bytes
        append_bounded(log, f"pod {i:02d} " + "x" * 32, 100)
    assert log.stat().st_size <= 100
    assert (tmp_path / "f.log.1").stat().st_size <= 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.log", "f.log.1"]
    assert log.read_text().splitlines()[-1].startswith("pod 49 ")  # the newest is kept


def test_one_huge_text_keeps_its_end(tmp_path: Path) -> None:
    log = tmp_path / "f.log"
    append_bounded(log, "start " + "y" * 1000 + " end", 100)
    text = log.read_text()
    assert len(text.encode()) == 100 and text.endswith(" end\n")
