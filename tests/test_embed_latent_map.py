"""The latent map and nearest-neighbour table (``ghnorth analyze --embeddings``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ghnorth_cli.errors import GhnorthError
from ghnorth_cli.latent_map import EmbeddingSet, fit_pca, nearest_neighbours, read_metric_csv

# A reference set on a unit grid (every point's nearest other point is 1 away) and one far point.
GRID = {f"g{i}{j}": [float(i), float(j), 0.0] for i in range(3) for j in range(3)}


def _set(points: dict[str, list[float]]) -> EmbeddingSet:
    return EmbeddingSet(names=list(points), vectors=np.array(list(points.values())))


def _write_embeddings(path, points: dict[str, list[float]]) -> None:
    models = [{"name": n, "n_nodes": 3, "embedding": v} for n, v in points.items()]
    path.write_text(json.dumps({"format": "ghnorth.embeddings", "format_version": 1, "models": models}))


def test_nearest_neighbours_on_a_constructed_example():
    reference = _set(GRID | {"far": [10.0, 10.0, 0.0]})
    named = _set({"inside": [0.1, 0.0, 0.0], "outside": [0.0, 0.0, 5.0], "g11": [1.0, 1.0, 0.0]})
    inside, outside, g11 = nearest_neighbours(named, reference, k=2)
    assert inside.neighbours[0] == ("g00", pytest.approx(0.1))
    assert inside.neighbours[1] == ("g10", pytest.approx(0.9))
    assert inside.percentile == 0.0 and not inside.outside
    assert outside.neighbours[0] == ("g00", pytest.approx(5.0))
    assert outside.percentile == 90.0  # closer than "far" (spacing ~12.7), farther than the 9 grid points
    # a model is never its own neighbour: g11's neighbours are its grid neighbours at distance 1
    assert g11.neighbours[0][0] != "g11" and g11.distance == pytest.approx(1.0)
    assert json.loads(json.dumps(outside.to_dict()))["neighbours"][0]["name"] == "g00"


def test_outside_flag_needs_a_distance_beyond_almost_all_reference_spacings():
    reference = _set(GRID)
    (report,) = nearest_neighbours(_set({"x": [1.0, 1.0, 3.0]}), reference, k=1)
    assert report.percentile == 100.0 and report.outside
    (lonely,) = nearest_neighbours(_set({"x": [0.0, 0.0, 0.0]}), _set({"only": [1.0, 0.0, 0.0]}), k=1)
    assert math.isnan(lonely.percentile) and not lonely.outside


def test_pca_finds_the_main_direction_with_a_fixed_sign():
    t = np.linspace(-1, 1, 11)[:, None]
    points = t * np.array([[3.0, -4.0, 0.0]]) / 5.0 + np.array([[1.0, 2.0, 3.0]])
    pca = fit_pca(points)
    assert pca.explained[0] == pytest.approx(1.0)
    np.testing.assert_allclose(pca.components[0], [-0.6, 0.8, 0.0], atol=1e-12)  # largest loading positive
    xy = pca.transform(points)
    assert xy.shape == (11, 2)
    np.testing.assert_allclose(np.abs(xy[:, 0]), np.abs(t[:, 0]), atol=1e-12)
    np.testing.assert_allclose(fit_pca(points[::-1]).components, pca.components, atol=1e-12)


def test_metric_csv_key_and_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("arch,note,top1\nresnet50,ok,71.5\nconvnext,bad,\nvit,x,12\n")
    assert read_metric_csv(path) == ("top1", {"resnet50": 71.5, "vit": 12.0})
    with pytest.raises(GhnorthError, match="no column 'acc'"):
        read_metric_csv(path, column="acc")
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(GhnorthError, match="column naming the models"):
        read_metric_csv(tmp_path / "bad.csv")


def test_analyze_embeddings_writes_the_map_and_the_table(cli, tmp_path):
    _write_embeddings(tmp_path / "ref.json", GRID)
    _write_embeddings(tmp_path / "named.json", {"resnet50": [1.0, 1.2, 0.0], "convnext": [1.0, 1.0, 4.0]})
    (tmp_path / "acc.csv").write_text("name,acc\n" + "".join(f"{n},{i}\n" for i, n in enumerate(GRID)))
    result = cli("analyze", "--embeddings", tmp_path / "named.json", "--reference", tmp_path / "ref.json",
                 "--metric-csv", tmp_path / "acc.csv", "--plot", tmp_path / "map.png", "-k", "2")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["model", "nearest", "distance", "percentile", "outside"]
    assert lines[1].split()[:5] == ["resnet50", "g11", "0.2", "0", "no"]
    assert lines[2].split()[:5] == ["convnext", "g11", "4", "100", "yes"]
    as_json = cli("analyze", "--embeddings", tmp_path / "named.json", "--reference", tmp_path / "ref.json", "--json")
    models = json.loads(as_json.stdout)["models"]
    assert [m["outside"] for m in models] == [False, True]


def test_analyze_embeddings_errors(cli, tmp_path):
    _write_embeddings(tmp_path / "a.json", {"a": [0.0, 1.0], "b": [1.0, 0.0]})
    _write_embeddings(tmp_path / "b.json", {"c": [0.0, 1.0, 2.0]})
    mixed = cli("analyze", "--embeddings", tmp_path / "a.json", "--reference", tmp_path / "b.json")
    assert mixed.exit_code == 1 and "different sizes" in mixed.stderr and len(mixed.stderr.splitlines()) == 1
    (tmp_path / "c.json").write_text("{}")
    wrong = cli("analyze", "--embeddings", tmp_path / "c.json")
    assert wrong.exit_code == 1 and "not an embeddings file" in wrong.stderr
    no_plot = cli("analyze", "--embeddings", tmp_path / "a.json", "--plot", tmp_path / "map.gif")
    assert no_plot.exit_code == 1 and not (tmp_path / "map.gif").exists()


def test_metric_values_match_names_then_archs():
    from ghnorth_cli.latent_map import metric_values

    models = EmbeddingSet(names=["r50", "torchvision:vgg11", "x"], vectors=np.zeros((3, 2)),
                          archs=["torchvision:resnet50", "torchvision:vgg11", None])
    values = metric_values(models, {"torchvision:resnet50": 1.0, "torchvision:vgg11": 2.0})
    assert values[:2].tolist() == [1.0, 2.0] and math.isnan(values[2])


def test_without_reference_models_are_compared_with_each_other(cli, tmp_path):
    _write_embeddings(tmp_path / "e.json", {"a": [0.0, 0.0], "b": [3.0, 4.0], "c": [0.0, 1.0]})
    result = cli("analyze", "--embeddings", tmp_path / "e.json", "--json", "-k", "1")
    assert result.exit_code == 0, result.stderr
    nearest = {m["name"]: (m["neighbours"][0]["name"], m["distance"]) for m in json.loads(result.stdout)["models"]}
    assert nearest == {"a": ("c", 1.0), "b": ("c", pytest.approx(18 ** 0.5)), "c": ("a", 1.0)}


def test_metrics_from_ghn_eval_json(tmp_path):
    report = {"ghn": "g", "heldout": [{"name": "resnet-1", "family": "resnet", "params": 10, "accuracy": 0.5}],
              "named": [{"name": "timm:resnet18", "family": "named", "params": 99, "accuracy": 0.25}]}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(report))
    assert read_metric_csv(path) == ("accuracy", {"resnet-1": 0.5, "timm:resnet18": 0.25})
    assert read_metric_csv(path, column="params")[1] == {"resnet-1": 10.0, "timm:resnet18": 99.0}
    path.write_text("[1, 2]")
    with pytest.raises(GhnorthError, match="list of objects"):
        read_metric_csv(path)
