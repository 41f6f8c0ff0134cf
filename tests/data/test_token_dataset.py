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


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """7 rows in shards of 3, 3 and 1 rows."""
    root = tmp_path_factory.mktemp("uneven")
    conv = save_tokenizer(root / "conv")
    make_images(root / "in", [f"{i}.png" for i in range(7)])
    out = root / "out"
    assert main(["tokenize", "-t", str(conv), "-i", str(root / "in"), "-o", str(out),
                 "--size", "8", "--shard-size", "3"]) == 0
    assert [s["rows"] for s in json.loads((out / "manifest.json").read_text())["shards"]] == [
        3, 3, 1]
    return out


def _rank_keys(folder, world, epoch=0, workers=0, **options) -> list[list[str]]:
    parts = []
    for rank in range(world):
        data = TokenShards(folder, seed=1, rank=rank, world_size=world, **options)
        data.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers)
        parts.append([row["key"] for row in loader])
    return parts


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_equal_rows_from_uneven_shards(uneven, world, drop_last):
    everything = sorted(_keys(TokenShards(uneven)))
    for epoch, workers in ((0, 0), (1, 2)):
        parts = _rank_keys(uneven, world, epoch, workers, drop_last=drop_last)
        per = len(everything) // world if drop_last else -(-len(everything) // world)
        assert [len(p) for p in parts] == [per] * world  # no rank waits for another
        assert len(TokenShards(uneven, rank=0, world_size=world, drop_last=drop_last)) == per
        seen = [k for p in parts for k in p]
        if drop_last:  # a few rows left out of the epoch, none twice
            assert len(set(seen)) == len(seen) and set(seen) < set(everything)
        else:  # every row, and the padding repeats rows from the start of the order
            assert set(seen) == set(everything)
            assert len(seen) - len(everything) == per * world - len(everything)


@pytest.mark.parametrize("world", [2, 5, 8])  # 12 rows in 6 shards: fewer and more parts
def test_ranks_split_the_rows(folder, world, monkeypatch):
    parts = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        parts.append(_keys(TokenShards(folder, seed=1)))
    everything = _keys(TokenShards(folder, rank=0, world_size=1))
    assert {len(p) for p in parts} == {-(-12 // world)}
    assert set(k for part in parts for k in part) == set(everything)
    if 12 % world == 0:
        assert sorted(k for part in parts for k in part) == sorted(everything)


def test_rank_batches_match_with_dataloader_workers(uneven):
    """DataLoader workers batch apart: the ranks must still give the same batch count."""
    counts = set()
    for rank in range(3):
        data = TokenShards(uneven, rank=rank, world_size=3)
        loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
        counts.add(len(list(loader)))
    assert counts == {2}  # 3 rows a rank: 2 + 1 over two workers, one batch each


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
