import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vtok.cli import main
from vtok.codec import VtokFormatError, from_vtok, read_vtok, to_vtok
from vtok.codec.entropy import EntropyCoder, waves
from vtok.codec.intprior import TOTAL_BITS, IntegerPrior, quantize_prior
from vtok.codec.prior import GRID_NEIGHBOURS, PriorConfig, TokenPrior, train_prior
from vtok.codec.tokens_file import make_coder
from vtok.models import create_tokenizer, load

GOLDEN = Path(__file__).parent / "golden"


def _smooth_grids(n, k=16, size=8, seed=0):
    """Grids of k codes made of horizontal runs: the left neighbour predicts most tokens."""
    rng = np.random.default_rng(seed)
    grids = np.repeat(rng.integers(0, k, (n, size, size // 4)), 4, axis=2)
    flips = rng.random(grids.shape) < 0.05
    grids[flips] = rng.integers(0, k, flips.sum())
    return torch.from_numpy(grids)


@pytest.fixture(scope="module")
def float_prior():
    config = PriorConfig(16, "grid", "00000000000000aa", embed_dim=16, hidden=64)
    return train_prior(_smooth_grids(256), config, steps=300, batch_size=32, lr=5e-3)


@pytest.fixture(scope="module")
def grid_prior(float_prior):
    return quantize_prior(float_prior, _smooth_grids(256))


def test_waves_cover_every_position_once_after_its_neighbours():
    for shape in [(1, 1), (3, 4), (5, 2), (7,)]:
        order = np.concatenate(waves(shape))
        assert sorted(order.tolist()) == list(range(int(np.prod(shape))))
    rank = {int(p): t for t, wave in enumerate(waves((6, 5))) for p in wave}
    for r in range(6):
        for c in range(5):
            for dr, dc in GRID_NEIGHBOURS:
                if 0 <= r + dr < 6 and 0 <= c + dc < 5:
                    assert rank[(r + dr) * 5 + c + dc] < rank[r * 5 + c]


def test_integer_frequencies_are_positive_and_sum_to_the_coder_precision(grid_prior):
    ctx = torch.randint(0, 17, (50, len(GRID_NEIGHBOURS)))
    q = grid_prior.frequencies(ctx)
    assert q.dtype == np.int64 and q.shape == (50, 16)
    assert q.min() >= 1 and (q.sum(1) == 1 << TOTAL_BITS).all()


def test_integer_prior_follows_the_float_one(float_prior, grid_prior):
    test = _smooth_grids(20, seed=1)
    ctx = float_prior.contexts(test).reshape(-1, len(GRID_NEIGHBOURS))
    float_bits = float_prior.bits(test).sum().item()
    integer_bits = grid_prior.bits(ctx, test.reshape(-1))
    assert abs(integer_bits / float_bits - 1) < 0.03


def test_entropy_coding_is_exact_and_close_to_the_ideal_length(float_prior, grid_prior):
    coder = EntropyCoder(grid_prior)
    test = _smooth_grids(20, seed=1)
    sizes = []
    for grid in test:
        payload = coder.encode(grid.numpy())
        assert np.array_equal(coder.decode(payload, grid.shape), grid.numpy())
        sizes.append(len(payload) * 8)
        ctx = float_prior.contexts(grid[None]).reshape(-1, len(GRID_NEIGHBOURS))
        assert len(payload) * 8 <= grid_prior.bits(ctx, grid.reshape(-1)) * 1.02 + 64
    assert np.mean(sizes) < 0.6 * 64 * 4  # 64 tokens x 4 raw bits: the prior learned the runs


def test_batches_threads_and_groupings_give_the_same_bytes(grid_prior):
    coder = EntropyCoder(grid_prior)
    grids = list(_smooth_grids(7, seed=3).numpy())
    alone = [coder.encode(g) for g in grids]
    assert coder.encode_batch(grids) == alone
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert coder.encode_batch(grids[:3]) + coder.encode_batch(grids[3:]) == alone
            for group in ([0, 1, 2, 3, 4, 5, 6], [6, 2], [4]):
                back = coder.decode_batch([alone[i] for i in group], (8, 8))
                assert all(np.array_equal(b, grids[i]) for b, i in zip(back, group))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_computes_the_same_frequencies_as_the_cpu():
    prior = IntegerPrior.load(GOLDEN)
    ctx = torch.randint(0, 17, (300, len(GRID_NEIGHBOURS)))
    cpu = prior.frequencies(ctx)
    assert np.array_equal(prior.to("cuda").frequencies(ctx), cpu)
    tokens = np.load(GOLDEN / "tokens.npy")
    vfile = read_vtok(GOLDEN / "entropy-v2.vtok")
    coder = EntropyCoder(prior)
    back = coder.decode_batch([im.payload for im in vfile.images], (8, 8))
    assert all(np.array_equal(b, t) for b, t in zip(back, tokens))


def test_golden_entropy_file_decodes_bit_exactly():
    """Pinned bytes: a prior change that moves any probability breaks this test."""
    prior = IntegerPrior.load(GOLDEN)
    assert prior.prior_id == json.loads((GOLDEN / "prior.json").read_text())["prior_id"]
    tokens = np.load(GOLDEN / "tokens.npy")
    data = (GOLDEN / "entropy-v2.vtok").read_bytes()
    vfile = read_vtok(GOLDEN / "entropy-v2.vtok")
    assert (vfile.coding, vfile.prior_id) == ("entropy", prior.prior_id)
    assert [im.name for im in vfile.images] == ["a", "b", "c"]
    coder = EntropyCoder(prior)
    back = from_vtok(vfile, coder, "00000000000000aa")
    assert all(np.array_equal(t.indices[0].numpy(), g) for t, g in zip(back, tokens))
    again = to_vtok(back, 16, coder, names=["a", "b", "c"])
    assert again.to_bytes() == data


def test_sequence_prior_round_trips_prefixes():
    config = PriorConfig(10, "sequence", "00000000000000aa", max_len=12, context=3, hidden=32)
    tokens = torch.randint(0, 10, (64, 12))
    coder = EntropyCoder(quantize_prior(train_prior(tokens, config, steps=20, batch_size=8),
                                        tokens))
    for k in (1, 5, 12):
        seq = np.random.default_rng(k).integers(0, 10, k)
        assert np.array_equal(coder.decode(coder.encode(seq), (k,)), seq)
    with pytest.raises(ValueError, match="13 tokens exceed the prior's 12"):
        coder.encode(np.zeros(13, dtype=np.int64))
    with pytest.raises(ValueError, match="a sequence prior cannot code tokens of shape"):
        coder.encode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"token indices must lie in \[0, 10\)"):
        coder.encode(np.array([3, 10]))


def test_bad_payloads_raise_value_errors_that_say_what_is_wrong(grid_prior):
    coder = EntropyCoder(grid_prior)
    with pytest.raises(ValueError, match="whole 32-bit words"):
        coder.decode(b"\x01\x02\x03", (8, 8))
    with pytest.raises(ValueError, match="corrupt"):
        coder.decode(b"\xff" * 800, (8, 8))
    good = coder.encode(_smooth_grids(1, seed=5).numpy()[0])
    with pytest.raises(ValueError, match="data left over after the last token"):
        coder.decode(good + b"\x12\x34\x56\x78" * 3, (8, 8))
    for seed in range(40):  # junk either decodes to valid tokens or is refused, nothing else
        junk = np.random.default_rng(seed).bytes(4 * (seed % 9))
        try:
            out = coder.decode(junk, (8, 8))
        except ValueError:
            continue
        assert out.shape == (8, 8) and out.min() >= 0 and out.max() < 16


def test_the_issue_example_is_a_format_error(tmp_path):
    """An all-0xff payload under the shipped conv2d-f8 prior used to escape as an
    AssertionError from the range coder."""
    from vtok.codec import ImageTokens, VtokFile, write_vtok
    from vtok.models.presets import tokenizer_dir

    tok = load("conv2d-f8")
    coder = make_coder("entropy", tok, tokenizer_dir("conv2d-f8"))
    vfile = VtokFile(tok.tokenizer_id, tok.codebook_size, "entropy", 1,
                     [ImageTokens((256, 256), (32, 32), b"\xff" * 800)],
                     prior_id=coder.prior_id)
    write_vtok(tmp_path / "bad.vtok", vfile)
    with pytest.raises(VtokFormatError, match="image 0: bad payload"):
        from_vtok(read_vtok(tmp_path / "bad.vtok"), coder, tok)
    assert main(["decode", str(tmp_path / "bad.vtok"), "-o", str(tmp_path / "x.png")]) == 1
    assert not (tmp_path / "x.png").exists()


def test_prior_files_round_trip_and_tampering_is_refused(grid_prior, tmp_path):
    grid_prior.save(tmp_path)
    back = IntegerPrior.load(tmp_path)
    assert back.prior_id == grid_prior.prior_id
    ctx = torch.randint(0, 17, (20, 6))
    assert np.array_equal(back.frequencies(ctx), grid_prior.frequencies(ctx))
    with pytest.raises(ValueError, match="no readable token prior"):
        IntegerPrior.load(tmp_path / "nowhere")
    tensors = load_file(tmp_path / "prior.safetensors")
    tensors["w2"] = tensors["w2"].clone()
    tensors["w2"][0, 0] += 1
    save_file(tensors, tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="hash to .* not the recorded"):
        IntegerPrior.load(tmp_path)
    tensors["act"] = tensors["act"].clone()
    tensors["act"][0] = 30000
    save_file(tensors, tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="act exceeds its bound"):
        IntegerPrior.load(tmp_path)
    tensors["act"][0] = -32768  # abs() of a type's most negative value stays negative
    save_file(tensors, tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="act exceeds its bound"):
        IntegerPrior.load(tmp_path)
    meta = json.loads((tmp_path / "prior.json").read_text())
    (tmp_path / "prior.json").write_text(json.dumps({**meta, "slots": 4}))
    with pytest.raises(ValueError, match="a grid prior reads 6 neighbours, got slots=4"):
        IntegerPrior.load(tmp_path)
    TokenPrior(PriorConfig(16, "grid", "00000000000000aa")).save(tmp_path / "float")
    with pytest.raises(ValueError, match="not an integer prior"):
        IntegerPrior.load(tmp_path / "float")
    with pytest.raises(ValueError, match="layout must be one of 'grid', 'sequence', 'grid3d', "
                                         "got 'cube'"):
        PriorConfig(16, "cube", "00000000000000aa")


def _tokenizer_with_prior(root):
    torch.manual_seed(0)
    tok = create_tokenizer("test-conv2d").eval()
    tok.save_pretrained(root)
    tok = load(root)
    tokens = torch.cat([tok.encode(torch.rand(8, 3, 32, 32)).indices for _ in range(4)])
    config = PriorConfig(tok.codebook_size, "grid", tok.tokenizer_id, embed_dim=8, hidden=32)
    quantize_prior(train_prior(tokens, config, steps=30, batch_size=8), tokens).save(root)
    return tok


def test_cli_codes_with_the_prior_beside_the_tokenizer(tmp_path, capsys):
    from PIL import Image

    tok = _tokenizer_with_prior(tmp_path / "tok")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    args = ["encode", str(tmp_path / "a.png"), "-t", str(tmp_path / "tok")]
    assert main([*args, "-o", str(tmp_path / "e.vtok"), "--coding", "entropy"]) == 0
    assert main([*args, "-o", str(tmp_path / "r.vtok"), "--coding", "raw"]) == 0
    entropy, raw = read_vtok(tmp_path / "e.vtok"), read_vtok(tmp_path / "r.vtok")
    assert (entropy.coding, raw.coding) == ("entropy", "raw")
    assert entropy.prior_id == IntegerPrior.load(tmp_path / "tok").prior_id
    assert raw.prior_id is None
    (a,) = from_vtok(entropy, make_coder("entropy", tok, tmp_path / "tok"), tok.tokenizer_id)
    (b,) = from_vtok(raw, make_coder("raw", tok, None), tok.tokenizer_id)
    assert torch.equal(a.indices, b.indices)
    assert main(["decode", str(tmp_path / "e.vtok"), "-o", str(tmp_path / "e.png"),
                 "-t", str(tmp_path / "tok")]) == 0
    assert Image.open(tmp_path / "e.png").size == (41, 30)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "e.vtok")]) == 0
    assert "entropy coding" in capsys.readouterr().out


