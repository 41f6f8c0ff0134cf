import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vtok.cli import main
from vtok.codec import RawCoder, VtokFormatError, from_vtok, read_vtok, to_vtok
from vtok.codec.context import GRID_NEIGHBOURS, PREVIOUS, VideoBoard, video_contexts, waves
from vtok.codec.entropy import EntropyCoder
from vtok.codec.intprior import IntegerPrior, quantize_prior
from vtok.codec.prior import PriorConfig, TokenPrior, train_prior
from vtok.codec.tokens_file import make_coder
from vtok.data.video import read_clip
from vtok.models import create_tokenizer, load
from vtok.models.base import Tokens

GOLDEN = Path(__file__).parent / "golden" / "video"
SIDE, FRAMES = 32, 17  # 8x8 tokens in 5 latent frames with test-conv3d


def scene(seed, size=SIDE):
    """A smooth random picture (bicubic upsampling of 8x8-pixel noise)."""
    low = torch.rand(1, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(size, size), mode="bicubic",
                         align_corners=False).clamp(0, 1)[0]


def static_clip(seed, frames=FRAMES, noise=0.004):
    """A still picture repeated, with a little sensor noise on every frame."""
    gen = torch.Generator().manual_seed(seed + 1000)
    still = scene(seed)
    return (still + noise * torch.randn(frames, *still.shape, generator=gen)).clamp(0, 1)


def panning_clip(seed, frames=FRAMES):
    """A window that moves two pixels a frame across a larger picture."""
    big = scene(seed, 2 * SIDE)
    return torch.stack([big[:, 8 : 8 + SIDE, 2 * f : 2 * f + SIDE] for f in range(frames)])


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return create_tokenizer("test-conv3d").eval()


@pytest.fixture(scope="module")
def train_tokens(tok):
    clips = torch.stack([static_clip(s) if s % 2 else panning_clip(s) for s in range(16)])
    return torch.cat([tok.encode(c).indices for c in clips.split(8)])  # [16, 5, 8, 8]


@pytest.fixture(scope="module")
def priors(tok, train_tokens):
    """(grid3d prior, spatial-only grid prior), fitted on the same tokens with the same steps."""
    k, tid = tok.codebook_size, tok.tokenizer_id
    config = PriorConfig(k, "grid3d", tid, embed_dim=8, hidden=32)
    video = quantize_prior(train_prior(train_tokens, config, steps=30, batch_size=4, lr=1e-2),
                           train_tokens)
    frames = train_tokens.flatten(0, 1)
    config = PriorConfig(k, "grid", tid, embed_dim=8, hidden=32)
    spatial = quantize_prior(train_prior(frames, config, steps=30, batch_size=20, lr=1e-2),
                             frames)
    return video, spatial


@pytest.fixture(scope="module")
def golden_coder():
    return EntropyCoder(IntegerPrior.load(GOLDEN))


def test_contexts_while_coding_are_the_training_contexts():
    """Wave by wave, the coder sees exactly what training saw, from earlier waves only."""
    tokens = np.random.default_rng(0).integers(0, 7, (2, 3, 5, 6))
    tokens[1, 1:] = tokens[1, :1]  # a clip whose frames repeat: every flag says "same"
    full = video_contexts(tokens, 7)
    for clip, ctx in zip(tokens, full):
        board = VideoBoard((3, 5, 6), 7)
        for wave in waves((3, 5, 6)):
            assert np.array_equal(board.context(wave), ctx.reshape(-1, 21)[wave])
            board.put(wave, clip.reshape(-1)[wave])
        assert np.array_equal(board.get(), clip)
    # slots: 6 neighbours, the previous frame's 3x3, then 6 flags (0 same, 1 changed, 2 unknown)
    assert full[1, 2, 2, 3].tolist() == [
        *(tokens[1, 2, 2 + dr, 3 + dc] for dr, dc in GRID_NEIGHBOURS),
        *(tokens[1, 1, 2 + dr, 3 + dc] for dr, dc in PREVIOUS), 0, 0, 0, 0, 0, 0]
    assert full[0, 0, 0, 0].tolist() == [7] * 15 + [2] * 6  # first frame, first token
    assert full[1, 1, 0, 0, 9:15].tolist() == [7, tokens[1, 0, 0, 0], tokens[1, 0, 0, 1],
                                               7, tokens[1, 0, 1, 0], tokens[1, 0, 1, 1]]


