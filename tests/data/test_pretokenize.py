"""`vtok tokenize`: rows, round trips, carried columns, augmentation, refusals, bad input."""

import csv
import errno
import io
import json
import tarfile

import numpy as np
import pytest
import torch

from tests.data.shard_helpers import make_images, read_rows, save_tokenizer, shard_files
from vtok.cli import main
from vtok.data.images import read_image
from vtok.data.pretokenize import TokenizeOptions, make_views
from vtok.models import Tokenizer, Tokens

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tok") / "conv")


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """cat/0..2.png, dog/0..2.png and a file that is no image."""
    root = tmp_path_factory.mktemp("classes")
    make_images(root, [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3)])
    (root / "dog" / "9.png").write_bytes(b"not a png")
    return root


def tokenize(*args):
    return main(["tokenize", *map(str, args)])


def test_rows_round_trip_against_encode(conv, classes, tmp_path, capsys):
    out = tmp_path / "out"
    assert tokenize("-t", conv, "-i", classes, "-o", out, "--size", 16, "--hflip",
                    "--shard-size", 4, "--batch-size", 3) == 0
    assert "tokenized 6 of 7 items into 12 rows in 2 shards" in capsys.readouterr().out
    tok = Tokenizer.from_pretrained(conv)
    rows = read_rows(out)
    assert [(r["key"], r["view"], r["flip"]) for r in rows] == [
        (f"{c}/{i}.png", "center", flip) for c in ("cat", "dog") for i in range(3)
        for flip in (False, True)]
    schema = pq.read_schema(out / "shard-00000.parquet")
    assert schema.field("tokens").type == pa.list_(pa.uint8())  # 16 codes fit a byte
    for row in rows:
        assert (row["label"], row["class_name"]) == (row["key"][:3] == "dog", row["key"][:3])
        image = read_image(classes / row["key"])
        assert (row["source_height"], row["source_width"]) == tuple(image.shape[1:])
        views = make_views(image[None], TokenizeOptions(size=16, hflip=True))
        view = next(v for name, flip, v in views if flip == row["flip"])[0]
        expected = tok.encode(view[None])
        ids = torch.tensor(row["tokens"]).reshape(1, *row["token_shape"])
        assert torch.equal(ids, expected.indices)
        assert (row["height"], row["width"], row["frames"], row["fps"]) == (16, 16, 1, 0.0)
        assert row["tokenizer_id"] == tok.tokenizer_id
        stored = Tokens(ids, tuple(row["token_shape"]), (16, 16), row["tokenizer_id"],
                        row["num_tokens"])
        assert torch.equal(tok.decode(stored), tok.decode(expected))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["items"] == 7 and manifest["rows"] == 12
    assert manifest["tokenizer"]["id"] == tok.tokenizer_id
    assert manifest["tokenizer"]["config"] == json.loads(json.dumps(tok.config.to_dict()))
    assert manifest["classes"] == ["cat", "dog"]
    assert [s["rows"] for s in manifest["shards"]] == [8, 4]
    from vtok.files import file_sha256

    for shard in manifest["shards"]:
        assert file_sha256(out / shard["file"]) == shard["sha256"]
    [skip] = manifest["skipped"]
    assert skip["key"] == "dog/9.png" and "not a readable image" in skip["reason"]
    assert shard_files(out) == ["manifest.json", "shard-00000.parquet", "shard-00001.parquet"]