def test_entropy_coding_needs_the_matching_prior(tmp_path):
    tok = _tokenizer_with_prior(tmp_path / "tok")
    other = create_tokenizer("test-conv2d").eval()
    with pytest.raises(ValueError, match="trained for tokenizer .* not "):
        make_coder("entropy", other, tmp_path / "tok")
    with pytest.raises(ValueError, match="entropy coding needs a token prior"):
        make_coder("entropy", tok, tmp_path)
    coder = make_coder("entropy", tok, tmp_path / "tok")
    vfile = to_vtok([tok.encode(torch.rand(1, 3, 32, 32))], tok.codebook_size, coder)
    vfile.images[0].payload = vfile.images[0].payload[:-1]
    with pytest.raises(VtokFormatError, match="image 0: bad payload"):
        from_vtok(vfile, coder)
    # the same tokenizer with another prior: refused naming both priors
    shutil.copytree(tmp_path / "tok", tmp_path / "tok2")
    tokens = torch.cat([tok.encode(torch.rand(8, 3, 32, 32)).indices for _ in range(2)])
    config = PriorConfig(tok.codebook_size, "grid", tok.tokenizer_id, embed_dim=8, hidden=16)
    quantize_prior(train_prior(tokens, config, steps=5, batch_size=8), tokens).save(
        tmp_path / "tok2")
    vfile = to_vtok([tok.encode(torch.rand(1, 3, 32, 32))], tok.codebook_size, coder)
    with pytest.raises(ValueError, match=f"entropy-coded with prior {coder.prior_id}; the prior"):
        from_vtok(vfile, make_coder("entropy", tok, tmp_path / "tok2"))