def test_waves_of_latent_frames_come_after_everything_their_tokens_read():
    shape = (4, 5, 6)
    assert sorted(np.concatenate(waves(shape)).tolist()) == list(range(120))
    rank = {int(p): i for i, wave in enumerate(waves(shape)) for p in wave}
    reads = [(0, dr, dc) for dr, dc in GRID_NEIGHBOURS] + [(-1, dr, dc) for dr, dc in PREVIOUS] \
        + [(-1, dr, dc) for dr, dc in GRID_NEIGHBOURS]  # neighbours, previous 3x3, flags
    for f, r, c in np.ndindex(shape):
        for df, dr, dc in reads:
            if f + df >= 0 and 0 <= r + dr < 5 and 0 <= c + dc < 6:
                assert rank[((f + df) * 5 + r + dr) * 6 + c + dc] < rank[(f * 5 + r) * 6 + c]
    # frames overlap: a frame runs four waves behind the one before
    assert len(waves(shape)) == 2 * 5 + 6 + 4 * 4 - 6 < 4 * len(waves(shape[1:]))


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 5), (2, 5, 3), (4, 6, 7), (7, 2, 9)])
def test_video_tokens_round_trip_exactly(golden_coder, shape):
    rng = np.random.default_rng(sum(shape))
    noise = rng.integers(0, 16, shape)
    still = np.broadcast_to(noise[:1], shape).copy()
    for tokens in (noise, still):
        payload = golden_coder.encode(tokens)
        assert np.array_equal(golden_coder.decode(payload, shape), tokens)
    assert len(golden_coder.encode(still)) <= len(golden_coder.encode(noise))


def test_golden_video_file_decodes_bit_exactly(golden_coder):
    """Pinned bytes: a change that moves any probability of a grid3d prior breaks this test."""
    prior = golden_coder.prior
    assert prior.prior_id == json.loads((GOLDEN / "prior.json").read_text())["prior_id"]
    tokens = np.load(GOLDEN / "tokens.npy")
    data = (GOLDEN / "entropy-grid3d.vtok").read_bytes()
    vfile = read_vtok(GOLDEN / "entropy-grid3d.vtok")
    assert (vfile.coding, vfile.prior_id, prior.config.layout) == ("entropy", prior.prior_id,
                                                                   "grid3d")
    assert [(im.token_shape, im.frames, im.fps) for im in vfile.images] == \
        [((3, 4, 5), 9, (25, 1))] * 3
    back = from_vtok(vfile, golden_coder, "00000000000000bb")
    assert all(np.array_equal(t.indices[0].numpy(), g) for t, g in zip(back, tokens))
    again = to_vtok(back, 16, golden_coder, names=["a", "b", "c"])
    assert again.to_bytes() == data


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_computes_the_same_video_frequencies_as_the_cpu():
    prior = IntegerPrior.load(GOLDEN)
    tokens = torch.from_numpy(np.load(GOLDEN / "tokens.npy"))
    ctx = torch.from_numpy(video_contexts(tokens.numpy(), 16)).reshape(-1, 21)
    cpu = prior.frequencies(ctx)
    assert np.array_equal(prior.to("cuda").frequencies(ctx), cpu)
    vfile = read_vtok(GOLDEN / "entropy-grid3d.vtok")
    back = EntropyCoder(prior).decode_batch([im.payload for im in vfile.images], (3, 4, 5))
    assert all(np.array_equal(b, t) for b, t in zip(back, tokens.numpy()))


def test_threads_and_groupings_give_the_same_bytes(golden_coder):
    rng = np.random.default_rng(3)
    clips = [np.repeat(rng.integers(0, 16, (1, 5, 6)), 4, axis=0) for _ in range(5)]
    for clip in clips:
        clip[rng.random(clip.shape) < 0.2] = 3
    alone = [golden_coder.encode(c) for c in clips]
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert golden_coder.encode_batch(clips[:2]) + golden_coder.encode_batch(
                clips[2:]) == alone
            for group in ([0, 1, 2, 3, 4], [4, 1], [2]):
                back = golden_coder.decode_batch([alone[i] for i in group], (4, 5, 6))
                assert all(np.array_equal(b, clips[i]) for b, i in zip(back, group))
    finally:
        torch.set_num_threads(threads)


def test_corrupt_video_payloads_are_format_errors(golden_coder):
    tokens = np.load(GOLDEN / "tokens.npy")
    batch = Tokens(torch.from_numpy(tokens[:1]), (3, 4, 5), (16, 20), "00000000000000bb", 60,
                   frames=9, fps=(25, 1))
    vfile = to_vtok([batch], 16, golden_coder)
    good = vfile.images[0].payload
    for bad, message in ((good[:-1], "whole 32-bit words"),
                         (good + b"\x12\x34\x56\x78" * 2, "data left over"),
                         (b"\xff" * 400, "corrupt")):
        vfile.images[0].payload = bad
        with pytest.raises(VtokFormatError, match=f"image 0: bad payload .*{message}"):
            from_vtok(vfile, golden_coder)
    with pytest.raises(ValueError, match=r"a grid3d prior cannot code tokens of shape \(4, 5\)"):
        golden_coder.encode(np.zeros((4, 5), dtype=np.int64))


