"""Bad configuration and bad input fail with ValueError naming the parameter and what is allowed."""

import pytest
import torch

from vtok.quant import create_quantizer

BAD_CONFIGS = [
    ("vq", {"dim": 4, "codebook_size": 1}, r"codebook_size must be an integer >= 2, got 1"),
    ("vq", {"dim": 0, "codebook_size": 8}, r"dim must be an integer >= 1, got 0"),
    ("vq", {"dim": 4, "codebook_size": 8, "distance": "l1"},
     r"distance must be one of 'l2', 'cosine', got 'l1'"),
    ("vq", {"dim": 4, "codebook_size": 8, "decay": 1.5}, r"decay must be a number in \[0.0, 1.0\]"),
    ("vq", {"dim": 4, "codebook_size": 8, "dead_code_window": 0},
     r"dead_code_window must be a number > 0"),
    ("vq", {"dim": 4, "codebook_size": 8.5}, r"codebook_size must be an integer >= 2, got 8.5"),
    ("fsq", {"levels": []}, r"levels must be a non-empty list of integers >= 2"),
    ("fsq", {"levels": [8, 1]}, r"levels must be a non-empty list of integers >= 2"),
    ("lfq", {"dim": 4, "codebook_size": 100}, r"codebook_size must be 2\*\*dim = 16"),
    ("lfq", {"dim": 63}, r"dim must be an integer in \[1, 62\], got 63"),
    ("bsq", {"dim": 0}, r"dim must be an integer in \[1, 62\], got 0"),
    ("rvq", {"dim": 4, "num_quantizers": 0, "quantizer_options": {"codebook_size": 8}},
     r"num_quantizers must be an integer >= 1, got 0"),
    ("rvq", {"dim": 4, "num_quantizers": 2, "quantizer": "gvq",
             "quantizer_options": {"codebook_size": 8}},
     r"rvq's inner quantizer must give one index per vector, got 'gvq'"),
    ("rvq", {"dim": 4, "num_quantizers": 2, "quantize_dropout": 2.0},
     r"quantize_dropout must be a number in \[0.0, 1.0\]"),
    ("gvq", {"dim": 6, "groups": 4, "quantizer_options": {"codebook_size": 8}},
     r"groups must divide dim=6, got groups=4"),
    ("msrvq", {"dim": 4, "quantizer_options": {"codebook_size": 8}, "scales": []},
     r"scales must be a non-empty list"),
    ("msrvq", {"dim": 4, "quantizer_options": {"codebook_size": 8}, "scales": [4, 2]},
     r"never shrink"),
    ("rvq", {"dim": 4, "num_quantizers": 2, "quantizer_options": [8]},
     r"rvq quantizer_options must be a dict of the inner quantizer's options, got \[8\]"),
    ("gvq", {"dim": 4, "quantizer_options": {"codebook_size": 8}, "codebook_dim": 2},
     r"gvq has no option codebook_dim; give the inner quantizer's options in quantizer_options"),
    ("msrvq", {"dim": 4, "quantizer_options": {"codebook_size": 8, "colour": 1}},
     r"quantizer 'vq' has no option colour"),
    ("vq", {"dim": 4, "codebook_size": 8, "colour": "red"},
     r"quantizer 'vq' has no option colour; its options are: dim, codebook_size"),
    ("nope", {}, r"unknown quantizer 'nope'; registered: bsq, fsq, gvq, lfq, msrvq, rvq, vq"),
]


@pytest.mark.parametrize("name,options,message", BAD_CONFIGS)
def test_bad_configuration_names_the_parameter(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_quantizer(name, **options)


@pytest.mark.parametrize("name,options", [
    ("vq", {"codebook_size": 8}), ("fsq", {"levels": [3, 3, 3, 3]}), ("lfq", {}),
    ("rvq", {"num_quantizers": 2, "quantizer_options": {"codebook_size": 8}}),
    ("gvq", {"quantizer_options": {"codebook_size": 8}}),
])
def test_input_with_the_wrong_channel_count_is_refused(name, options):
    q = create_quantizer(name, dim=4, **options)
    with pytest.raises(ValueError, match=r"input has 6 channels .* built with dim=4"):
        q(torch.randn(2, 3, 6))


def test_msrvq_refuses_a_grid_that_does_not_match_its_last_scale():
    q = create_quantizer("msrvq", dim=4, quantizer_options={"codebook_size": 8}, scales=[1, 2, 4])
    with pytest.raises(ValueError, match=r"expects input \[\.\.\., 4, 4, 4\], got \(2, 4, 5, 4\)"):
        q(torch.randn(2, 4, 5, 4))
    with pytest.raises(ValueError, match="must end with 21 tokens"):
        q.decode(torch.zeros(2, 20, dtype=torch.long))


def test_rvq_num_levels_out_of_range():
    q = create_quantizer("rvq", dim=4, num_quantizers=2, quantizer_options={"codebook_size": 8})
    with pytest.raises(ValueError, match=r"num_levels must be an integer in \[1, 2\], got 3"):
        q(torch.randn(3, 4), num_levels=3)
