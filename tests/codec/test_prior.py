import numpy as np
import pytest
import torch

from vtok.cli import main
from vtok.codec import VtokFormatError, from_vtok, read_vtok, to_vtok
from vtok.codec.prior import (
    GRID_NEIGHBOURS,
    EntropyCoder,
    PriorConfig,
    TokenPrior,
    train_prior,
    waves,
)
from vtok.codec.tokens_file import make_coder
from vtok.models import create_tokenizer, load


def _smooth_grids(n, k=16, size=8, seed=0):
    """Grids of k codes made of horizontal runs: the left neighbour predicts most tokens."""
    rng = np.random.default_rng(seed)
    grids = np.repeat(rng.integers(0, k, (n, size, size // 4)), 4, axis=2)
    flips = rng.random(grids.shape) < 0.05
    grids[flips] = rng.integers(0, k, flips.sum())
    return torch.from_numpy(grids)


@pytest.fixture(scope="module")
def grid_prior():
    config = PriorConfig(16, "grid", "00000000000000aa", embed_dim=16, hidden=64)
    return train_prior(_smooth_grids(256), config, steps=300, batch_size=32, lr=5e-3)


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


def test_entropy_coding_is_exact_and_close_to_the_ideal_length(grid_prior):
    coder = EntropyCoder(grid_prior)
    test = _smooth_grids(20, seed=1)
    sizes, ideal = [], grid_prior.bits(test)
    for grid, bits in zip(test.numpy(), ideal):
        payload = coder.encode(grid)
        assert np.array_equal(coder.decode(payload, grid.shape), grid)
        sizes.append(len(payload) * 8)
        assert len(payload) * 8 <= bits.item() * 1.02 + 64
    raw = 64 * 4  # 64 tokens x 4 bits
    assert np.mean(sizes) < 0.6 * raw  # the prior learned the runs


def test_sequence_prior_round_trips_prefixes():
    config = PriorConfig(10, "sequence", "00000000000000aa", max_len=12, context=3, hidden=32)
    prior = train_prior(torch.randint(0, 10, (64, 12)), config, steps=20, batch_size=8)
    coder = EntropyCoder(prior)
    for k in (1, 5, 12):
        seq = np.random.default_rng(k).integers(0, 10, k)
        assert np.array_equal(coder.decode(coder.encode(seq), (k,)), seq)
    with pytest.raises(ValueError, match="13 tokens exceed the prior's 12"):
        coder.encode(np.zeros(13, dtype=np.int64))
    with pytest.raises(ValueError, match="a sequence prior cannot code tokens of shape"):
        coder.encode(np.zeros((2, 2), dtype=np.int64))


def test_bad_payloads_never_raise_anything_but_value_error(grid_prior):
    coder = EntropyCoder(grid_prior)
    with pytest.raises(ValueError, match="whole 32-bit words"):
        coder.decode(b"\x01\x02\x03", (8, 8))
    for seed in range(20):
        junk = np.random.default_rng(seed).bytes(4 * seed)
        out = coder.decode(junk, (8, 8))  # garbage decodes to some tokens, never crashes
        assert out.shape == (8, 8) and out.min() >= 0 and out.max() < 16


def test_prior_files_round_trip(grid_prior, tmp_path):
    grid_prior.save(tmp_path)
    back = TokenPrior.load(tmp_path)
    grids = _smooth_grids(3, seed=2)
    assert torch.equal(back.bits(grids), grid_prior.bits(grids))
    with pytest.raises(ValueError, match="no readable token prior"):
        TokenPrior.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="layout must be 'grid' or 'sequence'"):
        PriorConfig(16, "cube", "00000000000000aa")


def _tokenizer_with_prior(root):
    torch.manual_seed(0)
    tok = create_tokenizer("test-conv2d").eval()
    tok.save_pretrained(root)
    tok = load(root)
    tokens = torch.cat([tok.encode(torch.rand(8, 3, 32, 32)).indices for _ in range(4)])
    config = PriorConfig(tok.codebook_size, "grid", tok.tokenizer_id, embed_dim=8, hidden=32)
    train_prior(tokens, config, steps=30, batch_size=8).save(root)
    return tok


def test_cli_codes_with_the_prior_beside_the_tokenizer(tmp_path, capsys):
    from PIL import Image

    tok = _tokenizer_with_prior(tmp_path / "tok")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    args = ["encode", str(tmp_path / "a.png"), "-t", str(tmp_path / "tok")]
    assert main([*args, "-o", str(tmp_path / "e.vtok")]) == 0  # entropy: the default here
    assert main([*args, "-o", str(tmp_path / "r.vtok"), "--coding", "raw"]) == 0
    entropy, raw = read_vtok(tmp_path / "e.vtok"), read_vtok(tmp_path / "r.vtok")
    assert (entropy.coding, raw.coding) == ("entropy", "raw")
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
