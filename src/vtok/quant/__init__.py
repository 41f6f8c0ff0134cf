"""Discrete bottlenecks with one interface: `create_quantizer(name, **options)`.

Every quantizer takes channels-last `[..., dim]` and returns `QuantizerOutput(z_q, indices,
loss, metrics)`; `decode(indices)` gives back `z_q`; `codebook_size`, `num_codebooks` and
`bits_per_token` describe the indices.
"""

from vtok.quant.base import QUANTIZERS, Quantizer, QuantizerOutput, create_quantizer
from vtok.quant.fsq import FiniteScalarQuantizer
from vtok.quant.gvq import GroupedQuantizer
from vtok.quant.lfq import BinarySphericalQuantizer, LookupFreeQuantizer
from vtok.quant.msrvq import MultiScaleResidualQuantizer
from vtok.quant.rvq import ResidualQuantizer
from vtok.quant.search import nearest_code
from vtok.quant.vq import VectorQuantizer

__all__ = [
    "QUANTIZERS",
    "BinarySphericalQuantizer",
    "FiniteScalarQuantizer",
    "GroupedQuantizer",
    "LookupFreeQuantizer",
    "MultiScaleResidualQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "ResidualQuantizer",
    "VectorQuantizer",
    "create_quantizer",
    "nearest_code",
]
