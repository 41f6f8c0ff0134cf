"""`vtok.data.TokenShards`: the rows of a token folder for training: every row once, token
tensors in their shape, shuffled per epoch, split across ranks and DataLoader workers."""

import json

import pytest
import torch

from tests.data.shard_helpers import make_images, read_rows, save_tokenizer
from vtok.cli import main
from vtok.data import TokenShards

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    conv = save_tokenizer(root / "conv")
    make_images(root / "in", [f"{c}/{i}.png" for c in ("a", "b") for i in range(6)])
    out = root / "out"
    assert main(["tokenize", "-t", str(conv), "-i", str(root / "in"), "-o", str(out),
                 "--size", "8", "--shard-size", "2"]) == 0
    return out


def _keys(dataset) -> list[str]:
    return [row["key"] for row in dataset]


def test_every_row_once_with_its_tensor_and_columns(folder):
    stored = {r["key"]: r for r in read_rows(folder)}
    rows = list(TokenShards(folder))
    assert sorted(r["key"] for r in rows) == sorted(stored)
    for row in rows:
        assert row["tokens"].dtype == torch.int64 and row["tokens"].shape == (4, 4)
        assert row["tokens"].flatten().tolist() == stored[row["key"]]["tokens"]
        assert row["label"] == (row["key"][0] == "b")
        assert row["class_name"] == row["key"][0]
    picked = next(iter(TokenShards(folder, columns=["label"])))
    assert set(picked) == {"tokens", "label"}


def test_shard_order_is_shuffled_per_epoch_and_seeded(folder):
    data = TokenShards(folder, seed=3)
    first = _keys(data)
    assert _keys(TokenShards(folder, seed=3)) == first
    data.set_epoch(1)
    assert _keys(data) != first and sorted(_keys(data)) == sorted(first)
    plain = TokenShards(folder, shuffle=False, shuffle_rows=False)
    assert _keys(plain) == [r["key"] for r in _manifest_order(folder)]


def _manifest_order(folder):
    import pyarrow.parquet as pq

    manifest = json.loads((folder / "manifest.json").read_text())
    return [r for s in manifest["shards"] for r in pq.read_table(folder / s["file"]).to_pylist()]


@pytest.mark.parametrize("world", [2, 5, 8])  # 6 shards: by shards, and by rows past 6 parts
def test_ranks_split_the_rows(folder, world, monkeypatch):
    parts = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        parts.append(_keys(TokenShards(folder, seed=1)))
    everything = [k for part in parts for k in part]
    assert sorted(everything) == sorted(_keys(TokenShards(folder, rank=0, world_size=1)))
    assert all(parts)


def test_dataloader_workers_split_the_rows(folder):
    loader = torch.utils.data.DataLoader(TokenShards(folder), batch_size=4, num_workers=2)
    batches = list(loader)
    assert batches[0]["tokens"].shape == (4, 4, 4)
    assert sorted(k for b in batches for k in b["key"]) == sorted(_keys(TokenShards(folder)))


def test_an_unfinished_folder_is_refused(folder, tmp_path):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="has not finished"):
        TokenShards(tmp_path)
