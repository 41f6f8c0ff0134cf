"""Train one of the tokenizers shipped in `src/vtok/pretrained/` and record how it was made.

    python scripts/train_pretrained.py conv2d-f8   # or titok-flex, conv3d-f8t4; --resume continues

A recipe is one or more stages run in order on the default photos' (clips') train split (never
the val split); each later stage starts from the weights the stage before exported. A stage is a
TrainConfig (`vtok.train`, works under torchrun) or a DistillConfig (`vtok.train.distill`, one
process, teaching a titok a shipped conv2d's codes). A stage whose run folder already holds an
exported model is not run again. At the end the last stage's EMA model is copied to
src/vtok/pretrained/NAME/ (in float16 where HALF says so, to stay small) with TRAINING.md: the
command, the machine, each stage's recipe and wall time and the last training metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from vtok.models import load
from vtok.train import TrainConfig, train
from vtok.train.distill import DistillConfig, distill

ROOT = Path(__file__).resolve().parents[1]
# stages 1-3 train the preset's shape with 128 codes; stage 4 grows them to the preset's 192
_CONV2D_STAGE1 = TrainConfig(
    preset="conv2d-f8-cpu", model={"quantizer_options": {"codebook_size": 128}}, steps=3600,
    batch_size=8, crop_size=128, lr=4e-4, warmup=200, gan_start=2400, gan_weight=0.1,
    ema_decay=0.999, checkpoint_every=250, sample_every=500, log_every=25,
    out="runs/pretrained-conv2d-f8")
RECIPES = {
    "conv2d-f8": [
        _CONV2D_STAGE1,
        # fine-tune on the larger photo set with random zoom-out crops, GAN on almost at once
        _CONV2D_STAGE1.replace(
            init="runs/pretrained-conv2d-f8/model", steps=2600, min_scale=0.5, lr=2e-4,
            warmup=100, gan_start=200, out="runs/pretrained-conv2d-f8-stage2"),
        # the decoder alone, with LPIPS weighted up: the encoder and codebook stay frozen, so
        # every token (and the token prior trained on them) stays the same
        _CONV2D_STAGE1.replace(
            init="runs/pretrained-conv2d-f8-stage2/model", train_only=["decoder"], steps=2400,
            min_scale=0.5, lr=1e-4, warmup=100, lpips_weight=2.0, gan_start=300,
            out="runs/pretrained-conv2d-f8-stage3"),
        # 192 codes instead of 128 (log2 192 = 7.58 bits a token, 0.118 bpp at 256x256; raw
        # packing spends 8): each new code splits one of the most used ones, then the whole
        # model adapts to the finer codebook
        _CONV2D_STAGE1.replace(
            init="runs/pretrained-conv2d-f8-stage3/model", grow_codebook=True,
            model={"quantizer_options": {"codebook_size": 192}}, steps=2400, min_scale=0.5,
            lr=1e-4, warmup=100, lpips_weight=2.0, gan_start=300,
            out="runs/pretrained-conv2d-f8-stage4"),
        # the 178-photo train split (stages 1-4 ran on its 50 earlier photos) and 256 codes
        # (raw packing spends the same 8 bits a token as with 192; entropy coding ~0.4 more)
        _CONV2D_STAGE1.replace(
            init="runs/pretrained-conv2d-f8-stage4/model", grow_codebook=True,
            model={"quantizer_options": {"codebook_size": 256}}, steps=2400, min_scale=0.5,
            lr=1e-4, warmup=100, lpips_weight=2.0, gan_start=300,
            out="runs/pretrained-conv2d-f8-stage5"),
    ],
    "titok-flex": [
        # the transformers learn conv2d-f8's codes from its frozen encoder's latent grid. Pixel
        # training of a 1D tokenizer from scratch (preset titok-cpu, 2000 steps, 44 min) and
        # distilling without quadtree token regions (1000 steps) both gave reconstructions
        # that did not depend on the tokens. The teacher is conv2d-f8 as it ships, after its
        # stage 5 (256 codes), whose conv pair titok-flex holds: run the conv2d-f8 recipe
        # first (a stage whose folder holds a model is not rerun, so mixing in folders from
        # elsewhere would build later stages on other weights)
        DistillConfig(teacher="runs/pretrained-conv2d-f8-stage5/model", preset="titok-f8-cpu",
                      model={"grid_codes": 256}, steps=3500, crops=8192, batch_size=32,
                      out="runs/pretrained-titok-f8"),
    ],
    "conv3d-f8t4": [
        # the shipped conv2d-f8 inflated into the causal video model (every frame coded as the
        # image model codes it, time convs starting as the identity) with its 256 codes grown
        # to 512, then trained on 9-frame clips: half of them the default clips' train split,
        # half photos of the train split seen through a random camera move (five real clips
        # alone are too few scenes); every 5th step one-frame clips keep stills sharp. No GAN:
        # too few steps for one to settle
        TrainConfig(preset="conv3d-f8t4-cpu", init="conv2d-f8", grow_codebook=True,
                    steps=900, batch_size=4, crop_size=128, clip_frames=9, image_every=5,
                    photo_motion=0.5, min_scale=0.5, lpips_frames=3, lr=1.5e-4, warmup=50,
                    gan_weight=0.0, ema_decay=0.998, checkpoint_every=50, sample_every=150,
                    log_every=10, workers=1, out="runs/pretrained-conv3d-f8t4"),
    ],
}
HALF = {"titok-flex", "conv3d-f8t4"}  # stored in float16: 13 MB instead of 27 MB, 7 not 14


def stage_done(config: TrainConfig | DistillConfig) -> bool:
    return (Path(config.out) / "model" / "config.json").exists()


def stage_lines(config: TrainConfig | DistillConfig, number: int) -> list[str]:
    summary_path = Path(config.out) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    minutes = f"{summary['seconds'] / 60:.1f} min" if "seconds" in summary else "not recorded"
    if isinstance(config, DistillConfig):
        kind = f"distillation from {config.teacher} (one process)"
    else:
        kind = (f"world size {summary.get('world_size', '?')}, "
                f"{summary.get('skipped_steps', '?')} steps skipped by the NaN guard")
    return [
        f"### stage {number}: {config.steps} steps, wall time {minutes}, {kind}",
        "",
        f"`{json.dumps(config.to_dict())}`",
        "",
    ]


def write_record(name: str, stages: list[TrainConfig | DistillConfig], dest: Path) -> None:
    with open(Path(stages[-1].out) / "log.csv") as f:
        rows = list(csv.DictReader(f))
    keys = ("l1", "lpips", "psnr", "usage", "perplexity", "loss", "mse", "accuracy",
            "val_mse_8", "val_mse_32", "val_mse_128")
    last = {k: v for k, v in rows[-1].items() if k in keys}
    clips = load(Path(stages[-1].out) / "model").codes_clips
    data = ("the default clips' train split and photos of the default photos' train split "
            "(`vtok data prepare`)" if clips else
            "the default photos' train split (`vtok data prepare`)")
    scored = [r for r in rows if r.get("val_psnr") not in (None, "", "nan")]
    val = [f"Validation (the val clip's first {stages[-1].clip_frames} frames, "
           f"{stages[-1].crop_size}x{stages[-1].crop_size} centre crops) at step "
           f"{scored[-1]['step']}: PSNR {float(scored[-1]['val_psnr']):.2f} dB, LPIPS "
           f"{float(scored[-1]['val_lpips']):.4f}.", ""] if scored else []
    results = ("`python benchmarks/video_codecs.py --tokenizer NAME` (against H.264, H.265 "
               "and AV1; JSON in `benchmarks/results/`)" if clips else
               "`python benchmarks/tokenizer_quality.py` "
               "(JSON in `benchmarks/results/tokenizers.json`)")
    lines = [
        f"# {name}",
        "",
        f"Made by `python scripts/train_pretrained.py {name}` on {data}, on "
        f"{platform.machine()} with {torch.get_num_threads()} threads per process, torch "
        f"{torch.__version__}.",
        "",
        *[line for i, c in enumerate(stages, 1) for line in stage_lines(c, i)],
        f"Last logged training metrics ({stages[-1].crop_size}x{stages[-1].crop_size} crops): "
        f"{json.dumps(last)}",
        "",
        *val,
        f"Results: {results}.",
    ]
    (dest / "TRAINING.md").write_text("\n".join(lines) + "\n")


def kept_prior(dest: Path, new_model: Path) -> dict[str, bytes]:
    """The shipped token prior's files, when the new model tokenizes exactly as the shipped one
    (every weight outside the decoder equal), with the prior's section of the old TRAINING.md;
    otherwise nothing: run scripts/train_prior.py."""
    files = {p.name: p.read_bytes() for p in sorted(dest.glob("prior.*"))}
    notes = (dest / "TRAINING.md").read_text() if (dest / "TRAINING.md").exists() else ""
    heading = "\n## Token prior\n"
    if heading in notes:
        files["TRAINING.md"] = (heading + notes.split(heading, 1)[1]).encode()
    if not files or not (dest / "config.json").exists():
        return {}
    old, new = load(dest), load(new_model)
    old_state, new_state = old.state_dict(), new.state_dict()
    same = old_state.keys() == new_state.keys() and all(
        torch.equal(old_state[k], new_state[k]) for k in old_state
        if not k.startswith("decoder."))
    if not same:
        print(f"{dest.name}: the tokens changed; retrain its prior with scripts/train_prior.py")
        return {}
    # the prior names the tokenizer it was trained for; the tokens are the same, the id is new
    config = json.loads(files["prior.json"])
    if config.get("tokenizer_id") != old.tokenizer_id:
        print(f"{dest.name}: its prior was trained for another tokenizer; retrain it")
        return {}
    config["tokenizer_id"] = new.tokenizer_id
    files["prior.json"] = (json.dumps(config, indent=2) + "\n").encode()
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--resume", action="store_true",
                        help="continue the first unfinished stage from its last checkpoint")
    parser.add_argument("--start", type=int, default=1, metavar="N",
                        help="run stages N and later only; stage N-1 must have exported its "
                             "model (its run folder, or the shipped weights it produced)")
    args = parser.parse_args()
    stages = RECIPES[args.name]
    if not 1 <= args.start <= len(stages):
        parser.error(f"--start: {args.name} has stages 1 to {len(stages)}")
    if args.start > 1 and not stage_done(stages[args.start - 2]):
        parser.error(f"--start {args.start}: stage {args.start - 1} has no model in "
                     f"{stages[args.start - 2].out}/model")
    for number, config in enumerate(stages, 1):
        if number < args.start:
            continue
        if stage_done(config):
            print(f"stage {number}: {config.out} already holds its model, not run again")
            continue
        resume = args.resume and (Path(config.out) / "checkpoints").is_dir()
        (distill if isinstance(config, DistillConfig) else train)(config, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    dest = ROOT / "src" / "vtok" / "pretrained" / args.name
    prior = kept_prior(dest, Path(stages[-1].out) / "model")
    shutil.rmtree(dest, ignore_errors=True)
    if args.name in HALF:
        load(Path(stages[-1].out) / "model").save_pretrained(dest, dtype=torch.float16)
    else:
        shutil.copytree(Path(stages[-1].out) / "model", dest)
    write_record(args.name, stages, dest)
    for name, data in prior.items():
        if name == "TRAINING.md":  # the prior's section of the old notes
            with open(dest / name, "a") as notes:
                notes.write(data.decode())
        else:
            (dest / name).write_bytes(data)
    print(f"wrote {dest}" + (" (token prior kept: the tokens are unchanged)" if prior else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
