"""Benchmark: LM head + loss on labelled rows only, in chunks, against the full head.

    python scripts/bench_lm_head.py                       # rows of 4k, 16k and 32k tokens
    python scripts/bench_lm_head.py --tokens 16384 --labelled 0.2 --chunk-rows 4096 1024

The debug decoder (width 64, 2 layers) with a realistic 152,064-row head, one packed row of T
tokens of which ~20% carry labels; one step = forward + backward of decoder, head and
cross-entropy. Each variant runs in its own process, so the process's peak resident memory
(ru_maxrss, minus the same process's peak before the step) is that variant's alone; on CUDA
the peak is torch.cuda.max_memory_allocated. The full head needs T x 152064 fp32 logits
(plus their fp32 log-softmax and gradient), so it is skipped where that estimate exceeds
`--max-full-gb`; the line says how much it would need.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

VOCAB = 152064


def run_variant(variant: str, tokens: int, labelled: float, chunk_rows: int, device: str, repeats: int) -> dict:
    """One measurement in this process: seconds per step and peak memory in GB."""
    import torch

    from onevision.model import OneVisionModel, preset
    from onevision.train.loss import full_head_loss, labelled_lm_loss

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = preset("debug")
    config = dataclasses.replace(base, text=dataclasses.replace(base.text, vocab_size=VOCAB, max_position_embeddings=tokens))
    model = OneVisionModel(config).to(device)
    decoder, head = model.language_model.model, model.language_model.lm_head
    ids = torch.randint(0, 30000, (1, tokens), device=device)
    labels = torch.full_like(ids, -100)
    pick = torch.rand(tokens, device=device) < labelled
    labels[0, pick] = ids[0, pick]
    positions = torch.arange(tokens, device=device).unsqueeze(0)

    def step():
        hidden = decoder(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
        if variant == "full":
            loss = full_head_loss(hidden, labels, head)
        else:
            loss = labelled_lm_loss(hidden, labels, head, chunk_rows=chunk_rows)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1e6
    return {"loss": loss, "seconds": min(times), "peak_gb": peak, "rows": int(pick.sum())}


def full_head_estimate_gb(tokens: int) -> float:
    """Logits, their fp32 log-softmax and gradient: three T x V fp32 tensors."""
    return 3 * tokens * VOCAB * 4 / 1e9


def measure(args, variant: str, tokens: int, chunk_rows: int) -> dict:
    command = [
        sys.executable, __file__, "--child", variant, "--tokens", str(tokens), "--labelled", str(args.labelled),
        "--chunk-rows", str(chunk_rows), "--device", args.device, "--repeats", str(args.repeats),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384, 32768], help="packed row lengths")
    parser.add_argument("--labelled", type=float, default=0.2, help="fraction of positions with a label")
    parser.add_argument("--chunk-rows", type=int, nargs="+", default=[4096, 1024], help="labelled rows per head chunk")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per variant (the fastest is reported)")
    parser.add_argument("--max-full-gb", type=float, default=8.0, help="skip the full head when its logits would need more")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.tokens[0], args.labelled, args.chunk_rows[0], args.device, args.repeats)))
        return

    print(f"LM head benchmark: debug decoder, vocab {VOCAB}, {args.labelled:.0%} labelled, device {args.device}")
    print(f"{'tokens':>7} {'variant':<22} {'rows':>6} {'step s':>8} {'peak GB':>8} {'loss':>8}")
    for tokens in args.tokens:
        results = {}
        for chunk in args.chunk_rows:
            results[f"labelled, chunk {chunk}"] = measure(args, "chunked", tokens, chunk)
        estimate = full_head_estimate_gb(tokens)
        if estimate <= args.max_full_gb:
            results["full head"] = measure(args, "full", tokens, args.chunk_rows[0])
        for name, r in results.items():
            print(f"{tokens:>7} {name:<22} {r['rows']:>6} {r['seconds']:>8.3f} {r['peak_gb']:>8.2f} {r['loss']:>8.4f}")
        if "full head" in results:
            full = results["full head"]
            for name, r in results.items():
                if name != "full head":
                    print(f"{'':>7} {name}: {full['seconds'] / r['seconds']:.2f}x faster, {full['peak_gb'] / max(r['peak_gb'], 1e-9):.1f}x less memory than the full head")
        else:
            print(f"{tokens:>7} {'full head':<22} skipped: its logits alone need ~{estimate:.0f} GB (> --max-full-gb {args.max_full_gb:g})")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
