"""Training throughput of the NoteLLM-2 step: pairs/s, tokens/s, peak memory (MFU on GPU).

    .venv/bin/python benchmarks/train_throughput.py --config tiny
    .venv/bin/python benchmarks/train_throughput.py --config smollm2        # needs the
        # converted cache: `i2i models prepare smollm2-135m`; EfficientNet-Lite0 is offline
    python benchmarks/train_throughput.py --device cuda --shape qwen2-0.5b  # on a GPU
    python benchmarks/train_throughput.py --config demo --llm-train lora --pairs 16 \
        --precision bf16 --peer fp32 --threads 1    # CPU bf16 (avx512_bf16 / AMX) vs fp32

What is timed: the loop's optimizer step, `train.step.train_step`, the function `train.loop`
runs (forward + loss on one batch of 2N notes [q..., d...], backward, clip, AdamW step) under
`--precision` (default the loop's `auto`: bf16 autocast on CUDA, fp32 on CPU), after warm-up steps. Batches
are collated before timing (real synth notes and images through the model's own
transform and collator): data loading runs in DataLoader workers beside the model in
training, so it is not on this clock.

Each configuration runs in its own subprocess, so peak memory (ru_maxrss on CPU,
torch.cuda.max_memory_allocated on GPU) is its own. The peer is the same step with one
thing changed, measured in the same run; `--peer frozen-llm` (default) is the question
a user with small hardware asks (what does training the LLM cost over training only
the connector, fusion and head?); `grad-ckpt` and `text-only` are the other peers.

MFU (GPU): model FLOPs per step / step time / peak dense bf16 FLOP/s, counting
- LLM: 6 * N_llm * T (forward 2NT, backward 4NT) with the LLM trained, 4 * N_llm * T
  frozen (no weight gradients); N_llm = LLM parameters without the embedding table, T =
  tokens the LLM reads (text + visual tokens, padding excluded); attention's
  sequence-squared term is left out (prompts are <= ~160 tokens);
- vision encoder (frozen, forward only): 2 * N_vision * (patches + 1) per image;
- connector (Q-Former + MLP), fusion, head: 6 * N * query tokens per image.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
PEERS = {
    "frozen-llm": "the same step with the LLM frozen (connector, fusion, head, temperature trained)",
    "grad-ckpt": "the same step with gradient checkpointing in the LLM",
    "text-only": "the text-only variant (no image, no connector) with the same LLM",
    "fp32": "the same step in fp32 (for --precision bf16: what autocast buys)",
}


def model_config(shape: str, variant: str, connector: str) -> Any:
    """The shapes are presets (`train.presets`): tiny, default (SmolLM2), qwen2-0.5b."""
    from train.model_config import ModelConfig
    from train.presets import preset

    if shape == "tiny":
        # The tiny test model with the default (paper-shaped) prompts and limits.
        defaults = ModelConfig()
        return preset(
            "tiny",
            variant=variant,
            connector=connector,
            limit_unit=defaults.limit_unit,
            max_prompt_tokens=defaults.max_prompt_tokens,
        )
    if shape in ("smollm2", "demo", "qwen2-0.5b"):
        name = "default" if shape == "smollm2" else shape
        return preset(name, connector=connector, variant=variant)
    raise SystemExit(f"unknown shape {shape!r}; choose tiny, smollm2, demo or qwen2-0.5b")


def make_batches(model: Any, pairs: int, count: int, image_size: int) -> list[dict]:
    """`count` collated batches of `pairs` pairs from a small synth platform."""
    from core.contracts import read_notes
    from pipeline.mine import mine_pairs, write_pairs
    from pipeline.synth import generate_platform
    from train.data import NoteImageLoader, PairBatchSampler, PairCollate, PairDataset, load_pairs

    tmp = Path(tempfile.mkdtemp(prefix="i2i-bench-"))
    n_notes = max(200, 4 * pairs)
    generate_platform(
        tmp / "p", notes=n_notes, users=n_notes, days=3, events=40 * n_notes, image_size=image_size
    )
    write_pairs(
        mine_pairs(tmp / "p" / "logs", window="1h", split=(1.0, 0.0, 0.0), top_k=50, seed=0), tmp / "pairs"
    )
    split = load_pairs(read_notes(tmp / "p" / "notes.parquet"), tmp / "pairs" / "train.parquet")
    transform = model.vision.transform if model.vision is not None else None
    dataset = PairDataset(split, NoteImageLoader(tmp / "p", transform))
    collate = PairCollate(model.collator)
    sampler = PairBatchSampler(split, pairs, seed=0)
    out: list[dict] = []
    epoch = 0
    while len(out) < count:
        sampler.set_epoch(epoch)
        for indices in sampler:
            out.append(collate([dataset[i] for i in indices])[0])
            if len(out) == count:
                break
        epoch += 1
    return out


def count_params(module: Any, skip_embeddings: bool = False) -> int:
    if module is None:
        return 0
    skip = set()
    if skip_embeddings and hasattr(module, "get_input_embeddings"):
        skip = {id(p) for p in module.get_input_embeddings().parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement (runs in its own process)."""
    import torch

    from train.model import build_model
    from train.step import autocast_for, make_optimizer, train_step
    from train.train_config import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = model_config(args.shape, args.variant, args.connector)
    model = build_model(cfg)
    model.set_llm_trainable(args.llm_train)
    if args.grad_ckpt:
        model.enable_gradient_checkpointing()
    model.to(device).train()
    image_size = model.vision.image_size if model.vision is not None else 32
    batches = make_batches(model, args.pairs, args.warmup + args.steps, image_size)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-5, model=cfg))
    autocast = autocast_for(args.precision, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    tokens = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == args.warmup:
            sync()
            t0, tokens = time.perf_counter(), 0
        out = train_step(model, model, optimizer, [batch], lr=1e-5, autocast=autocast, clip=1.0)
        tokens += out.tokens
    sync()
    seconds = time.perf_counter() - t0

    n_llm = count_params(model.llm, skip_embeddings=True)
    n_vis = count_params(model.vision)
    n_small = sum(count_params(m) for m in (model.connector, model.fusion, model.head))
    images = 2 * args.pairs * args.steps if model.vision is not None else 0
    patches = (image_size // 16) ** 2 + 1  # ViT-B/16 (only used for the GPU shape's MFU)
    llm_factor = 6 if args.llm_train == "full" else 4
    flops = llm_factor * n_llm * tokens + images * (2 * n_vis * patches + 6 * n_small * cfg.num_query_tokens)
    result = {
        "pairs_per_s": args.pairs * args.steps / seconds,
        "tokens_per_s": tokens / seconds,
        "step_s": seconds / args.steps,
        "tokens_per_pair": tokens / (args.pairs * args.steps),
        "llm_params": n_llm,
        "vision_params": n_vis,
        "connector_fusion_head_params": n_small,
        "flops_per_s": flops / seconds,
        "final_loss": float(out.loss),
    }
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name()
        peak = (
            args.peak_tflops * 1e12
            if args.peak_tflops
            else next((v for k, v in PEAK_BF16.items() if k in name), None)
        )
        result["gpu"] = name
        result["mfu"] = None if peak is None else flops / seconds / peak
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def run_child(args: argparse.Namespace, **changes: Any) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child"]
    for key, value in {**vars(args), **changes}.items():
        if key in ("child", "peer", "repeats") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median pairs/s (memory: the largest peak seen)."""
    ordered = sorted(runs, key=lambda r: r["pairs_per_s"])
    out = dict(ordered[len(ordered) // 2])
    for key in ("peak_rss_gib", "peak_gpu_gib"):
        if key in out:
            out[key] = max(r[key] for r in runs)
    out["pairs_per_s_all"] = [round(r["pairs_per_s"], 3) for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", "--shape", dest="shape", default="tiny", help="tiny | smollm2 | demo | qwen2-0.5b"
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--variant", default="notellm2")
    parser.add_argument("--connector", default="qformer")
    parser.add_argument(
        "--pairs", type=int, default=None, help="pairs per step (default 8 on CPU, 16 on GPU)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--llm-train", default="full", help="full | lora | frozen")
    parser.add_argument(
        "--precision", default="auto", help="auto | bf16 | fp32 (bf16 on CPU needs native bf16)"
    )
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--peer", default="frozen-llm", choices=[*PEERS, "none"])
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating; median kept")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (MFU)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pairs is None:
        args.pairs = 16 if args.device == "cuda" else 8
    if args.child:
        print(json.dumps(child(args)))
        return

    peers: dict[str, dict[str, Any]] = {
        "frozen-llm": {"llm_train": "frozen"},
        "grad-ckpt": {"grad_ckpt": True},
        "fp32": {"precision": "fp32"},
    }
    change = peers.get(args.peer, {"variant": "text-only"})
    # Alternate this / peer `repeats` times and keep each one's median run: on a shared
    # machine a single run can land on a busy moment.
    runs: dict[str, list[dict[str, Any]]] = {"this": []}
    if args.peer != "none":
        runs[args.peer] = []
    for _ in range(args.repeats):
        runs["this"].append(run_child(args))
        if args.peer != "none":
            runs[args.peer].append(run_child(args, **change))
    rows = {name: median_run(r) for name, r in runs.items()}
    memory = "peak_gpu_gib" if args.device == "cuda" else "peak_rss_gib"
    print(
        f"train step: shape {args.shape}, {args.variant}/{args.connector}, {args.pairs} pairs/step, "
        f"LLM {args.llm_train}, {args.precision}, device {args.device}, threads {args.threads or 'default'}; "
        f"peer = {PEERS.get(args.peer, 'none')}"
    )
    header = f"{'run':<12}{'pairs/s':>10}{'tokens/s':>11}{'s/step':>9}{'tok/pair':>10}{memory:>14}"
    if args.device == "cuda":
        header += f"{'MFU':>8}"
    print(header)
    for name, r in rows.items():
        line = f"{name:<12}{r['pairs_per_s']:>10.2f}{r['tokens_per_s']:>11.0f}{r['step_s']:>9.3f}"
        line += f"{r['tokens_per_pair']:>10.1f}{r[memory]:>14.2f}"
        if args.device == "cuda":
            line += f"{(r['mfu'] or float('nan')) * 100:>7.1f}%"
        print(line)
    if args.peer != "none":
        this, peer = rows["this"], rows[args.peer]
        print(
            f"ratio this/{args.peer}: pairs/s x{this['pairs_per_s'] / peer['pairs_per_s']:.2f}, "
            f"{memory} x{this[memory] / peer[memory]:.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
