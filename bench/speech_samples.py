"""Benchmark: do a speech prior's class-conditional samples say the digit asked for? Scored by a log-mel CNN.

The classifier is trained on the FSDD training takes (5-49, fsdd rule) the first time and cached in
bench/.cache/. Printed: its accuracy on the 250 test clips (takes 0-4) as recorded, and on the same clips
after a round trip through the prior's tokenizer (the ceiling a prior over these codes can reach); then the
fraction of class-conditional samples it labels as requested, the samples' lengths, and the prior's test NLL
(bits per code and per second) from its metrics.jsonl. The samples are written as WAV files to listen to.

    python bench/speech_samples.py runs/speech_prior                       # a few minutes on one core
    python bench/speech_samples.py runs/speech_prior --per-class 10 --out samples_wav/
    python bench/speech_samples.py runs/speech_prior --guidance 2          # classifier-free guidance weight
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from digit_classifiers import (  # noqa: E402
    CACHE,
    accuracy,
    clip_batch,
    fsdd_split,
    print_table,
    prior_nll_rows,
    probabilities,
    speech_classifier,
    timed,
)

from vqtok.data.audio import write_wav  # noqa: E402
from vqtok.modality import modality_of  # noqa: E402
from vqtok.prior.generate import describe_guidance, load_prior_run, sample_codes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", type=Path, help="prior run folder (or prior .safetensors)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"))
    parser.add_argument("--per-class", type=int, default=10, help="class-conditional samples per digit")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance weight (default: the prior's recipe, model.guidance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    parser.add_argument("--out", type=Path, default=CACHE / "speech_samples", help="folder for the WAV samples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    classifier = speech_classifier(args.data)
    test_clips, test_y = fsdd_split(args.data, "test")
    rows = [("classifier accuracy on the 250 real test clips",
             f"{accuracy(probabilities(classifier, test_clips, clip_batch, 32), test_y):.3f}")]

    priors, tok, tok_path = load_prior_run(args.prior)
    with torch.no_grad():
        round_trip = [tok.decode(tok.encode(c), size=len(c))[0] for c in test_clips]
    rows.append((f"  same clips through the tokenizer ({tok.fingerprint})",
                 f"{accuracy(probabilities(classifier, round_trip, clip_batch, 32), test_y):.3f}"))
    run = args.prior if args.prior.is_dir() else args.prior.parent
    rows += prior_nll_rows(run)

    if not priors[0].layout.num_classes:
        raise SystemExit(f"{args.prior}: not a class-conditional prior; nothing to score against")
    gen = torch.Generator().manual_seed(args.seed)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    codes, sampling = timed(lambda: sample_codes(priors, len(labels), labels, args.temperature, top_p=args.top_p,
                                                 generator=gen, guidance=args.guidance))
    waves, decoding = timed(lambda: modality_of(tok.config).decode_samples(tok, codes))
    probs = probabilities(classifier, waves, clip_batch, 32)
    per_class = [accuracy(probs[labels == c], labels[labels == c]) for c in range(10)]
    durations = torch.tensor([len(w) / tok.sample_rate for w in waves])
    ended = sum(len(c) < priors[0].layout.max_length for c in codes[0])
    rows.append((f"class-conditional samples labelled as requested ({len(labels)})", f"{accuracy(probs, labels):.3f}"))
    rows.append(("  per digit 0..9", " ".join(f"{a:.1f}" for a in per_class)))
    rows.append(("  sample length (s): mean, min, max",
                 f"{durations.mean():.2f}, {durations.min():.2f}, {durations.max():.2f}"))
    rows.append(("  samples that ended with EOS", f"{ended}/{len(labels)}"))
    rows.append(("  sampling, decoding time (s)", f"{sampling:.1f}, {decoding:.1f}"))
    real = torch.tensor([len(c) / 8000 for c in test_clips])
    rows.append(("real test clip length (s): mean, min, max", f"{real.mean():.2f}, {real.min():.2f}, {real.max():.2f}"))
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (wave, label) in enumerate(zip(waves, labels)):
        guess = int(probs[i].argmax())
        write_wav(args.out / f"digit{int(label)}_{i % args.per_class:02d}_heard{guess}.wav", wave, tok.sample_rate)

    print_table(f"speech samples of {args.prior} (tokenizer {tok_path}, temperature {args.temperature}, "
                f"top-p {args.top_p}, guidance {describe_guidance(priors, args.guidance)}, seed {args.seed}, {args.threads} thread(s)); WAVs in {args.out}", rows)


if __name__ == "__main__":
    main()