def test_hugging_face_datasets_reads_the_shards(conv, classes, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    assert tokenize("-t", conv, "-i", classes, "-o", out, "--size", 8, "--shard-size", 4) == 0
    loaded = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == 6
    ours = {r["key"]: r["tokens"] for r in read_rows(out)}
    assert {r["key"]: r["tokens"] for r in loaded} == ours
    assert loaded.features["tokens"].feature.dtype == "uint8"


def test_manifests_carry_their_columns(conv, tmp_path):
    images = make_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    records = [{"path": "img/a.png", "label": 3, "caption": "a red thing"},
               {"path": "img/b.png", "label": 5, "caption": "b"},
               {"path": str(images[2]), "label": 7, "caption": None}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with open(tmp_path / "m.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "caption"])
        writer.writeheader()
        writer.writerows(records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "m.parquet")
    for name in ("m.jsonl", "m.csv", "m.parquet"):
        out = tmp_path / f"out-{name}"
        assert tokenize("-t", conv, "-i", tmp_path / name, "-o", out, "--size", 8) == 0
        rows = sorted(read_rows(out), key=lambda r: r["label"])
        assert [(r["label"], r["caption"] or None) for r in rows] == [
            (3, "a red thing"), (5, "b"), (7, None)], name
        assert pq.read_schema(out / "shard-00000.parquet").field("label").type == pa.int64()


def test_webdataset_tar_shards(conv, tmp_path):
    images = make_images(tmp_path, ["x.png", "y.png"])
    with tarfile.open(tmp_path / "data.tar", "w") as tar:
        for key, image, label in (("s/000", images[0], 4), ("s/001", images[1], 9)):
            tar.add(image, f"{key}.png")
            for ext, text in (("cls", str(label)), ("txt", f"caption {key}")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text.encode()))
    out = tmp_path / "out"
    assert tokenize("-t", conv, "-i", tmp_path / "data.tar", "-o", out, "--size", 8) == 0
    rows = read_rows(out)
    assert [(r["key"], r["label"], r["txt"]) for r in rows] == [
        ("data/s/000", 4, "caption s/000"), ("data/s/001", 9, "caption s/001")]
    assert rows[0]["source"].endswith("data.tar:s/000.png")


def test_ten_crop_rows_are_marked(conv, tmp_path):
    make_images(tmp_path / "in", ["a.png"], size=(30, 40))
    out = tmp_path / "out"
    assert tokenize("-t", conv, "-i", tmp_path / "in", "-o", out, "--size", 16,
                    "--ten-crop") == 0
    rows = read_rows(out)
    assert sorted((r["view"], r["flip"]) for r in rows) == sorted(
        (v, f) for v in ("top_left", "top_right", "bottom_left", "bottom_right", "center")
        for f in (False, True))
    assert len({tuple(r["tokens"]) for r in rows}) > 1


def test_variable_length_tokenizer_takes_num_tokens(tmp_path):
    titok = save_tokenizer(tmp_path / "titok", "test-titok")
    make_images(tmp_path / "in", ["a.png", "b.png"], size=(32, 32))
    out = tmp_path / "out"
    assert tokenize("-t", titok, "-i", tmp_path / "in", "-o", out, "--size", 32, "-n", 3) == 0
    tok = Tokenizer.from_pretrained(titok)
    for row in read_rows(out):
        assert row["token_shape"] == [3] and row["num_tokens"] == 3
        image = make_views(read_image(tmp_path / "in" / row["key"])[None],
                           TokenizeOptions(size=32))[0][2]
        assert row["tokens"] == tok.encode(image, num_tokens=3).indices[0].tolist()


def test_num_tokens_refused_for_a_fixed_length_tokenizer(conv, classes, tmp_path, capsys):
    assert tokenize("-t", conv, "-i", classes, "-o", tmp_path / "o", "-n", 4) == 2
    assert "fixed token count" in capsys.readouterr().err


def test_changed_options_or_tokenizer_are_refused(conv, classes, tmp_path, capsys):
    out = tmp_path / "out"
    assert tokenize("-t", conv, "-i", classes, "-o", out, "--size", 8) == 0
    before = read_rows(out)
    assert tokenize("-t", conv, "-i", classes, "-o", out, "--size", 12) == 2
    assert "made with other options (--size 8 -> 12)" in capsys.readouterr().err
    other = save_tokenizer(tmp_path / "other")
    torch.manual_seed(1)
    from vtok.models import create_tokenizer

    create_tokenizer("test-conv2d").save_pretrained(other)
    assert tokenize("-t", other, "-i", classes, "-o", out, "--size", 8) == 2
    err = capsys.readouterr().err
    assert "holds tokens of tokenizer" in err and "use another --out" in err
    assert read_rows(out) == before
    # the same command again is a resume with nothing left to do
    assert tokenize("-t", conv, "-i", classes, "-o", out, "--size", 8,
                    "--batch-size", 2) == 0
    assert read_rows(out) == before
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    assert tokenize("-t", conv, "-i", classes, "-o", tmp_path / "foreign") == 2
    assert "not empty and holds no manifest.json" in capsys.readouterr().err


def test_nothing_readable_exits_non_zero(conv, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"broken")
    (tmp_path / "in" / "b.jpg").write_bytes(b"")
    assert tokenize("-t", conv, "-i", tmp_path / "in", "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "nothing could be tokenized" in err and "a.png" in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and {s["key"] for s in manifest["skipped"]} == {"a.png", "b.jpg"}


def _damaged_tar(path, images, damage: str) -> int:
    """Samples 000..003 (001's image is no image, 004 has no image), then `damage`: "cut"
    ends the file inside 002's image, "header" writes garbage over 003's header (returns
    its offset), "junk" makes the whole file garbage."""
    members = []
    for i in range(4):
        members.append((f"{i:03d}.png", images[i].read_bytes() if i != 1 else b"not a png"))
        members.append((f"{i:03d}.cls", str(i).encode()))
    members.append(("004.txt", b"a caption without an image"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = bytearray(buffer.getvalue())
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        found = {m.name: m for m in tar.getmembers()}
    if damage == "cut":
        raw = raw[: found["002.png"].offset_data + 10]
    elif damage == "header":
        start = found["003.png"].offset
        raw[start : start + 512] = b"garbage!" * 64
    elif damage == "junk":
        raw = bytearray(b"\x01" * 3000)
    path.write_bytes(bytes(raw))
    return found["003.png"].offset


@pytest.mark.parametrize("damage", ["cut", "header", "junk"])
def test_a_damaged_tar_shard_keeps_what_it_can_read(conv, tmp_path, capsys, damage):
    images = make_images(tmp_path, [f"{i}.png" for i in range(4)])
    header = _damaged_tar(tmp_path / "data.tar", images, damage)
    (tmp_path / "more").mkdir()
    images[3].rename(tmp_path / "more" / "z.png")
    out = tmp_path / "out"
    args = ("-t", conv, "-i", tmp_path / "data.tar", tmp_path / "more", "-o", out, "--size", 8,
            "--shard-size", 2)
    assert tokenize(*args) == 0  # the other input was tokenized: the job succeeds
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    tar = str(tmp_path / "data.tar")
    rows = {r["key"]: r for r in read_rows(out)}
    if damage == "junk":
        assert set(rows) == {"z.png"} and list(skipped) == ["data@0"]
        assert skipped["data@0"].startswith(tar) and "not a readable tar" in skipped["data@0"]
    else:
        good = ["data/000"] if damage == "cut" else ["data/000", "data/002"]
        assert set(rows) == {*good, "z.png"} and rows["data/000"]["label"] == 0
        assert skipped["data/001"].startswith(f"{tar}:001.png: not a readable image")
        damaged = {"cut": "data/002", "header": f"data@{header}"}[damage]
        assert list(skipped) == ["data/001", damaged]
        assert skipped[damaged].startswith(tar)
        assert ("ends inside this member" if damage == "cut" else
                f"unreadable from byte {header} on") in skipped[damaged]
    assert manifest["complete"] and manifest["items"] == len(rows) + len(skipped)
    # a rerun with the last shard's record gone redoes it into the same folder
    (out / "_progress" / f"shard-{len(manifest['shards']) - 1:05d}.json").unlink()
    assert tokenize(*args) == 0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert {r["key"] for r in read_rows(out)} == set(rows)


def test_a_tar_sample_without_an_image_is_listed(conv, tmp_path):
    images = make_images(tmp_path, [f"{i}.png" for i in range(4)])
    _damaged_tar(tmp_path / "data.tar", images, "none")
    out = tmp_path / "out"
    assert tokenize("-t", conv, "-i", tmp_path / "data.tar", "-o", out, "--size", 8) == 0
    skipped = {s["key"]: s["reason"] for s in
               json.loads((out / "manifest.json").read_text())["skipped"]}
    assert set(skipped) == {"data/001", "data/004"}
    assert "004: no image or video member (members: 004.txt)" in skipped["data/004"]
    assert {r["key"] for r in read_rows(out)} == {"data/000", "data/002", "data/003"}


def test_a_full_disk_keeps_the_written_shards_valid(conv, classes, tmp_path, monkeypatch,
                                                    capsys):
    from vtok.data import token_shards

    out = tmp_path / "out"
    real = pq.write_table
    calls = []

    def full_disk(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    args = ["-t", conv, "-i", classes, "-o", out, "--size", 8, "--shard-size", 2]
    assert tokenize(*args) == 1
    err = capsys.readouterr().err
    assert "cannot write shard 1" in err and "No space left on device" in err
    assert "1 shards written before are whole" in err
    assert shard_files(out) == ["manifest.json", "shard-00000.parquet"]  # no temp file left
    assert len(pq.read_table(out / "shard-00000.parquet")) == 2
    monkeypatch.setattr(pq, "write_table", real)
    assert tokenize(*args) == 0
    fresh = tmp_path / "fresh"
    assert tokenize("-t", conv, "-i", classes, "-o", fresh, "--size", 8,
                    "--shard-size", 2) == 0
    assert read_rows(out) == read_rows(fresh)
    assert token_shards.read_manifest(out)["rows"] == 6


def test_an_output_folder_that_cannot_be_made(conv, classes, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert tokenize("-t", conv, "-i", classes, "-o", tmp_path / "file" / "out") == 1
    assert "cannot write to" in capsys.readouterr().err


def test_a_video_gives_frames_and_fps(tmp_path, capsys):
    av = pytest.importorskip("av")
    video = save_tokenizer(tmp_path / "vid", "test-conv3d")
    path = tmp_path / "in" / "clip.mkv"
    path.parent.mkdir()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.height, stream.width, stream.pix_fmt = 16, 16, "bgr0"
        for i in range(7):
            pixels = np.full((16, 16, 3), 30 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    make_images(tmp_path / "in", ["still.png"], size=(16, 16))
    out = tmp_path / "out"
    assert tokenize("-t", video, "-i", tmp_path / "in", "-o", out, "--max-frames", 5) == 0
    clip, still = read_rows(out)
    assert (clip["frames"], clip["fps"], clip["token_shape"]) == (5, 10.0, [2, 4, 4])
    assert (still["frames"], still["fps"], still["token_shape"]) == (1, 0.0, [1, 4, 4])
    assert pq.read_schema(out / "shard-00000.parquet").field("tokens").type == pa.list_(
        pa.uint16())  # 1000 FSQ codes
    # a VQ video tokenizer's stick (default 0.5, --stick) is in the manifest; resuming a folder
    # coded at another is refused, naming the --stick that resumes it
    from vtok.data.video import read_clip
    from vtok.models import create_tokenizer

    vq = tmp_path / "vq"
    torch.manual_seed(0)
    create_tokenizer("test-conv3d", quantizer="vq",
                     quantizer_options={"codebook_size": 64}).save_pretrained(vq)
    tok = Tokenizer.from_pretrained(vq)
    frames = read_clip(path, 5).frames[None]
    for stick, extra in ((0.5, []), (0.0, ["--stick", 0])):
        out = tmp_path / f"vq{stick}"
        assert tokenize("-t", vq, "-i", tmp_path / "in", "-o", out, "--max-frames", 5,
                        *extra) == 0
        assert json.loads((out / "manifest.json").read_text())["tokenizer"]["stick"] == stick
        tok.stick = stick
        with torch.no_grad():
            expected = tok.encode(frames).indices[0].flatten().tolist()
        assert read_rows(out)[0]["tokens"] == expected
    manifest_path = tmp_path / "vq0.0" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["tokenizer"]["stick"]  # as written before the stick was recorded
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert tokenize("-t", vq, "-i", tmp_path / "in", "-o", tmp_path / "vq0.0",
                    "--max-frames", 5) == 2
    assert ("the tokenizer's stick 0.0 -> 0.5; give --stick 0.0 to resume it"
            in capsys.readouterr().err)
    assert tokenize("-t", vq, "-i", tmp_path / "in", "-o", tmp_path / "vq0.0",
                    "--max-frames", 5, "--stick", 0) == 0
    assert tokenize("-t", video, "-i", tmp_path / "in", "-o", tmp_path / "fsq",
                    "--stick", 0.5) == 2  # FSQ: no codes to keep
    assert "--stick needs a video tokenizer with a VQ codebook" in capsys.readouterr().err
    # an image tokenizer skips the video and names why
    conv = save_tokenizer(tmp_path / "conv")
    assert tokenize("-t", conv, "-i", tmp_path / "in", "-o", tmp_path / "o2") == 0
    [skip] = json.loads((tmp_path / "o2" / "manifest.json").read_text())["skipped"]
    assert "codes still images" in skip["reason"]


def test_two_workers_write_the_rows_of_one(conv, classes, tmp_path):
    args = ["-t", conv, "-i", classes, "--size", 8, "--hflip", "--shard-size", 2]
    assert tokenize(*args, "-o", tmp_path / "one") == 0
    assert tokenize(*args, "-o", tmp_path / "two", "--workers", 2, "--threads", 1) == 0
    assert read_rows(tmp_path / "two") == read_rows(tmp_path / "one")
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert one["shards"] == two["shards"] and one["skipped"] == two["skipped"]


def test_one_shard_shared_out_among_workers_is_the_shard_of_one(conv, classes, tmp_path):
    # all 7 items (one unreadable) in one shard, cut into parts of 2 for two workers: the
    # parts joined give the very shard one worker writes (same bytes, same skipped list)
    args = ["-t", conv, "-i", classes, "--size", 8, "--hflip", "--batch-size", 2]
    assert tokenize(*args, "-o", tmp_path / "one") == 0
    assert tokenize(*args, "-o", tmp_path / "two", "--workers", 2, "--threads", 1) == 0
    assert read_rows(tmp_path / "two") == read_rows(tmp_path / "one")
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert len(one["shards"]) == 1 and one["shards"] == two["shards"]
    assert one["skipped"] == two["skipped"] and len(one["skipped"]) == 1


def test_run_defaults_follow_the_device():
    from vtok.data.pretokenize import SMALL_JOB, RunOptions, cpu_count

    cpu = RunOptions().resolved()  # a large job: one single-thread worker per CPU core,
    assert (cpu.workers, cpu.batch_size, cpu.worker_threads()) == (cpu_count(), None, 1)
    # batches by pixels (see test_cpu_batches_hold_a_pixel_budget)
    small = RunOptions().resolved(SMALL_JOB - 1)  # in this process, with all its threads
    assert (small.workers, small.threads) == (1, None)
    asked = RunOptions(workers=3, batch_size=7, threads=2).resolved(1)
    assert (asked.workers, asked.batch_size, asked.worker_threads()) == (3, 7, 2)
    ray = RunOptions(engine="ray", gpus_per_worker=1.0).resolved(1)
    assert (ray.workers, ray.batch_size) == (1, 32)


def test_cpu_batches_hold_a_pixel_budget(conv, tmp_path, monkeypatch):
    from vtok.data import pretokenize
    from vtok.data.token_items import open_inputs
    from vtok.data.token_shards import ShardTask

    make_images(tmp_path, [f"{i}.png" for i in range(5)])
    inputs = open_inputs([tmp_path], "auto", None)
    task = ShardTask(0, list(inputs.items()))
    tok = pretokenize.load_tokenizer(str(conv))
    sizes = []
    encode = tok.encode
    monkeypatch.setattr(tok, "encode", lambda x, **kw: sizes.append(len(x)) or encode(x, **kw))
    monkeypatch.setattr(pretokenize, "CPU_BATCH_PIXELS", 2 * 8 * 8)  # two 8x8 views
    by_pixels = pretokenize.tokenize_shard(task, tok, TokenizeOptions(size=8), None, "cpu",
                                           inputs.columns)
    assert sizes == [2, 2, 1]
    sizes.clear()
    asked = pretokenize.tokenize_shard(task, tok, TokenizeOptions(size=8), 4, "cpu",
                                       inputs.columns)
    assert sizes == [4, 1] and asked.table.equals(by_pixels.table)


def test_split_task_parts_merge_back_to_the_shard(conv, classes):
    from vtok.data.pretokenize import (
        RunOptions,
        load_tokenizer,
        merge_parts,
        part_size,
        split_task,
        tokenize_shard,
    )
    from vtok.data.token_items import open_inputs
    from vtok.data.token_shards import ShardTask

    inputs = open_inputs([classes], "auto", None)
    task = ShardTask(3, list(inputs.items()))
    tok, options = load_tokenizer(str(conv)), TokenizeOptions(size=8)
    assert part_size(7, RunOptions(batch_size=32, workers=2)) == 4
    assert part_size(7, RunOptions(batch_size=2, workers=2)) == 4
    assert part_size(100, RunOptions(batch_size=2, workers=2)) == 16  # PART_ITEMS
    assert part_size(100, RunOptions(batch_size=32, workers=3)) == 32
    pieces = split_task(task, 2)
    assert [len(p.items) for p in pieces] == [2, 2, 2, 1]
    assert [i for p in pieces for i in p.items] == task.items
    whole = tokenize_shard(task, tok, options, 2, "cpu", inputs.columns)
    merged = merge_parts([tokenize_shard(p, tok, options, 2, "cpu", inputs.columns)
                          for p in pieces])
    assert merged.table.equals(whole.table) and merged.skipped == whole.skipped
    assert (merged.index, merged.items, merged.first_key, merged.last_key) == (
        whole.index, whole.items, whole.first_key, whole.last_key)
