"""GHN-3 coverage: the share of parameters a GHN-3 predicts for every torchvision classifier and every
timm model of the GHN-2 capture test (tests/test_graph_coverage.py), with the fixture GHN-3-T.

    python benchmarks/coverage_ghn3.py              # -> benchmarks/results/coverage_ghn3.{json,md}

Models are built on the meta device where possible (prediction needs only their shapes); each is
captured with GHN-3's graph rules and predicted (tests/test_ghn3_coverage.py checks a broad subset).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from test_ghn3_coverage import make_model  # noqa: E402  (one way to build the models)
from test_graph_coverage import TIMM_FAMILIES, TIMM_REQUIRED, torchvision_models  # noqa: E402

FIXTURE_GHN3 = HERE.parents[1] / "shared" / "fixtures" / "ghn3-parity" / "ghn3tm8_random.pt"


def share(ghn, arch: str) -> dict:
    model, img_size = make_model(arch)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    start = time.perf_counter()
    predicted = ghn.predict(ghn.capture_graph(model, img_size=img_size), shapes)
    total = sum(math.prod(s) for s in shapes.values())
    return {"arch": arch, "share": sum(t.numel() for t in predicted.values()) / total, "tensors": len(predicted),
            "of_tensors": len(shapes), "params": total, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ghn", default=str(FIXTURE_GHN3))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "coverage_ghn3")
    args = parser.parse_args()
    from ghnorth_cli.ghn.io import load_ghn

    ghn = load_ghn(args.ghn)
    archs = [f"torchvision:{n}" for n in torchvision_models()] + [f"timm:{n}" for n in TIMM_REQUIRED + TIMM_FAMILIES]
    rows = []
    for arch in archs:
        try:
            row = share(ghn, arch)
        except Exception as exc:  # noqa: BLE001 - a failure is a result here
            row = {"arch": arch, "share": 0.0, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(f"{arch:45s} {row['share']:.3f} {row.get('error', '')}", file=sys.stderr)
    shares = [r["share"] for r in rows]
    summary = {"models": len(rows), "failed": [r["arch"] for r in rows if "error" in r],
               "median_share": statistics.median(shares), "min_share": min(shares),
               "below_95": {r["arch"]: round(r["share"], 3) for r in rows if r["share"] < 0.95}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"ghn": args.ghn, "summary": summary, "rows": rows},
                                                        indent=2) + "\n")
    lines = ["# GHN-3 coverage", "", f"GHN: `{Path(args.ghn).name}`. {summary['models']} models "
             f"({len(torchvision_models())} torchvision, {len(TIMM_REQUIRED + TIMM_FAMILIES)} timm); failed: "
             f"{', '.join(summary['failed']) or 'none'}; median share of parameters predicted "
             f"{summary['median_share']:.3f}, minimum {summary['min_share']:.3f}.", "",
             "Below 95%: " + (", ".join(f"{a} {s}" for a, s in summary["below_95"].items()) or "none") + "."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
