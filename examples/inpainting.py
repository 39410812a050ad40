"""Denoising and inpainting with an RBM: Gibbs sampling with the known pixels clamped.

- **Inpainting**: the bottom half of each test digit is hidden; the top half is clamped
  (``RBM.sample(clamp_mask=..., clamp_values=...)``) and the bottom half is filled in by
  Gibbs sampling.  The averaged completion, thresholded at 0.5, is scored by the fraction
  of wrong hidden pixels, beside the simplest baseline (each hidden pixel set to its
  thresholded training mean).
- **Denoising**: 10% of the pixels are flipped; a few Gibbs sweeps started at the noisy
  image pull it back towards the model; the fraction of wrong pixels (average of the runs
  thresholded at 0.5) is printed before and after, beside a 3x3 median filter baseline.

Pictures: ``inpainting.png`` and ``denoising.png`` (rows: truth, corrupted, restored).

Run: ``python examples/inpainting.py --data-dir ../shared/data`` (trains a 784x500 RBM first,
or ``--model rbm.safetensors`` to use a trained one).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _common import add_data_args, image_shape, load, out_dir
from scipy.ndimage import median_filter

from boltzkit import PersistentCD, Trainer, load_model, make_rbm, visual
from boltzkit.objectives import LikelihoodGradient


def inpaint(model, images: torch.Tensor, known: torch.Tensor, steps: int, repeats: int,
            gen: torch.Generator) -> torch.Tensor:
    """Average of ``repeats`` clamped Gibbs completions of each image (known pixels kept)."""
    total = torch.zeros_like(images)
    for _ in range(repeats):
        total += model.sample(len(images), steps=steps, generator=gen, init=images * known,
                              clamp_mask=known.expand_as(images), clamp_values=images)
    return total / repeats


def denoise(model, noisy: torch.Tensor, steps: int, repeats: int,
            gen: torch.Generator) -> torch.Tensor:
    """Average of ``repeats`` short Gibbs runs started at the noisy images."""
    total = torch.zeros_like(noisy)
    for _ in range(repeats):
        total += model.sample(len(noisy), steps=steps, generator=gen, init=noisy)
    return total / repeats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--model", default=None, help="a trained Bernoulli RBM (.safetensors)")
    p.add_argument("--n-hidden", type=int, default=500)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-test", type=int, default=500, help="test images to restore")
    p.add_argument("--noise", type=float, default=0.1, help="fraction of pixels flipped")
    p.add_argument("--steps", type=int, default=50, help="Gibbs sweeps per completion")
    p.add_argument("--repeats", type=int, default=10, help="completions averaged")
    args = p.parse_args(argv)
    if not 0 < args.noise < 0.5:
        p.error("--noise must be in (0, 0.5)")
    out = out_dir(args)
    train, _ = load(args, "train")
    test, _ = load(args, "test")
    test = test[: args.n_test]
    shape = image_shape(train.shape[1])
    if args.model:
        model = load_model(args.model)
    else:
        model = make_rbm(train.shape[1], args.n_hidden, seed=args.seed)
        Trainer(model, PersistentCD(k=1, n_chains=100), LikelihoodGradient(centering=True),
                epochs=args.epochs, batch_size=100, lr=0.01, momentum=0.9,
                seed=args.seed).fit(train)
    test = model.prepare(test)
    gen = torch.Generator().manual_seed(args.seed)

    # inpainting: top half known
    rows = torch.arange(train.shape[1]) // shape[1]
    known = (rows < shape[0] // 2).to(test.dtype).unsqueeze(0)
    hidden = known[0] == 0
    filled = inpaint(model, test, known, args.steps, args.repeats, gen)
    mean_fill = test * known + train.mean(0).to(test) * (1 - known)
    wrong = lambda a, m=slice(None): float(((a > 0.5).to(test) != test)[:, m].float().mean())  # noqa: E731

    # denoising: flip a fraction of the pixels
    flip = torch.rand(test.shape, generator=gen) < args.noise
    noisy = torch.where(flip, 1 - test, test)
    cleaned = denoise(model, noisy, max(1, args.steps // 10), args.repeats, gen)
    med = torch.from_numpy(np.stack([median_filter(x.reshape(shape).numpy(), size=3).ravel()
                                     for x in noisy])).to(test)

    n = min(10, len(test))
    visual.sample_grid(torch.cat([test[:n], (test * known)[:n], filled[:n]]),
                       out / "inpainting.png", image_shape=shape, n_cols=n, n=3 * n)
    visual.sample_grid(torch.cat([test[:n], noisy[:n], cleaned[:n]]), out / "denoising.png",
                       image_shape=shape, n_cols=n, n=3 * n)
    summary = {"dataset": args.dataset, "n_test": len(test),
               "inpaint_wrong_hidden_pixels": round(wrong(filled, hidden), 4),
               "inpaint_wrong_mean_image_baseline": round(wrong(mean_fill, hidden), 4),
               "denoise_wrong_pixels_noisy": round(wrong(noisy), 4),
               "denoise_wrong_pixels_rbm": round(wrong(cleaned), 4),
               "denoise_wrong_pixels_median_filter": round(wrong(med), 4)}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
