"""Benchmark the train stage's hot paths against baselines measured in the same run.

The first version of this script printed ``zarr_vs_memory`` = 0.04-0.08 although a Zarr loader
delivering ~2e4 cutouts/s cannot slow a CPU that trains ~2e2 cutouts/s by 10x: it divided the
*loader alone* from Zarr (decompression) by the *loader alone* from memory (a fancy-index slice,
~5e5/s), which says nothing about training. The issue asks for training throughput (whole
training steps, loading included) fed from Zarr versus fed from memory, and that is what is
measured now:

- ``zarr_vs_memory``: Lightning training cutouts/s with the train loader streaming whole Blosc
  chunks from a Zarr v3 store (:class:`ChunkBlockBatches`, what the stage uses when
  ``train.cache_max_mb`` is exceeded) divided by the same with the cutouts held in memory
  (:class:`InMemoryBatches`). Same model and initial weights, same batch size, same number of
  steps, and the timed steps span whole chunks so the chunk reads are counted in proportion.
- ``lightning_vs_plain``: the stage's Trainer (:func:`astroflow.train.fit.build_trainer`:
  checkpoint/early-stopping callbacks, deterministic, per-step logging) versus a hand-written
  loop on the *same* in-memory batches (same DataLoader, epoch 0 shuffle), the same initial
  weights, augmentation, loss, AdamW + cosine schedule and deterministic-algorithms setting.
- Both: the first ``--warmup-steps`` steps of every run are excluded (allocator, first-call
  kernel selection), and every configuration is run ``--repeats`` times, interleaved, keeping
  the fastest: other processes on a shared machine only ever slow a run down, so the best of
  interleaved repeats compares the code, not the neighbours' load.
- ``loader_cutouts_per_s`` / ``loader_mb_per_s``: one pass of the Zarr chunk loader alone
  (float32 MB delivered per second, after Blosc decompression).
- ``gpu_cutouts_per_s``: kim_brunner at bf16-mixed from the Zarr loader when CUDA is present
  (best of ``--repeats`` runs of ``--gpu-timed-steps`` timed steps; a GPU step takes
  milliseconds, so the CPU's 8 steps would time too little); null otherwise.
- ``gpu_variants`` (only with ``--gpu-variants`` and CUDA): what limits that rate. The same
  steps fed from memory instead of Zarr (``memory``), from memory at batch 512
  (``memory_batch512``; a rate that grows with the batch means the fixed cost per step, not
  the model's arithmetic, sets the batch-64 rate), and from Zarr with the module
  ``torch.compile``'d whole (``zarr_compiled``; what ``train.compile: true`` did until it
  failed on torch 2.13) or with only its network compiled in place, as ``train.compile: true``
  does now (``zarr_compiled_classifier``); compilation happens in the warm-up steps,
  so it is not timed. A variant that raises is recorded as null and its error is logged.

The last stdout line is one JSON object. Data are synthetic (noise plus Gaussian and
exponential blobs) written to a temporary Zarr v3 store the way the reduce stage writes it.

Usage: python benchmarks/bench_train.py [--n-objects 2048] [--model NAME] [--repeats 2]
       [--gpu-timed-steps N] [--gpu-variants]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import zarr
from torch.nn import functional as F
from torch.utils.data import DataLoader

from astroflow.train.augment import random_crop, random_dihedral
from astroflow.train.data import ChunkBlockBatches, FieldRows, InMemoryBatches, load_rows
from astroflow.train.fit import build_trainer, compile_network, known_lightning_warnings_ignored
from astroflow.train.module import StarGalaxyModule

BANDS, SIZE, CROP, CHUNK, BATCH = 3, 48, 44, 256, 64
log = logging.getLogger("bench_train")


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


def train_cfg(n_steps: int, precision: str = "32-true", accelerator: str = "cpu") -> dict:
    """The ``train`` section the stage would see, shrunk to one epoch of ``n_steps``."""
    return {
        "max_epochs": 1,
        "accelerator": accelerator,
        "devices": 1,
        "precision": precision,
        "compile": False,
        "early_stopping_patience": 4,
    }


class StepTimer(L.Callback):
    """Wall time of training steps ``warmup..end`` (data loading between steps included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0 = self.t1 = 0.0
        self.n = 0

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Time from the end of the last warm-up step to the end of the last step: every timed
        # step's data fetch, transfer, forward, backward and optimiser step is inside.
        self._sync(pl_module)
        if batch_idx == self.warmup - 1:
            self.t0, self.n = time.perf_counter(), 0
        elif batch_idx >= self.warmup:
            self.n += len(batch[1])
            self.t1 = time.perf_counter()

    def rate(self) -> float:
        if self.n == 0:
            raise RuntimeError("StepTimer: no timed steps (increase the number of steps)")
        return self.n / (self.t1 - self.t0)


def lightning_rate(
    module: StarGalaxyModule,
    dataset,
    val_loader: DataLoader,
    n_steps: int,
    warmup: int,
    tmp: Path,
    precision: str = "32-true",
    accelerator: str = "cpu",
) -> float:
    """Training cutouts/s of the stage's Trainer (steps after ``warmup``; validation untimed)."""
    timer = StepTimer(warmup)
    trainer = build_trainer(
        train_cfg(n_steps, precision, accelerator),
        tmp,
        extra_callbacks=[timer],
        limit_train_batches=n_steps,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
    )
    dataset.set_epoch(0)
    with known_lightning_warnings_ignored():
        trainer.fit(
            module,
            train_dataloaders=DataLoader(dataset, batch_size=None),
            val_dataloaders=val_loader,
        )
    return timer.rate()


def plain_loop_rate(module: StarGalaxyModule, dataset, n_steps: int, warmup: int) -> float:
    """Cutouts/s of a hand-written loop: the stage's step without Lightning around it."""
    torch.use_deterministic_algorithms(True)  # as Trainer(deterministic=True) does
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, n_steps) / n_steps))
    )
    dataset.set_epoch(0)
    t0, n = 0.0, 0
    loader = DataLoader(dataset, batch_size=None)
    for k, (x, y) in enumerate(loader):
        if k == n_steps:
            break
        logits = module.classifier(random_dihedral(random_crop(x, CROP)))
        loss = F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        float(loss.detach())  # Lightning's logging reads the loss every step, too
        if k == warmup - 1:
            t0, n = time.perf_counter(), 0
        elif k >= warmup:
            n += len(y)
    return n / (time.perf_counter() - t0)


