"""Time graph capture (``ghnorth_cli.graph.capture_graph``) on torchvision models.

    python benchmarks/bench_graph.py resnet50 convnext_base --repeats 5

Prints one line per model: nodes, edges, and the best and median wall-clock and CPU time of
``capture_graph(model, img_size=224, ve_cutoff=50)`` over the repeats (after one warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time


def time_capture(name: str, *, repeats: int, img_size: int) -> dict[str, float]:
    import torchvision

    from ghnorth_cli.graph import capture_graph

    model = torchvision.models.get_model(name)
    graph = capture_graph(model, img_size=img_size)  # warm-up (first-call dispatch caches)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        capture_graph(model, img_size=img_size)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "nodes": graph.n_nodes,
        "edges": len(graph.edges),
        "wall_best": min(walls),
        "wall_median": statistics.median(walls),
        "cpu_best": min(cpus),
        "cpu_median": statistics.median(cpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "convnext_base"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args()
    for name in args.models:
        r = time_capture(name, repeats=args.repeats, img_size=args.img_size)
        print(
            f"{name}: {r['nodes']} nodes, {r['edges']} edges; wall best {r['wall_best']:.3f} s "
            f"(median {r['wall_median']:.3f} s), cpu best {r['cpu_best']:.3f} s (median {r['cpu_median']:.3f} s)"
        )


if __name__ == "__main__":
    main()
