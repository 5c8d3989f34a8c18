"""Where does a trained notellm2 lose a modality? Rank the test split by each share of its
late-fused embedding alone.

Late fusion sums two shares, `fused = llm + image` with `llm = z * h` (`(1 + z) * h` for
a model with `fusion_residual`) and `image = (1 - z) * v` (the LLM state and the
projected image feature), and the head is linear, so the embedding is
`normalize(head(llm) + head(image))`. This script ranks the quality benchmark's test
split (same queries, pool and relation slices) three ways, with bootstrap intervals: by
the fused embedding (what the model serves), by the LLM's share alone
`normalize(head(llm))`, and by the image's share alone `normalize(head(image))`,
and reports the mean norm of each share of the multimodal embedding after the head. If a
share alone ranks its relation well and the sum does not, the signal is there and is
lost in the sum.

    python benchmarks/fusion_parts.py --out bench_out/quality-synth \
        --run bench_out/quality-synth/runs/notellm2
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path
from typing import Any

import torch
from quality_data import quality_eval_set, quality_source  # sibling module (benchmarks/ on sys.path)

from core.bootstrap import Bootstrap
from core.errors import UserError
from core.io import write_json_atomic
from retriever.evaluate import evaluate_embedder
from retriever.report import wide_console, with_interval
from train.embed import load_embedder

SHARES = ("fused", "llm share", "image share")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="a quality run's --out (data/ and pairs/)")
    p.add_argument("--run", type=Path, required=True, help="a notellm2 or late-fusion run or checkpoint")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    console = wide_console()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        es = quality_eval_set(args.out)
        data = quality_source(args.out).images
    except UserError as e:
        p.error(str(e))
    embedder = load_embedder(args.run, device="cpu")
    model = embedder.model
    if model.fusion is None:
        p.error(f"{args.run} has no late fusion (variant {model.config.variant!r})")
    # Per-note norms after the head, summed over the fused pass. With mICL the model fuses
    # twice per forward, the multimodal state first and then the visual one; only the
    # first call is the served embedding, so a pre-hook counts the calls per forward.
    norm_sums = {"llm share": 0.0, "image share": 0.0}
    counted = {"notes": 0, "calls": 0}
    model.register_forward_pre_hook(lambda _module, _args: counted.update(calls=0))

    def fusion_forward(share: str) -> Any:
        def forward(self: Any, h: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            llm_share, image_share, z = self.shares(h, v)
            parts = {"llm share": llm_share, "image share": image_share}
            if share == "fused" and counted["calls"] == 0:
                for name, x in parts.items():
                    y = model.head(x) if model.head is not None else x
                    norm_sums[name] += float(y.norm(dim=-1).sum())
                counted["notes"] += h.shape[0]
            counted["calls"] += 1
            return {"fused": llm_share + image_share, **parts}[share], z

        return forward

    results: dict[str, Any] = {"run": str(args.run), "queries": len(es.queries), "pool": len(es.pool)}
    for share in SHARES:
        model.fusion.forward = types.MethodType(fusion_forward(share), model.fusion)  # type: ignore[method-assign]
        r = evaluate_embedder(embedder, es, data, name=share, ann=False, boot=Bootstrap())
        results[share] = {
            "recall@10": with_interval(r["metrics"]["recall@10"], r["intervals"]["recall@10"]),
            **{
                k: with_interval(r["slices"][k]["recall@10"], r["slice_intervals"][k]["recall@10"])
                for k in r["slices"]
                if k.startswith("relation=")
            },
        }
        console.print(share, json.dumps(results[share]))
    results["norm_after_head"] = {k: round(v / counted["notes"], 2) for k, v in norm_sums.items()}
    console.print("mean norm after the head:", results["norm_after_head"])
    target = args.run / "fusion_parts.json" if args.run.is_dir() else Path("fusion_parts.json")
    write_json_atomic(target, results)
    return results


if __name__ == "__main__":
    main()
