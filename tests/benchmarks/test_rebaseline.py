"""The re-baseline chain: steps in an order their inputs allow, resumable, failures loud."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import rebaseline  # noqa: E402


def _closure(name: str, by_name: dict[str, rebaseline.Step]) -> set[str]:
    out: set[str] = set()
    todo = list(by_name[name].needs)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(by_name[n].needs)
    return out


def test_every_step_runs_after_what_it_reads() -> None:
    chain = rebaseline.steps()
    names = [s.name for s in chain]
    assert len(names) == len(set(names))
    by_name = {s.name: s for s in chain}
    for i, s in enumerate(chain):
        assert all(names.index(n) < i for n in s.needs), f"{s.name} runs before what it needs"
        # a step that reads another step's run folder (or data root) must need that step
        for other in chain:
            if other is s:
                continue
            folder = str(Path(other.output).parent)
            if other.name == "data":
                folder = rebaseline.DATA
            reads = any(tok == folder or tok.startswith(folder + "/") or tok.endswith("=" + folder) or
                        ("," + folder) in tok or ("=" + folder + ",") in tok for tok in s.argv[1:])
            if reads and folder.startswith(("runs/", "data/")):
                assert other.name in _closure(s.name, by_name) | {s.name}, f"{s.name} reads {folder} of {other.name}"


def test_runs_a_step_once_and_stops_on_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rebaseline, "ROOT", tmp_path)
    ok = rebaseline.Step("ok", ("python", "-c", "open('made.txt', 'w').write('x')"), "made.txt")
    bad = rebaseline.Step("bad", ("python", "-c", "raise SystemExit(3)"), "never.txt", ("ok",))
    monkeypatch.setattr(rebaseline, "steps", lambda: [ok, bad])
    monkeypatch.setattr(sys, "argv", ["rebaseline.py"])
    with pytest.raises(SystemExit, match="step bad failed"):
        rebaseline.main()
    assert (tmp_path / "made.txt").is_file() and rebaseline._marker(ok).is_file()
    assert not rebaseline._marker(bad).exists()
    (tmp_path / "made.txt").unlink()  # a done step is not run again
    with pytest.raises(SystemExit, match="step bad failed"):
        rebaseline.main()
    assert not (tmp_path / "made.txt").exists()
    monkeypatch.setattr(sys, "argv", ["rebaseline.py", "--list"])
    rebaseline.main()
    out = capsys.readouterr().out
    assert "done  ok" in out and "todo  bad" in out


def test_unknown_step_names_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["rebaseline.py", "--only", "nope"])
    with pytest.raises(SystemExit, match="unknown step 'nope'; steps: data, realism"):
        rebaseline.main()


def test_a_step_another_chain_runs_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(rebaseline, "ROOT", tmp_path)
    busy = rebaseline.Step("busy", ("python", "-c", "open('busy.txt', 'w')"), "busy.txt")
    free = rebaseline.Step("free", ("python", "-c", "open('free.txt', 'w')"), "free.txt")
    monkeypatch.setattr(rebaseline, "steps", lambda: [busy, free])
    monkeypatch.setattr(sys, "argv", ["rebaseline.py"])
    rebaseline._lock(busy).mkdir(parents=True)  # the other chain holds it
    rebaseline.main()
    assert "busy: running in another chain" in capsys.readouterr().out
    assert not (tmp_path / "busy.txt").exists() and (tmp_path / "free.txt").is_file()
    assert not rebaseline._lock(free).exists()  # released after the run


def test_an_interrupted_training_step_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rebaseline, "ROOT", tmp_path)
    argv = ["lymphosort", "distill", "--teacher", "t", "--out", "runs/x", "--epochs", "8"]
    assert rebaseline._resumed(argv) == argv  # nothing to resume: a fresh run
    (tmp_path / "runs/x").mkdir(parents=True)
    (tmp_path / "runs/x/last.ckpt").write_bytes(b"")
    assert rebaseline._resumed(argv) == [*argv, "--resume"]
    other = ["python", "benchmarks/seed_table.py", "--out", "runs/x"]
    assert rebaseline._resumed(other) == other  # only training commands take --resume


def test_a_step_waiting_on_another_chain_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the other chain makes x, this chain runs what does not need x instead of idling."""
    monkeypatch.setattr(rebaseline, "ROOT", tmp_path)
    x = rebaseline.Step("x", ("python", "-c", "pass"), "x.txt")
    late = rebaseline.Step("late", ("python", "-c", "pass"), "late.txt", ("x",))
    free = rebaseline.Step("free", ("python", "-c", "pass"), "free.txt")
    by_name = {s.name: s for s in (x, late, free)}
    rebaseline._lock(x).mkdir(parents=True)  # the other chain is running x
    pending = [late, free]
    assert rebaseline._next(pending, by_name) is free
    pending.remove(free)
    assert rebaseline._next(pending, by_name) is None  # only `late` is left, and x is not done yet
    rebaseline._marker(x).write_text("done")
    rebaseline._lock(x).rmdir()
    assert rebaseline._next(pending, by_name) is late
    rebaseline._marker(x).unlink()  # x failed over there: nobody makes it, so the chain stops
    with pytest.raises(SystemExit, match="late needs x"):
        rebaseline._next(pending, by_name)