def test_priors_of_another_layout_are_refused(tok, tmp_path):
    video_dir, image_dir = tmp_path / "video", tmp_path / "image"
    tok.save_pretrained(video_dir)
    torch.manual_seed(0)
    image_tok = create_tokenizer("test-conv2d").eval()
    image_tok.save_pretrained(image_dir)
    for directory, layout, shape in ((video_dir, "grid", (2, 3)), (image_dir, "grid3d", None)):
        t = load(directory)
        data = torch.randint(0, t.codebook_size, (4, *(shape or (2, 3, 3))))
        config = PriorConfig(t.codebook_size, layout, t.tokenizer_id, embed_dim=4, hidden=8)
        quantize_prior(TokenPrior(config).eval(), data).save(directory)
        want = "grid3d" if layout == "grid" else "grid"
        with pytest.raises(ValueError, match=f"models {layout} tokens; this tokenizer makes "
                                             f"{want} tokens"):
            make_coder("entropy", t, directory)


def test_a_static_clip_costs_far_less_than_raw_and_than_a_spatial_prior(tok, priors):
    """The previous latent frame makes a static scene's later frames almost free: under a
    third of raw packing (15-23 % on ten such clips), and under half the bits of a prior that
    sees each frame alone (the untrained test-conv3d already gives a static clip near-identical
    tokens frame to frame, so only the first latent frame costs much)."""
    video, spatial = priors
    tokens = tok.encode(static_clip(99)[None]).indices[0].numpy()  # not trained on
    assert tokens.shape == (5, 8, 8)
    raw = len(RawCoder(tok.codebook_size).encode(tokens)) * 8
    temporal = len(EntropyCoder(video).encode(tokens)) * 8
    per_frame = sum(len(p) for p in EntropyCoder(spatial).encode_batch(list(tokens))) * 8
    assert 3 * temporal < raw
    assert 2 * temporal < per_frame
    assert np.array_equal(EntropyCoder(video).decode(EntropyCoder(video).encode(tokens),
                                                     tokens.shape), tokens)


def write_clip(path, frames, rate=25):
    av = pytest.importorskip("av")
    pixels = (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=rate)
        stream.height, stream.width, stream.pix_fmt = pixels.shape[1], pixels.shape[2], "bgr0"
        for frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_cli_encodes_and_decodes_a_clip_with_the_prior(tok, priors, tmp_path, capsys):
    directory = tmp_path / "tok"
    tok.save_pretrained(directory)
    video, _ = priors
    video.save(directory)
    clip = write_clip(tmp_path / "still.mkv", static_clip(7, frames=9))
    assert main(["encode", str(clip), "-t", str(directory), "-o", str(tmp_path / "e.vtok")]) == 0
    assert main(["encode", str(clip), "-t", str(directory), "-o", str(tmp_path / "r.vtok"),
                 "--coding", "raw"]) == 0
    entropy, raw = read_vtok(tmp_path / "e.vtok"), read_vtok(tmp_path / "r.vtok")
    assert (entropy.coding, entropy.prior_id) == ("entropy", video.prior_id)
    assert len(entropy.images[0].payload) < len(raw.images[0].payload) / 2
    (a,) = from_vtok(entropy, make_coder("entropy", tok, directory), tok)
    (b,) = from_vtok(raw, RawCoder(tok.codebook_size), tok)
    assert torch.equal(a.indices, b.indices) and a.frames == 9
    for name in ("e", "r"):
        assert main(["decode", str(tmp_path / f"{name}.vtok"), "-o",
                     str(tmp_path / f"{name}.mkv"), "-t", str(directory)]) == 0
    e, r = (read_clip(tmp_path / f"{name}.mkv", 16).frames for name in ("e", "r"))
    assert e.shape == (9, 3, SIDE, SIDE) and torch.equal(e, r)


def test_vtok_prior_fits_a_video_tokenizer_on_clips(tok, tmp_path, capsys):
    directory = tmp_path / "tok"
    tok.save_pretrained(directory)
    (tmp_path / "videos").mkdir()
    for seed in range(2):
        write_clip(tmp_path / "videos" / f"pan{seed}.mkv", panning_clip(seed, frames=12))
    held = tmp_path / "held"
    held.mkdir()
    write_clip(held / "still.mkv", static_clip(5, frames=9))
    args = ["prior", str(directory), "--data", str(tmp_path / "videos"), "--held-out", str(held),
            "--crops", "16", "--frames", "5", "--crop-size", "32", "--steps", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "still: 1920 -> " in out and "1 clips, 192 tokens each" in out
    meta = json.loads((directory / "prior.json").read_text())
    assert (meta["layout"], meta["slots"], meta["fit"]["unit"]) == ("grid3d", 21, "clip")
    (item,) = meta["fit"]["items"]
    assert (item["name"], item["tokens"], item["raw_bits"]) == ("still", 192, 1920)
    assert make_coder("entropy", load(directory), directory).prior.config.layout == "grid3d"
    assert main([*args[:-2], "--frames", "0", "--force"]) == 2
    assert "--frames must be in [1, 1024], got 0" in capsys.readouterr().err
