"""Benchmark the train stage's hot paths against in-process baselines.

- Loader: batches streamed from a Blosc-compressed Zarr store by whole chunks
  (:class:`ChunkBlockBatches`) versus the same batches sliced from memory
  (:class:`InMemoryBatches`): ``zarr_vs_memory`` = zarr cutouts/s / memory cutouts/s.
- Training: the same model and batches through a Lightning Trainer versus a plain PyTorch
  loop (same augmentation, loss and optimiser): ``lightning_vs_plain`` = Lightning cutouts/s /
  plain cutouts/s (1.0 = no overhead).
- ``cpu_cutouts_per_s``: Lightning training throughput on CPU; the GPU fields stay null
  here (no CUDA device).

The last stdout line is one JSON object. Data are synthetic (noise plus Gaussian and
exponential blobs) written to a temporary Zarr v3 store like the reduce stage writes.

Usage: python benchmarks/bench_train.py [--n-objects 2048] [--train-batches 6] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import zarr
from torch.nn import functional as F

from astroflow.train.augment import random_crop, random_dihedral
from astroflow.train.data import ChunkBlockBatches, FieldRows, InMemoryBatches, load_rows
from astroflow.train.fit import known_lightning_warnings_ignored
from astroflow.train.module import StarGalaxyModule

BANDS, SIZE, CHUNK, BATCH = 3, 48, 256, 64


def write_store(path: Path, n: int, seed: int = 0) -> FieldRows:
    """A synthetic ``images`` store of ``n`` cutouts (half point-like, half extended)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - SIZE // 2
    r = np.hypot(yy, xx)
    star = np.exp(-0.5 * (r / 1.9) ** 2)
    galaxy = np.exp(-r / 2.5)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    group = zarr.open_group(path, mode="w", zarr_format=3)
    arr = group.create_array(
        "images",
        shape=(n, BANDS, SIZE, SIZE),
        chunks=(CHUNK, BANDS, SIZE, SIZE),
        dtype="float32",
        compressors=[zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
    )
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        flux = rng.uniform(2e3, 5e4, size=(m, BANDS, 1, 1))
        shape = np.where(labels[start : start + m, None, None, None] > 0, galaxy, star)
        noise = rng.normal(0, 15.0, size=(m, BANDS, SIZE, SIZE))
        arr[start : start + m] = (flux * shape / shape.sum() + noise).astype(np.float32)
    return FieldRows(path, np.arange(n, dtype=np.int64), labels)


def loader_rate(dataset, repeats: int = 2) -> tuple[float, float]:
    """Best-of-``repeats`` cutouts/s and MB/s for one full pass over ``dataset``."""
    best = np.inf
    n = nbytes = 0
    for epoch in range(repeats):
        dataset.set_epoch(epoch)
        t0 = time.perf_counter()
        n = nbytes = 0
        for x, _ in dataset:
            n += len(x)
            nbytes += x.numel() * x.element_size()
        best = min(best, time.perf_counter() - t0)
    return n / best, nbytes / 2**20 / best


def plain_loop_rate(module: StarGalaxyModule, batches: list, crop: int) -> float:
    """Cutouts/s of a hand-written training loop over ``batches`` (first batch = warm-up)."""
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-4)
    t0 = n = 0
    for k, (x, y) in enumerate(batches):
        if k == 1:
            t0, n = time.perf_counter(), 0
        logits = module.classifier(random_dihedral(random_crop(x, crop)))
        loss = F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


class _Timer(L.Callback):
    """Times training batches after the first (warm-up), as the plain loop does."""

    def __init__(self) -> None:
        self.t0, self.t1, self.n = 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 1:
            self.t0, self.n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= 1:
            self.n += len(batch[1])
            self.t1 = time.perf_counter()

    def rate(self) -> float:
        return self.n / (self.t1 - self.t0)


def lightning_rate(module: StarGalaxyModule, dataset: InMemoryBatches, n_batches: int) -> float:
    """Cutouts/s of Lightning training on the same batches (no validation, no checkpoint)."""
    timer = _Timer()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=n_batches,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=None)
    with known_lightning_warnings_ignored():
        trainer.fit(module, train_dataloaders=loader)
    return timer.rate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-objects", type=int, default=2048)
    parser.add_argument("--train-batches", type=int, default=6, help="timed batches + 1 warm-up")
    parser.add_argument("--model", default="kim_brunner", choices=["kim_brunner", "resnet"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        rows = write_store(Path(tmp) / "bench.zarr", args.n_objects)
        stream = ChunkBlockBatches([rows], BATCH, shuffle=True, seed=0, chunks_per_block=4)
        zarr_rate, zarr_mb = loader_rate(stream)
        images, labels = load_rows([rows])
    memory = InMemoryBatches(images, labels, BATCH, shuffle=True, seed=0)
    mem_rate, _ = loader_rate(memory)
    print(f"loader: zarr {zarr_rate:.0f} cutouts/s ({zarr_mb:.1f} MB/s), memory {mem_rate:.0f}")

    n_batches = args.train_batches
    batches = [b for _, b in zip(range(n_batches), iter(memory), strict=False)]
    scale = [15.0] * BANDS
    plain = plain_loop_rate(StarGalaxyModule(args.model, BANDS, 44, scale), batches, 44)
    light = lightning_rate(StarGalaxyModule(args.model, BANDS, 44, scale), memory, n_batches)
    print(f"training {args.model}, batch {BATCH}: lightning {light:.1f}, plain {plain:.1f} /s")
    result = {
        "zarr_vs_memory": zarr_rate / mem_rate,
        "lightning_vs_plain": light / plain,
        "cpu_cutouts_per_s": light,
        "loader_cutouts_per_s": zarr_rate,
        "loader_mb_per_s": zarr_mb,
        "gpu_cutouts_per_s": None,
        "gpu": None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
