"""`vtok encode` on inputs the image reader refuses or flags: the good ones are still written."""

import numpy as np
import torch
from PIL import Image

from tests.data.test_images import _png_header
from vtok.cli import main
from vtok.codec import RawCoder, from_vtok, read_vtok
from vtok.data.images import read_image
from vtok.models import create_tokenizer, load


def test_a_bomb_among_good_images_is_named_and_the_good_ones_are_written(tmp_path, capsys):
    torch.manual_seed(0)
    create_tokenizer("test-conv2d").save_pretrained(tmp_path / "tok")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "bomb.png").write_bytes(_png_header(10000, 10000))
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 200, 0), (200, 0, 0))]
    frames[0].save(tmp_path / "c.gif", save_all=True, append_images=frames[1:])
    inputs = [str(tmp_path / n) for n in ("a.png", "bomb.png", "c.gif")]
    out = tmp_path / "all.vtok"
    assert main(["encode", *inputs, "-t", str(tmp_path / "tok"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'bomb.png'}: declares 10000x10000 = 100000000 pixels" in err
    assert f"note: {tmp_path / 'c.gif'}: animated image; only its first frame is coded" in err
    tok = load(tmp_path / "tok")
    got = from_vtok(read_vtok(out), RawCoder(tok.codebook_size), tok.tokenizer_id)
    assert [t.image_size for t in got] == [(12, 16), (8, 8)]
    first_frame = torch.tensor([0.0, 200 / 255, 0.0])[:, None, None].expand(3, 8, 8)
    for tokens, image in zip(got, (read_image(tmp_path / "a.png"), first_frame)):
        assert torch.equal(tokens.indices, tok.encode(image[None]).indices)
