"""What visual-token reduction costs a trained vision-language model, and what it saves.

For every method x keep ratio x place (`where`: vision, projector, llm), attached to the model
with `vtok.reduce.attach`, on held-out photo crops:

- fidelity: agreement of the reduced model's greedy answer with the unreduced model's answer
  to the same question, and the KL divergence KL(unreduced || reduced) of the first answer
  token's distribution (teacher-forced: the logits after the prompt);
- speed: prefill time (one forward over the prompt, image encoding included) at each batch
  size; the speed-up is the median over rounds of the unreduced model's time just before
  the variant's divided by the variant's.

Random pruning and pooling are always in the table: benchmarks of VLM token reduction found
them hard to beat.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vtok.reduce import attach

BASELINES = ("random", "pool2d")
PLACES = ("vision", "projector", "llm")


@dataclass(frozen=True)
class VlmVariant:
    method: str | None  # None: the unreduced model
    keep: float = 1.0
    where: str = ""
    layer: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        if self.method is None:
            return "unreduced"
        at = f"llm@{self.layer}" if self.where == "llm" else self.where
        extra = "".join(f":{k}={v}" for k, v in self.options)
        return f"{self.method}{extra} {at} keep {self.keep:g}"

    def attach(self, model: nn.Module):
        layer = {"layer": self.layer} if self.where == "llm" else {}
        return attach(model, self.method, keep=self.keep, where=self.where, **layer,
                      **dict(self.options))


def vlm_variants(methods: Sequence[tuple[str, tuple]], keeps: Sequence[float],
                 places: Sequence[str] = PLACES, layer: int = 2) -> list[VlmVariant]:
    """The unreduced model, then every method at every place it can run and every keep."""
    rows = [VlmVariant(None)]
    for name, options in methods:
        for where in places:
            if (name == "fastv" and where != "llm") or (name == "cls_attn" and where == "llm"):
                continue  # fastv scores inside the LM; cls_attn needs the tower's CLS
            if name in ("static_gate", "pool3d"):  # video reducers: one frame is a no-op
                continue
            for keep in keeps:
                rows.append(VlmVariant(name, keep, where, layer if where == "llm" else None,
                                       tuple(options)))
    return rows


@torch.no_grad()
def answers_and_logits(model: nn.Module, tokenizer: Any, crops: Tensor, question: str,
                       batch_size: int = 16, max_new_tokens: int = 6) -> tuple[list[str], Tensor]:
    """Greedy answers and first-answer-token logits `[N, V]` for one question per crop."""
    from vtok.eval.vlm_model import answer_of, prompt_batch

    answers, logits = [], []
    for start in range(0, crops.shape[0], batch_size):
        pixels = crops[start:start + batch_size]
        batch = prompt_batch(tokenizer, [question] * pixels.shape[0],
                             image_tokens=model.config.image_seq_length)
        out = model.generate(**batch, pixel_values=pixels, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, output_logits=True,
                             return_dict_in_generate=True)
        logits.append(out.logits[0].float())  # the prefill's last position: first answer token
        answers += answer_of(tokenizer, out.sequences[:, batch["input_ids"].shape[1]:])
    return answers, torch.cat(logits)


def first_token_kl(reference: Tensor, reduced: Tensor) -> float:
    """Mean KL(reference || reduced) of the softmax of two `[N, V]` logit tensors."""
    p = reference.log_softmax(-1)
    q = reduced.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def prefill_seconds(model: nn.Module, inputs: dict[str, Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(**inputs, use_cache=True)
    return time.perf_counter() - start


def run_vlm_bench(model: nn.Module, tokenizer: Any, rows: list[VlmVariant], crops: Tensor,
                  question: str, batch_sizes: Sequence[int] = (1, 8), repeats: int = 5,
                  progress: Callable[[int], Any] | None = None) -> list[dict[str, Any]]:
    """One result row per variant (the unreduced one first): fidelity, then timings."""
    from vtok.eval.vlm_model import prompt_batch

    tick = progress or (lambda n: None)
    with torch.no_grad():
        base_answers, base_logits = answers_and_logits(model, tokenizer, crops, question)
    results = []
    for row in rows:
        result: dict[str, Any] = {"variant": row.label, "method": row.method, "keep": row.keep,
                                  "where": row.where or None, "layer": row.layer}
        if row.method is not None:
            try:
                with row.attach(model) as handle, torch.no_grad():
                    answers, logits = answers_and_logits(model, tokenizer, crops, question)
                    before, after = handle.last_counts or (1, 1)  # None: keep=1, no hooks
            except (ValueError, RuntimeError) as err:  # a method that cannot run here
                result["error"] = str(err)
                results.append(result)
                tick(1)
                continue
            result["visual_kept"] = after / max(before, 1)
            result["agreement"] = sum(a == b for a, b in zip(answers, base_answers,
                                                             strict=True)) / len(answers)
            result["first_token_kl"] = first_token_kl(base_logits, logits)
        else:
            result.update(visual_kept=1.0, agreement=1.0, first_token_kl=0.0)
        results.append(result)
        tick(1)
    for b in batch_sizes:
        pixels = crops[:b]
        if pixels.shape[0] < b:  # fewer crops than the batch: repeat them
            pixels = crops.repeat(-(-b // crops.shape[0]), 1, 1, 1)[:b]
        inputs = {**prompt_batch(tokenizer, [question] * b,
                                 image_tokens=model.config.image_seq_length),
                  "pixel_values": pixels}
        _time_round_robin(model, rows, results, inputs, b, repeats, tick)
    return results


def _time_round_robin(model: nn.Module, rows: list[VlmVariant], results: list[dict],
                      inputs: dict[str, Tensor], b: int, repeats: int,
                      tick: Callable[[int], Any]) -> None:
    """Prefill times and speed-ups at batch `b`: in each of `repeats` rounds every variant is
    timed right after the unreduced model, and its speed-up is the median of those adjacent
    ratios, so a shared machine's changing load cancels out."""
    live = [i for i, r in enumerate(results) if "error" not in r]
    times: dict[int, list[float]] = {i: [] for i in live}
    ratios: dict[int, list[float]] = {i: [] for i in live}
    for i in live:  # warm-up
        _timed(model, rows[i], inputs)
    for _ in range(repeats):
        for i in live:
            base = _timed(model, rows[0], inputs)
            times[i].append(_timed(model, rows[i], inputs))
            ratios[i].append(base / times[i][-1])
            tick(1)
    for i in live:
        results[i][f"prefill_ms_b{b}"] = 1000 * statistics.median(times[i])
        results[i][f"speedup_b{b}"] = statistics.median(ratios[i])


def _timed(model: nn.Module, row: VlmVariant, inputs: dict[str, Tensor]) -> float:
    if row.method is None:
        return prefill_seconds(model, inputs)
    with row.attach(model):
        return prefill_seconds(model, inputs)
