"""The feature store's hand-written Zarr v3 files: the bytes zarr itself writes, readable by zarr."""

from __future__ import annotations

import json

import numpy as np
import pytest

from koemorph.data.store import TIME_CHUNK, GroupWriter, array_nodes, open_arrays, read_group_attrs


def zarr_nodes(data: np.ndarray, attrs: dict) -> dict[str, bytes]:
    """What zarr-python writes for the same array (chunks of TIME_CHUNK rows, blosc zstd 3 shuffle)."""
    import zarr
    from zarr.codecs import BloscCodec
    from zarr.storage import MemoryStore

    nodes: dict = {}
    rows = min(TIME_CHUNK, max(1, data.shape[0]))
    zarr.create_array(
        MemoryStore(nodes),
        data=data,
        chunks=(rows, data.shape[1]),
        attributes=attrs,
        compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    )
    return {key: buf.to_bytes() for key, buf in nodes.items()}


@pytest.mark.parametrize("frames", [1, 240, TIME_CHUNK, TIME_CHUNK + 1, 2 * TIME_CHUNK + 300])
def test_array_files_are_the_bytes_zarr_writes(frames):
    data = np.random.default_rng(frames).normal(size=(frames, 7)).astype(np.float32)
    attrs = {"first_valid_frame": 9, "windows": 3}
    ours, theirs = array_nodes(data, attrs), zarr_nodes(data, attrs)
    chunks = [f"c/{i}/0" for i in range(-(-frames // TIME_CHUNK))]
    assert sorted(ours) == sorted(theirs) == sorted(["zarr.json", *chunks])
    assert json.loads(ours["zarr.json"]) == json.loads(theirs["zarr.json"])
    for key in ours:
        if key != "zarr.json":
            assert ours[key] == theirs[key], key  # same codec, same padding of the edge chunk


def test_group_reads_back_with_zarr_and_keeps_arrays(tmp_path):
    store = tmp_path / "s.zarr"
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(1500, 80)).astype(np.float32)
    targets = rng.uniform(size=(1500, 52)).astype(np.float32)
    with GroupWriter(store, "a") as writer:
        writer.write("mel", mel)
        writer.write("targets", targets, {"note": "x"})
        writer.write("egemaps", np.zeros((0, 88), np.float32))
        writer.publish({"id": "a", "num_frames": 1500})
    arrays = open_arrays(store, "a")
    np.testing.assert_array_equal(arrays["mel"][:], mel)
    np.testing.assert_array_equal(arrays["targets"][1000:1500], targets[1000:])
    assert arrays["targets"].attrs["note"] == "x" and arrays["egemaps"].shape == (0, 88)
    assert read_group_attrs(store, "a") == {"id": "a", "num_frames": 1500, "complete": True}

    new_mel = mel + 1
    with GroupWriter(store, "a", keep=("targets",)) as writer:  # only the mel changes
        writer.write("mel", new_mel)
        writer.publish({"id": "a", "num_frames": 1500, "round": 2})
    arrays = open_arrays(store, "a")
    assert sorted(arrays) == ["mel", "targets"]
    np.testing.assert_array_equal(arrays["mel"][:], new_mel)
    np.testing.assert_array_equal(arrays["targets"][:], targets)
    assert read_group_attrs(store, "a")["round"] == 2


def test_a_failed_write_leaves_no_group_and_no_staging(tmp_path):
    store = tmp_path / "s.zarr"
    with pytest.raises(ValueError), GroupWriter(store, "b") as writer:
        writer.write("mel", np.ones((10, 80), np.float32))
        writer.publish({"id": "b", "bad": float("nan")})  # not JSON: refused before anything moves
    assert read_group_attrs(store, "b") is None and not (store / "b").exists()
    assert not any((store / "_staging").glob("b.*"))
