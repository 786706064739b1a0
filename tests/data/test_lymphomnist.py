"""LymphoMNIST dataset (drop-in behaviour), load_split, task views and provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lymphosort.data import layout, lymphomnist as lm
from lymphosort.data.idx import read_idx, write_idx
from lymphosort.data.info import INFO, SPLITS, TASKS
from lymphosort.errors import ConfigError, DatasetNotFoundError, IDXError
from tests.conftest import write_tiny_lymphomnist


def _raw(root: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    raw = root / "LymphoMNIST" / "raw"
    return np.asarray(read_idx(raw / f"{which}_images")), np.asarray(read_idx(raw / f"{which}_labels"))


def test_dataset_matches_original_interface(tiny_root: Path) -> None:
    ds = lm.LymphoMNIST(str(tiny_root), train=True)
    images, labels = _raw(tiny_root, "train")
    assert len(ds) == 30 and ds.classes == ["B", "T4", "T8"]
    assert ds.data.dtype == torch.uint8 and ds.data.shape == (30, 64, 64)
    assert ds.targets.dtype == torch.int64
    assert torch.equal(ds.targets, torch.from_numpy(labels.astype(np.int64)))
    img, target = ds[3]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (64, 64)
    assert isinstance(target, int) and target == int(labels[3])
    np.testing.assert_array_equal(np.asarray(img), images[3])
    assert ds.raw_folder == str(tiny_root / "LymphoMNIST" / "raw")
    assert ds.class_to_idx == {"B": 0, "T4": 1, "T8": 2}
    assert len(lm.LymphoMNIST(tiny_root, train=False)) == 24


def test_dataset_transforms_and_two_classes(tiny_root: Path) -> None:
    ds = lm.LymphoMNIST(tiny_root, train=False, num_classes=2,
                        transform=lambda im: np.asarray(im).mean(), target_transform=lambda t: t + 10)
    _, labels = _raw(tiny_root, "test")
    assert ds.classes == ["B", "T"] and len(ds) == 24
    assert torch.equal(ds.targets, torch.from_numpy((labels > 0).astype(np.int64)))
    value, target = ds[0]
    assert isinstance(value, float) and target == int(labels[0] > 0) + 10
    with pytest.raises(ConfigError, match="num_classes"):
        lm.LymphoMNIST(tiny_root, num_classes=4)


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        lm.LymphoMNIST(tmp_path)
    assert isinstance(info.value, DatasetNotFoundError)
    msg = str(info.value)
    for needle in ("lymphosort data download", "--mirror", "LYMPHOSORT_MIRROR", "lymphosort data synth",
                   str(tmp_path / "LymphoMNIST" / "raw"), "train_images"):
        assert needle in msg


def test_download_flag_calls_download_only_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_download(root: str, mirrors: object = None, **kw: object) -> Path:
        calls.append(root)
        return write_tiny_lymphomnist(Path(root), provenance={"source": "simulated"})

    monkeypatch.setattr(lm, "download", fake_download)
    assert len(lm.LymphoMNIST(tmp_path, download=True)) == 30
    lm.LymphoMNIST(tmp_path, download=True)
    assert calls == [str(tmp_path)]


def test_gz_files_are_read(tmp_path: Path) -> None:
    write_tiny_lymphomnist(tmp_path, gz=True, provenance={"source": "simulated"})
    assert len(lm.LymphoMNIST(tmp_path)) == 30


def test_provenance(tiny_root: Path, tmp_path: Path) -> None:
    assert lm.read_provenance(tiny_root) == {"source": "simulated", "preset": "test", "seed": 0}
    assert lm.read_provenance(tmp_path / "nothing") == {"source": "real"}
    bad = tmp_path / "bad"
    (bad / "LymphoMNIST").mkdir(parents=True)
    (bad / "LymphoMNIST" / "provenance.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="provenance"):
        lm.read_provenance(bad)


def test_data_from_another_simulator_version_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lymphosort.data.synth.presets import SIM_VERSION

    old, new = tmp_path / "old", tmp_path / "new"
    write_tiny_lymphomnist(old, provenance={"source": "simulated", "generator": "LymphoSim", "version": "0.1"})
    write_tiny_lymphomnist(new, provenance={"source": "simulated", "generator": "LymphoSim", "version": SIM_VERSION})
    with caplog.at_level("WARNING", logger="lymphosort.data.lymphomnist"):
        lm.read_provenance(new)
        assert not caplog.records
        lm.read_provenance(old)
        lm.read_provenance(old)
    assert len(caplog.records) == 1
    assert "LymphoSim 0.1" in caplog.text and f"renders {SIM_VERSION}" in caplog.text and "data synth" in caplog.text


def test_real_data_must_have_official_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_lymphomnist(tmp_path)  # no provenance.json: claims to be the real set
    with pytest.raises(IDXError, match="30 train images, but the official LymphoMNIST train file has 64000"):
        lm.LymphoMNIST(tmp_path)
    with pytest.raises(IDXError, match="official"):
        lm.load_split(tmp_path, "test")
    assert len(lm.load_split(tmp_path, "train", validate_official=False)) == 30
    monkeypatch.setattr(layout, "INFO", {**INFO, "n_train": 30, "n_test": 24})
    assert len(lm.LymphoMNIST(tmp_path)) == 30


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: write_idx(raw / "train_labels", np.zeros(29, np.uint8)), "30 images but .* 29 labels"),
        (lambda raw: write_idx(raw / "test_images", np.zeros((24, 32, 32), np.uint8)), "expected 64x64"),
        (lambda raw: write_idx(raw / "test_images", np.zeros((24, 64 * 64), np.uint8)), "3-D"),
        (lambda raw: write_idx(raw / "test_labels", np.zeros((24, 1), np.uint8)), "1-D"),
        (lambda raw: write_idx(raw / "train_labels", np.full(30, 3, np.uint8)), r"expected 0\.\.2"),
        (lambda raw: write_idx(raw / "train_images", np.zeros((30, 64, 64), np.float32)), "uint8"),
        (lambda raw: (raw / "test_images").write_bytes(b"\x00\x00\x08\x03"), "truncated header"),
    ],
)
def test_bad_files_raise_idx_error(tiny_root: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    mutate(tiny_root / "LymphoMNIST" / "raw")
    with pytest.raises(IDXError, match=message):
        lm.load_split(tiny_root, "train")


def test_load_split_train_is_the_train_file(tiny_root: Path) -> None:
    data = lm.load_split(tiny_root, "train")
    images, labels = _raw(tiny_root, "train")
    assert data.images.dtype == torch.uint8 and data.images.shape == (30, 64, 64)
    assert data.labels.dtype == torch.int64
    np.testing.assert_array_equal(data.images.numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert data.classes == ("B", "T4", "T8") and data.task == "3-class" and data.split == "train"
    assert data.provenance["source"] == "simulated"
    assert data.split_id.startswith(SPLITS["v1"].id + "-") and len(data.split_id) == len(SPLITS["v1"].id) + 9
    assert data.images.is_contiguous() and data.images.numpy().flags.writeable


def test_val_test_partition_the_test_file_stratified(tiny_root: Path) -> None:
    images, labels = _raw(tiny_root, "test")
    val, test = lm.load_split(tiny_root, "val"), lm.load_split(tiny_root, "test")
    rows = np.concatenate([val.indices.numpy(), test.indices.numpy()])
    assert sorted(rows.tolist()) == list(range(24))  # disjoint and complete
    assert len(val) == 6 and len(test) == 18  # 25% of 8 per class = 2 per class
    assert np.bincount(val.labels.numpy(), minlength=3).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(test.images.numpy(), images[test.indices.numpy()])
    np.testing.assert_array_equal(test.labels.numpy(), labels[test.indices.numpy()])
    # pairing survives: the marker pixel names the class
    np.testing.assert_array_equal(test.images[:, 0, 0].numpy(), test.labels.numpy() * 100)
    again = lm.load_split(tiny_root, "val")
    assert torch.equal(again.indices, val.indices) and val.split_id == test.split_id


def test_split_is_shared_across_tasks_and_views_remap(tiny_root: Path) -> None:
    base = lm.load_split(tiny_root, "test")
    for name, view in TASKS.items():
        data = lm.load_split(tiny_root, "test", task=name)
        assert data.classes == view.classes and data.task == name
        # a task's rows are exactly the 3-class rows whose on-disk label it keeps
        kept = [i for i, lab in zip(base.indices.tolist(), base.labels.tolist()) if lab in view.label_map]
        assert data.indices.tolist() == kept
        expected = [view.label_map[lab] for lab in base.labels.tolist() if lab in view.label_map]
        assert data.labels.tolist() == expected
        assert data.split_id == base.split_id
    t4 = lm.load_split(tiny_root, "train", task="t4-vs-b")
    assert 2 not in set(t4.images[:, 0, 0].tolist()) and set(t4.labels.tolist()) == {0, 1}


def test_task_labels_lookup() -> None:
    keep, mapped = lm.task_labels(np.array([2, 0, 1, 2], np.uint8), "t8-vs-b")
    assert keep.tolist() == [0, 1, 3] and mapped.tolist() == [1, 0, 1] and mapped.dtype == np.int64


def test_split_id_depends_on_label_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tiny_lymphomnist(a, seed=1, provenance={"source": "simulated"})
    write_tiny_lymphomnist(b, seed=2, provenance={"source": "simulated"})
    assert lm.load_split(a, "test").split_id != lm.load_split(b, "test").split_id
    write_tiny_lymphomnist(b, seed=1, provenance={"source": "simulated"})
    assert lm.load_split(a, "test").split_id == lm.load_split(b, "test").split_id


def test_bad_names(tiny_root: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        lm.load_split(tiny_root, "dev")
    with pytest.raises(ConfigError, match="task"):
        lm.load_split(tiny_root, "test", task="t-vs-t")
    with pytest.raises(ConfigError, match="split version"):
        lm.load_split(tiny_root, "test", split_version="v9")
    with pytest.raises(DatasetNotFoundError):
        lm.load_split(tiny_root / "elsewhere", "test")


def test_split_indices_empty_class_and_seed() -> None:
    labels = np.array([0] * 10 + [2] * 6)
    spec = SPLITS["v1"]
    val, test = lm.split_indices(labels, spec)
    assert np.bincount(labels[val], minlength=3).tolist() == [3, 0, 2]  # round(2.5), round(1.5)
    assert len(np.intersect1d(val, test)) == 0 and len(val) + len(test) == 16
    other = type(spec)(id=spec.id, val_fraction=spec.val_fraction, seed=spec.seed + 1)
    assert not np.array_equal(lm.split_indices(labels, other)[0], val)