def test_vtok_prior_makes_a_prior_for_a_tokenizer_folder(tmp_path, capsys):
    from PIL import Image

    torch.manual_seed(0)
    create_tokenizer("test-conv2d").eval().save_pretrained(tmp_path / "tok")
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(3):
        pixels = np.repeat(rng.integers(0, 255, (40, 12, 3), dtype=np.uint8), 4, axis=1)
        Image.fromarray(pixels).save(tmp_path / "photos" / f"{i}.png")
    args = ["prior", str(tmp_path / "tok"), "--data", str(tmp_path / "photos"),
            "--crops", "16", "--crop-size", "32", "--steps", "20"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "saving_vs_raw" in out
    meta = json.loads((tmp_path / "tok" / "prior.json").read_text())
    assert meta["tokenizer_id"] == load(tmp_path / "tok").tokenizer_id
    assert meta["fit"]["train_crops"] == 16
    assert main(args) == 1  # an existing prior needs --force
    assert "already has a token prior" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert main(["prior", str(tmp_path / "tok"), "--crops", "3"]) == 2
    assert "--crops must be in [16, 100000], got 3" in capsys.readouterr().err
    assert main(["prior", str(tmp_path / "tok"), "--force", "--stick", "0.5"]) == 2
    assert ("--stick needs a video tokenizer with a VQ codebook; this is a conv2d tokenizer"
            in capsys.readouterr().err)
    from vtok.models.presets import tokenizer_dir

    assert main(["prior", str(tokenizer_dir("conv2d-f8"))]) == 2
    assert "is a shipped tokenizer" in capsys.readouterr().err