def gpu_rate(
    init: StarGalaxyModule,
    stream,
    val,
    n_steps: int,
    warmup: int,
    tmp: Path,
    compiled: str = "",
    accelerator: str = "gpu",
) -> float:
    """kim_brunner at bf16-mixed on the GPU, fed by ``stream`` (the stage feeds it from Zarr).

    ``compiled``: ``"module"`` fits ``torch.compile(module)``; ``"classifier"`` compiles only
    the network in place, as the stage does for ``train.compile``
    (:func:`astroflow.train.fit.compile_network`).
    """
    module = copy.deepcopy(init)
    if compiled == "classifier":
        compile_network(module)
    fit_module = torch.compile(module) if compiled == "module" else module
    return lightning_rate(fit_module, stream, val, n_steps, warmup, tmp, "bf16-mixed", accelerator)


def gpu_variants(
    init: StarGalaxyModule,
    stream,
    images: np.ndarray,
    labels: np.ndarray,
    val,
    n_steps: int,
    warmup: int,
    tmp: Path,
    accelerator: str = "gpu",
) -> dict[str, float | None]:
    """Rates that say what limits ``gpu_cutouts_per_s`` (see the module docstring)."""
    big = 512
    memory = InMemoryBatches(images, labels, BATCH, shuffle=True, seed=0)
    memory_big = InMemoryBatches(images, labels, big, shuffle=True, seed=0)
    variants = {
        "memory": (memory, n_steps, ""),
        "memory_batch512": (memory_big, len(labels) // big, ""),
        "zarr_compiled": (stream, n_steps, "module"),
        "zarr_compiled_classifier": (stream, n_steps, "classifier"),
    }
    out: dict[str, float | None] = {}
    for name, (dataset, steps, compiled) in variants.items():
        try:
            if steps <= warmup:
                raise ValueError(f"{steps} batches of this size: need more --n-objects")
            out[name] = gpu_rate(
                init, dataset, val, steps, warmup, tmp / f"gpu_{name}", compiled, accelerator
            )
            log.info("gpu variant %s: %.1f cutouts/s", name, out[name])
        except Exception:  # a failed variant must not lose the figures measured before it
            log.exception("gpu variant %s failed", name)
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-objects", type=int, default=2048)
    parser.add_argument("--model", default="kim_brunner", choices=["kim_brunner", "resnet"])
    parser.add_argument("--warmup-steps", type=int, default=4, help="one chunk: 256 / 64")
    parser.add_argument(
        "--timed-steps", type=int, default=8, help="timed steps per run; a multiple of 4 spans "
        "whole chunks, so the Zarr feed pays for every chunk it reads",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per variant")
    parser.add_argument(
        "--gpu-timed-steps", type=int, default=None,
        help="timed steps of each GPU run (default: --timed-steps)",
    )  # fmt: skip
    parser.add_argument(
        "--gpu-variants", action="store_true",
        help="also time the GPU fed from memory, at batch 512 and compiled (key gpu_variants)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    n_steps = args.warmup_steps + args.timed_steps
    gpu_steps = args.warmup_steps + (
        args.timed_steps if args.gpu_timed_steps is None else args.gpu_timed_steps
    )
    for steps in (n_steps, gpu_steps):
        if steps * BATCH > args.n_objects:
            parser.error(f"{steps} steps of {BATCH} need --n-objects >= {steps * BATCH}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = write_store(tmp / "bench.zarr", args.n_objects)
        # chunks_per_block=1: every chunk is read, shuffled and sliced on the timed path.
        stream = ChunkBlockBatches([rows], BATCH, shuffle=True, seed=0, chunks_per_block=1)
        zarr_rate, zarr_mb = loader_rate(stream)
        images, labels = load_rows([rows])
        memory = InMemoryBatches(images, labels, BATCH, shuffle=True, seed=0)
        mem_loader_rate, _ = loader_rate(memory)
        log.info(
            "loader alone: zarr %.0f cutouts/s (%.1f MB/s), memory %.0f cutouts/s",
            zarr_rate, zarr_mb, mem_loader_rate,
        )  # fmt: skip
        val = DataLoader(
            InMemoryBatches(images[:BATCH], labels[:BATCH], BATCH, shuffle=False, seed=0),
            batch_size=None,
        )

        L.seed_everything(0, verbose=False)
        init = StarGalaxyModule(args.model, BANDS, CROP, [15.0] * BANDS)
        best = {"zarr": 0.0, "memory": 0.0, "plain": 0.0}
        for rep in range(args.repeats):
            for name in best:
                module = copy.deepcopy(init)  # same initial weights for every variant
                if name == "plain":
                    rate = plain_loop_rate(module, memory, n_steps, args.warmup_steps)
                else:
                    dataset = stream if name == "zarr" else memory
                    rate = lightning_rate(
                        module, dataset, val, n_steps, args.warmup_steps, tmp / f"{name}{rep}"
                    )
                log.info("repeat %d %s: %.1f cutouts/s", rep, name, rate)
                best[name] = max(best[name], rate)
        torch.use_deterministic_algorithms(False)

        gpu, gpu_name, variants = None, None, None
        if torch.cuda.is_available() and args.model == "kim_brunner":
            gpu_name = torch.cuda.get_device_name(0)
            for rep in range(args.repeats):
                rate = gpu_rate(init, stream, val, gpu_steps, args.warmup_steps, tmp / f"gpu{rep}")
                log.info("repeat %d gpu (%s) zarr: %.1f cutouts/s", rep, gpu_name, rate)
                gpu = max(gpu or 0.0, rate)
            if args.gpu_variants:
                variants = gpu_variants(
                    init, stream, images, labels, val, gpu_steps, args.warmup_steps, tmp
                )
    log.info(
        "training %s, batch %d, %d timed steps, best of %d: lightning zarr %.1f, "
        "lightning memory %.1f, plain memory %.1f cutouts/s",
        args.model, BATCH, args.timed_steps, args.repeats, best["zarr"], best["memory"],
        best["plain"],
    )  # fmt: skip
    result = {
        "zarr_vs_memory": best["zarr"] / best["memory"],
        "lightning_vs_plain": best["memory"] / best["plain"],
        "cpu_cutouts_per_s": best["zarr"],
        "loader_cutouts_per_s": zarr_rate,
        "loader_mb_per_s": zarr_mb,
        "gpu_cutouts_per_s": gpu,
        "gpu": gpu_name,
    }
    if variants is not None:
        result["gpu_variants"] = variants
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
