"""Calibration files: memory mapping, naming, slicing, re-chunking, synthetic inputs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from actaudit.data import (
    InputSpec,
    cap_samples,
    from_loader,
    load_calib_file,
    parse_input_shapes,
    rechunk,
    synthetic,
)
from actaudit.errors import ActauditError, CalibrationError, InputError


def _collect(src):
    return list(src.batches())


def test_npy_is_memory_mapped_and_sliced(tmp_path) -> None:
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "x.npy", x)
    src = load_calib_file(tmp_path / "x.npy", batch_size=4)
    assert src.total_samples == 10
    batches = _collect(src)
    assert [b[0][0].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0][0] for b in batches]), x)


def test_npz_stored_members_are_memory_mapped(tmp_path, monkeypatch) -> None:
    a = np.random.default_rng(0).standard_normal((7, 2)).astype(np.float32)
    b = np.arange(7, dtype=np.int64)
    np.savez(tmp_path / "d.npz", image=a, ids=b)
    from actaudit.data import arrays as data_mod

    members = data_mod.npz_members(tmp_path / "d.npz")
    assert isinstance(members["image"], np.memmap)
    np.testing.assert_array_equal(members["image"], a)
    np.testing.assert_array_equal(members["ids"], b)
    np.savez_compressed(tmp_path / "c.npz", image=a)
    np.testing.assert_array_equal(data_mod.npz_members(tmp_path / "c.npz")["image"], a)
    src = load_calib_file(tmp_path / "d.npz", batch_size=5)
    first = _collect(src)[0]
    assert set(first[1]) == {"image", "ids"} and first[1]["image"].shape == (5, 2)


def test_npz_disagreeing_sample_counts(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", a=np.zeros((3, 2)), b=np.zeros((4, 2)))
    with pytest.raises(CalibrationError, match="disagree"):
        load_calib_file(tmp_path / "d.npz", 2)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "is empty"), (b"not a numpy file", "cannot read|not a plain")],
)
def test_bad_npy(tmp_path, content, match) -> None:
    p = tmp_path / "x.npy"
    p.write_bytes(content)
    with pytest.raises(ActauditError, match=match):
        load_calib_file(p, 2)


def test_object_arrays_are_refused(tmp_path) -> None:
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationError):
        load_calib_file(tmp_path / "o.npy", 2)


def test_not_a_zip_npz(tmp_path) -> None:
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match=r"not a valid \.npz"):
        load_calib_file(tmp_path / "x.npz", 2)
    assert not zipfile.is_zipfile(tmp_path / "x.npz")


def test_missing_and_unknown_type(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_calib_file(tmp_path / "nope.npy", 2)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InputError, match="unknown type"):
        load_calib_file(tmp_path / "x.csv", 2)


def test_cap_and_rechunk() -> None:
    batches = [([np.arange(5)], {}), ([np.arange(5, 8)], {})]
    capped = list(cap_samples(iter(batches), 6))
    assert [len(b[0][0]) for b in capped] == [5, 1]
    chunks = list(rechunk(iter(batches), 3))
    assert [c[0][0].tolist() for c in chunks] == [[0, 1, 2], [3, 4, 5], [6, 7]][:2]


def test_input_shapes() -> None:
    assert parse_input_shapes(["1x3x8x8", "ids=2x16"]) == {None: (1, 3, 8, 8), "ids": (2, 16)}
    for bad in ["1x3xa", "x=", "0x3"]:
        with pytest.raises(InputError):
            parse_input_shapes([bad])


def test_synthetic_is_seeded_and_typed() -> None:
    specs = [InputSpec("x", (None, 3), "float32"), InputSpec("ids", (None, 4), "int64")]
    a = _collect(synthetic(specs, {}, samples=10, batch_size=4, seed=3))
    b = _collect(synthetic(specs, {}, samples=10, batch_size=4, seed=3))
    assert [x[0][0].shape for x in a] == [(4, 3), (4, 3), (2, 3)]
    assert a[0][0][1].dtype == np.int64
    np.testing.assert_array_equal(a[2][0][0], b[2][0][0])


def test_synthetic_needs_a_shape() -> None:
    with pytest.raises(InputError, match="--input-shape x=DIMS"):
        synthetic([InputSpec("x")], {}, samples=4, batch_size=2, seed=0)


def test_synthetic_refuses_huge_requests() -> None:
    with pytest.raises(InputError, match="exceed a quarter of the available memory"):
        synthetic([InputSpec("x")], {None: (1, 4096, 4096, 4096)}, samples=4, batch_size=2, seed=0)


def test_loader(tmp_path) -> None:
    f = tmp_path / "loader.py"
    f.write_text(
        "import numpy as np\ndef batches():\n    for i in range(3):\n        yield np.full((2, 3), i, dtype=np.float32)\n"
    )
    src = from_loader(f"{f}:batches")
    got = _collect(src)
    assert len(got) == 3 and got[2][0][0][0, 0] == 2
    with pytest.raises(InputError, match="no callable"):
        from_loader(f"{f}:nothing")


def test_synthetic_keeps_declared_scalars_and_fixed_states() -> None:
    specs = [
        InputSpec("audio", (None, 512), "float32"),
        InputSpec("state", (2, 1, 128), "float32"),
        InputSpec("sr", (), "int64"),
    ]
    [(arrays, _)] = _collect(synthetic(specs, {}, samples=4, batch_size=4, seed=0))
    assert [a.shape for a in arrays] == [(4, 512), (2, 1, 128), ()]


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) // 1024


def test_streaming_a_large_npy_keeps_memory_flat(tmp_path) -> None:
    """Pages read through a mapping would stay resident; batches are read with pread instead."""
    path = tmp_path / "big.npy"
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(4000, 3, 64, 64))  # 190 MB
    rows[::100] = 1.0
    rows.flush()
    del rows
    src = load_calib_file(path, batch_size=64)
    before = _rss_mb()
    total = 0.0
    for (x,), _ in src.batches():
        total += float(x[:, 0, 0, 0].sum())
    assert total == 40.0
    assert _rss_mb() - before < 30
