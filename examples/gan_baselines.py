"""GAN and WGAN-GP baselines for the BEAM paper's mixture-of-Gaussians benchmarks.

Small fully connected torch networks, trained on the same training samples as
the RBMs in ``beam_mixtures.py`` and scored the same way (that script imports
:func:`train_gan` and :func:`gan_sample`).  Architecture (both models):

* generator: z ~ N(0, I_8) -> 3 hidden layers of 64 units (ReLU) -> linear output (data dim);
* discriminator / critic: data -> 3 hidden layers of 64 units (LeakyReLU 0.2) -> one logit.

``kind="gan"``: the original GAN with the generator's non-saturating loss
``-log D(G(z))`` (Goodfellow et al. 2014), one discriminator step per
generator step, Adam(lr 1e-3, betas 0.5/0.999).

``kind="wgan"``: Wasserstein GAN with a gradient penalty (WGAN-GP, Gulrajani
et al. 2017; no weight clipping): penalty weight 10 on ``(|grad D| - 1)^2`` at
random interpolates, 5 critic steps per generator step, Adam(betas 0.5/0.9
as in that paper, lr 3e-4: on mog-ring8 after 3000 generator steps lr 1e-4
had found 3/8 modes and lr 1e-3 0/8, 3e-4 8/8).

Run alone (one data set, prints the same scores as ``beam_mixtures.py``)::

    OMP_NUM_THREADS=1 python examples/gan_baselines.py --dataset mog-ring8 --kind wgan
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

GAN_KINDS = ("gan", "wgan")
LATENT_DIM = 8
HIDDEN = (64, 64, 64)
GAN_LR = 1e-3
WGAN_LR = 3e-4


def _mlp(n_in: int, n_out: int, hidden: tuple[int, ...], act: type[nn.Module],
         **act_kw) -> nn.Sequential:
    layers: list[nn.Module] = []
    last = n_in
    for h in hidden:
        layers += [nn.Linear(last, h), act(**act_kw)]
        last = h
    layers.append(nn.Linear(last, n_out))
    return nn.Sequential(*layers)


def make_generator(dim: int, latent_dim: int = LATENT_DIM,
                   hidden: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    """Generator MLP: latent (latent_dim) -> hidden ReLU layers -> linear output (dim)."""
    return _mlp(latent_dim, dim, hidden, nn.ReLU)


def make_discriminator(dim: int, hidden: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    """Discriminator / critic MLP: data (dim) -> hidden LeakyReLU layers -> one logit."""
    return _mlp(dim, 1, hidden, nn.LeakyReLU, negative_slope=0.2)


def _gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor,
                      gen: torch.Generator) -> Tensor:
    eps = torch.rand(real.shape[0], 1, generator=gen)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.norm(dim=1) - 1.0) ** 2).mean()


def train_gan(data: Tensor, kind: str = "gan", steps: int = 3000, batch_size: int = 100,
              seed: int = 0, latent_dim: int = LATENT_DIM,
              hidden: tuple[int, ...] = HIDDEN, lr: float | None = None) -> nn.Module:
    """Train a GAN (non-saturating) or WGAN-GP generator on ``data`` (n, d); returns it.

    ``steps`` counts generator updates; all randomness (initial weights,
    minibatches, latents) comes from ``seed``.  ``lr`` overrides the Adam
    learning rate of both networks.
    """
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN kind {kind!r}: use one of {GAN_KINDS}")
    data = torch.as_tensor(data, dtype=torch.float32)
    n, dim = data.shape
    torch.manual_seed(seed)  # nn.Linear initialisation
    g_net = make_generator(dim, latent_dim, hidden)
    d_net = make_discriminator(dim, hidden)
    gen = torch.Generator().manual_seed(seed)
    if kind == "gan":
        lr = lr or GAN_LR
        opt_g = torch.optim.Adam(g_net.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d_net.parameters(), lr=lr, betas=(0.5, 0.999))
        n_critic = 1
    else:
        lr = lr or WGAN_LR
        opt_g = torch.optim.Adam(g_net.parameters(), lr=lr, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(d_net.parameters(), lr=lr, betas=(0.5, 0.9))
        n_critic = 5
    bce = nn.functional.binary_cross_entropy_with_logits
    for _ in range(steps):
        for _ in range(n_critic):
            real = data[torch.randint(n, (batch_size,), generator=gen)]
            with torch.no_grad():
                fake = g_net(torch.randn(batch_size, latent_dim, generator=gen))
            d_real, d_fake = d_net(real), d_net(fake)
            if kind == "gan":
                loss_d = (bce(d_real, torch.ones_like(d_real))
                          + bce(d_fake, torch.zeros_like(d_fake)))
            else:
                loss_d = (d_fake.mean() - d_real.mean()
                          + 10.0 * _gradient_penalty(d_net, real, fake, gen))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        d_fake = d_net(g_net(torch.randn(batch_size, latent_dim, generator=gen)))
        loss_g = bce(d_fake, torch.ones_like(d_fake)) if kind == "gan" else -d_fake.mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    return g_net.eval()


@torch.no_grad()
def gan_sample(generator: nn.Module, n: int, seed: int = 0) -> Tensor:
    """``n`` samples of a trained generator, from latents drawn with ``seed``."""
    latent_dim = next(generator.parameters()).shape[1]
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    return generator(z)


def main(argv: list[str] | None = None) -> dict:
    """Train one baseline on one mixture and print its scores."""
    from boltzkit.data import load_dataset, mixture_spec
    from boltzkit.metrics.divergence import forward_kl, mode_coverage, reverse_kl

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mog-ring8")
    p.add_argument("--kind", default="gan", choices=GAN_KINDS)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train, _ = load_dataset(args.dataset, "train", seed=args.seed, limit=args.train_size)
    test, _ = load_dataset(args.dataset, "test", seed=args.seed)
    g = train_gan(train, args.kind, steps=args.steps, seed=args.seed, lr=args.lr)
    x = gan_sample(g, args.n_samples, seed=args.seed + 1)
    spec = mixture_spec(args.dataset)
    cov = mode_coverage(x, spec["means"], spec["std"])
    out = {"modes": f"{cov['modes_covered']}/{cov['n_modes']}",
           "high_quality": cov["high_quality_fraction"],
           "forward_kl": forward_kl(test, x), "reverse_kl": reverse_kl(test, x)}
    print(out)
    return out


if __name__ == "__main__":
    main()
