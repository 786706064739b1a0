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


def test_every_run_feeds_a_result() -> None:
    """The ends of the chain are result tables: a run no table reads would be made on every new
    machine and never land."""
    chain = rebaseline.steps()
    by_name = {s.name: s for s in chain}
    results = [s for s in chain if s.output.startswith(rebaseline.RES + "/")]
    fed = set().union(*(_closure(s.name, by_name) for s in results))
    assert {s.name for s in chain if s not in results} <= fed


def test_a_landed_table_is_done_and_only_missing_tables_get_their_runs_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """On a new machine the runs are gone; a table of this version already landed is not made
    again, nor are the runs only it needs; a missing table gets its runs made again."""
    monkeypatch.setattr(rebaseline, "ROOT", tmp_path)
    res, v = rebaseline.RES, rebaseline.V

    def make(name: str, out: str, *needs: str) -> rebaseline.Step:
        code = f"import pathlib; p = pathlib.Path({out!r}); p.parent.mkdir(parents=True, exist_ok=True); p.write_text('x')"
        return rebaseline.Step(name, ("python", "-c", code), out, needs)

    steps = [make("data", "data/x"), make("train-a", "runs/a/m.json", "data"), make("train-b", "runs/b/m.json", "data"),
             make("table-a", f"{res}/a_v{v}.json", "train-a"), make("table-b", f"{res}/b_v{v}.json", "train-b"),
             make("fixed", f"{res}/fixed.json", "data"), make("train-c", "runs/c/m.json", "data")]
    steps.append(rebaseline.Step("speed", ("python", "-c", "pass"), f"{res}/speed_v{v}.json", ("train-c",), timing=True))
    monkeypatch.setattr(rebaseline, "steps", lambda: steps)
    (tmp_path / res).mkdir(parents=True)
    (tmp_path / res / f"a_v{v}.json").write_text("{}")  # landed by an earlier session
    (tmp_path / res / "fixed.json").write_text('{"data": "LymphoSim 0.9 default"}')  # an older version's
    monkeypatch.setattr(sys, "argv", ["rebaseline.py", "--list"])
    rebaseline.main()
    states = dict(line.split()[:2][::-1] for line in capsys.readouterr().out.splitlines())
    assert states == {"data": "todo", "train-a": "skip", "train-b": "todo", "table-a": "done", "table-b": "todo",
                      "fixed": "todo", "train-c": "skip", "speed": "skip"}  # timing rows want --timing
    monkeypatch.setattr(sys, "argv", ["rebaseline.py"])
    rebaseline.main()
    assert not (tmp_path / "runs/a").exists() and not (tmp_path / "runs/c").exists()
    assert (tmp_path / "runs/b/m.json").is_file()
    assert (tmp_path / res / f"b_v{v}.json").is_file() and (tmp_path / res / "fixed.json").read_text() == "x"
    monkeypatch.setattr(sys, "argv", ["rebaseline.py", "--only", "train-a"])  # --only runs what it names
    rebaseline.main()
    assert (tmp_path / "runs/a/m.json").is_file()
