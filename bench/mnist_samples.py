"""Benchmark: how good are a prior's MNIST samples? Scored by a small CNN digit classifier.

The classifier is trained on the 7,000 training images (../shared/data/mnist) the first time and cached in
bench/.cache/. Then, for the prior run given (single-level or VQ-VAE-2):

* class-conditional samples: the fraction the classifier labels as the class requested;
* unconditional samples (a class-conditional prior draws the class from the training frequencies first, i.e.
  samples its marginal p(x)): the classifier score exp(E[KL(p(y|x) || p(y))]) (maximum 10), printed beside
  the score of the real test images;
* the classifier's accuracy on the 1,000 test images, and the prior's test NLL from its metrics.jsonl.

    python bench/mnist_samples.py runs/mnist_prior                 # ~1-3 minutes on one core
    python bench/mnist_samples.py runs/mnist_vqvae2_prior --per-class 20 --unconditional 500
    python bench/mnist_samples.py runs/mnist_prior --guidance 3     # classifier-free guidance weight
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from digit_classifiers import (  # noqa: E402
    accuracy,
    classifier_score,
    mnist_classifier,
    mnist_split,
    print_table,
    prior_nll_rows,
    probabilities,
    timed,
)

from vqtok.modality import modality_of  # noqa: E402
from vqtok.prior.generate import (  # noqa: E402
    describe_guidance,
    draw_labels,
    load_prior_run,
    sample_codes,
)


def to_28(images: torch.Tensor) -> torch.Tensor:
    """Decoded (N, 1, H, W) -> the classifier's 28x28 (centre crop of a padded tokenizer's output)."""
    h, w = images.shape[-2:]
    top, left = (h - 28) // 2, (w - 28) // 2
    return images[..., top : top + 28, left : left + 28]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", type=Path, help="prior run folder (or prior .safetensors)")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    parser.add_argument("--per-class", type=int, default=20, help="class-conditional samples per digit")
    parser.add_argument("--unconditional", type=int, default=500, help="unconditional samples")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance weight (default: the prior's recipe, model.guidance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    parser.add_argument("--grid", type=Path, help="also write the class-conditional samples as a PNG grid")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    classifier = mnist_classifier(args.data)
    test_x, test_y = mnist_split(args.data, "test")
    test_probs = probabilities(classifier, test_x, lambda x, i, train: x[i])
    rows = [("classifier accuracy on the 1,000 real test images", f"{accuracy(test_probs, test_y):.3f}"),
            ("classifier score of the real test images (max 10)", f"{classifier_score(test_probs):.2f}")]

    priors, tok, _ = load_prior_run(args.prior)
    run = args.prior if args.prior.is_dir() else args.prior.parent
    rows += prior_nll_rows(run)
    gen = torch.Generator().manual_seed(args.seed)
    classify = lambda x, i, train: to_28(x[i])  # noqa: E731

    if priors[0].layout.num_classes:
        labels = torch.arange(10).repeat_interleave(args.per_class)
        codes, sampling = timed(lambda: sample_codes(priors, len(labels), labels, args.temperature, generator=gen,
                                                     guidance=args.guidance))
        images, decoding = timed(lambda: modality_of(tok.config).decode_samples(tok, codes))
        probs = probabilities(classifier, images, classify)
        per_class = [accuracy(probs[labels == c], labels[labels == c]) for c in range(10)]
        rows.append((f"class-conditional samples labelled as requested ({len(labels)})", f"{accuracy(probs, labels):.3f}"))
        rows.append(("  per class 0..9", " ".join(f"{a:.2f}" for a in per_class)))
        rows.append(("  sampling, decoding time (s)", f"{sampling:.1f}, {decoding:.1f}"))
        if args.grid:
            from vqtok.plots import image_grid, save_png

            order = torch.arange(len(labels)).reshape(10, args.per_class).T.flatten()  # one digit per column
            save_png(image_grid(images[order], nrow=10), args.grid)
    labels = draw_labels(priors[0], args.unconditional, None, gen)
    codes, sampling = timed(lambda: sample_codes(priors, args.unconditional, labels, args.temperature, generator=gen,
                                                 guidance=args.guidance))
    images, decoding = timed(lambda: modality_of(tok.config).decode_samples(tok, codes))
    probs = probabilities(classifier, images, classify)
    how = "y ~ p(y), then x ~ p(x | y)" if labels is not None else "unconditional prior"
    rows.append((f"classifier score of {args.unconditional} unconditional samples ({how})",
                 f"{classifier_score(probs):.2f}"))
    rows.append(("  sampling, decoding time (s)", f"{sampling:.1f}, {decoding:.1f}"))

    print_table(f"MNIST samples of {args.prior} (levels {', '.join(p.layout.level for p in priors)}, "
                f"temperature {args.temperature}, guidance {describe_guidance(priors, args.guidance)}, seed {args.seed}, {args.threads} thread(s))", rows)


if __name__ == "__main__":
    main()
