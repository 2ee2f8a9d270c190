"""Is the morphology regressor's ellipticity learnt from shape or from galaxy type? (issue 25)

Not a speed benchmark: a learnability comparison, measured in one run against two references
on the same validation galaxies. Synthetic GalSim cutouts like the demo survey's (Moffat PSF of
0.9 arcsec FWHM, 0.2 arcsec pixels, 48 px, 3 bands with ~14 nJy sky noise, r = 19-23, the
simulator's laws of size, Sersic index and Rayleigh |g| by galaxy type, colours by type, random
position angles) train kim_brunner with the train stage's normalisation, crop, augmentation,
Huber loss on standardised targets and AdamW + cosine, in two variants:

A  the stage's :class:`~astroflow.train.morphology.MorphologyModule`: targets (n, |g|);
B  targets (log10 n, e1, e2) that turn with the image under the dihedral augmentation
   (:func:`~astroflow.train.augment.dihedral_spin2`), |g| = hypot(e1, e2).

It prints, per variant, the Pearson r of predicted and true |g| (and its slope), of log n, and
the r of the predicted |g| with the *type prior* E[|g| | type] = sqrt(pi / 2) (0.12 + 0.05 t)
(what a regressor that knows each galaxy's type and nothing of its shape predicts); beside
them the moments baseline (:func:`astroflow.evaluate.morphology_baseline.measure_morphology`,
r band) and the type prior's own r with |g|.

    python benchmarks/bench_morphology_targets.py [SEED N_TRAIN N_VAL EPOCHS]  # 0 4000 800 6

Defaults take ~10 min on 2 CPU cores; docs/train.md has the result.
"""
import math
import sys
import time
import warnings

import galsim
import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from astroflow.evaluate.morphology_baseline import measure_morphology
from astroflow.train.augment import dihedral_spin2, random_crop, random_dihedral_k
from astroflow.train.morphology import MorphologyModule, fit_target_scaler
from astroflow.train.nets import build_net, normalise_cutouts
from astroflow.train.normalize import fit_band_scale_njy

torch.set_num_threads(2)
SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 0
N_TRAIN, N_VAL, EPOCHS = (int(v) for v in (sys.argv[2:5] if len(sys.argv) > 4 else (4000, 800, 6)))
MAG_LO, MAG_HI = 19.0, 23.0
SIGMA_NJY, SCALE, S = 14.0, 0.2, 48
GRID = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0])


def population(rng, n):
    mag = rng.uniform(MAG_LO, MAG_HI, n)
    t = rng.uniform(0.0, 3.0, n)
    log_r = np.log10(0.8) - 0.11 * (mag - 19.0) + rng.normal(0.0, 0.18, n)
    r_half = np.clip(10**log_r * (1.0 - 0.07 * (3.0 - t)), 0.05, 5.0)
    n_cont = 4.0 - 1.1 * t + rng.normal(0.0, 0.3, n)
    sersic = GRID[np.abs(n_cont[:, None] - GRID[None, :]).argmin(axis=1)]
    g = np.minimum(rng.rayleigh(0.12 + 0.05 * t), 0.7)
    beta = rng.uniform(0.0, np.pi, n)
    colours = np.column_stack([0.9 - 0.25 * t, np.zeros(n), -0.45 + 0.1 * t])
    colours += rng.normal(0.0, 0.05, (n, 3))
    return dict(mag=mag, t=t, r_half=r_half, n=sersic, g=g, beta=beta, colours=colours)


def render(rng, pop):
    psf = galsim.Moffat(beta=3.5, fwhm=0.9)
    out = np.empty((len(pop["mag"]), 3, S, S), np.float32)
    for i in range(len(out)):
        n, hlr = float(pop["n"][i]), float(pop["r_half"][i])
        gal = galsim.Sersic(n=n, half_light_radius=hlr, trunc=8 * hlr if n >= 3 else 0.0)
        gal = gal.shear(g=float(pop["g"][i]), beta=float(pop["beta"][i]) * galsim.radians)
        off = rng.uniform(-0.5, 0.5, 2)
        prof = galsim.Convolve(gal, psf).drawImage(nx=S, ny=S, scale=SCALE, offset=off).array
        for b in range(3):
            flux = 10 ** (-0.4 * (pop["mag"][i] + pop["colours"][i, b] - 31.4))
            out[i, b] = flux * prof + rng.normal(0.0, SIGMA_NJY, (S, S))
    return out


def e12(pop):
    # GalSim's shear angle is measured from +x (array column) towards +y (array row).
    return np.column_stack([pop["g"] * np.cos(2 * pop["beta"]), pop["g"] * np.sin(2 * pop["beta"])])


class ShearModule(L.LightningModule):
    """Variant: predicts standardised (log10 n, e1, e2); the targets turn with the image."""

    def __init__(self, scale, mean, std):
        super().__init__()
        self.net = build_net("kim_brunner", 3, 44, n_outputs=3)
        self.register_buffer("scale", torch.as_tensor(scale))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x):
        return self.net(normalise_cutouts(x, 44, self.scale).contiguous(
            memory_format=torch.channels_last))

    def training_step(self, batch, _):
        x, y = batch  # y: (log10 n, e1, e2)
        x, ks = random_dihedral_k(random_crop(x, 44))
        y = torch.cat([y[:, :1], dihedral_spin2(y[:, 1:], ks)], dim=1)
        loss = F.huber_loss(self(x), (y - self.mean) / self.std, delta=1.0)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=3e-4, weight_decay=1e-4)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(module, x, y):
    L.seed_everything(SEED, workers=True)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, drop_last=True)
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, loader)
    module.eval()
    return module


def r(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def slope(t, p):
    return float(np.polyfit(t, p, 1)[0])


def main():
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(SEED)
    t0 = time.time()
    tr, va = population(rng, N_TRAIN), population(rng, N_VAL)
    xtr, xva = render(rng, tr), render(rng, va)
    print(f"rendered {N_TRAIN}+{N_VAL} in {time.time() - t0:.0f} s", flush=True)
    scale = fit_band_scale_njy(xtr[:2048])
    prior = np.sqrt(np.pi / 2) * (0.12 + 0.05 * va["t"])  # E[|g| | type]
    m = measure_morphology(xva[:, 1])
    ok = np.isfinite(m).all(axis=1)
    print(f"moments (r band, {ok.sum()} measured): r(|g|) {r(m[ok, 1], va['g'][ok]):.3f}, "
          f"r(log n) {r(np.log10(m[ok, 0]), np.log10(va['n'][ok])):.3f}; "
          f"type prior r(|g|) {r(prior, va['g']):.3f}", flush=True)
    xv = torch.from_numpy(xva)

    # A: the stage's MorphologyModule, targets (n, |g|).
    ytr = np.column_stack([tr["n"], tr["g"]]).astype(np.float32)
    mean, std = fit_target_scaler(ytr)
    t0 = time.time()
    mod = fit(MorphologyModule("kim_brunner", 3, 44, scale.tolist(), mean, std), xtr, ytr)
    with torch.no_grad():
        pa = mod.regressor.physical(mod.regressor(xv)).numpy()
    print(f"A (n, |g|) [{time.time() - t0:.0f} s]: r(|g|) {r(pa[:, 1], va['g']):.3f}, "
          f"slope {slope(va['g'], pa[:, 1]):.3f}, r(pred |g|, type prior) "
          f"{r(pa[:, 1], prior):.3f}, r(log n) {r(np.log10(pa[:, 0]), np.log10(va['n'])):.3f}, "
          f"pred |g| 5-95 % {np.percentile(pa[:, 1], 5):.3f}-{np.percentile(pa[:, 1], 95):.3f}",
          flush=True)

    # B: (log10 n, e1, e2), e1/e2 turned with the dihedral augmentation.
    ytr = np.column_stack([np.log10(tr["n"]), e12(tr)]).astype(np.float32)
    mean, std = ytr.mean(axis=0), ytr.std(axis=0)
    t0 = time.time()
    mod = fit(ShearModule(scale, mean, std), xtr, ytr)
    with torch.no_grad():
        z = mod(xv).numpy() * std + mean
    gb = np.hypot(z[:, 1], z[:, 2])
    ev = e12(va)
    print(f"B (log n, e1, e2) [{time.time() - t0:.0f} s]: r(|g| = hypot) {r(gb, va['g']):.3f}, "
          f"slope {slope(va['g'], gb):.3f}, r(e1) {r(z[:, 1], ev[:, 0]):.3f}, "
          f"r(e2) {r(z[:, 2], ev[:, 1]):.3f}, r(pred |g|, type prior) {r(gb, prior):.3f}, "
          f"r(log n) {r(z[:, 0], np.log10(va['n'])):.3f}", flush=True)


if __name__ == "__main__":
    main()
