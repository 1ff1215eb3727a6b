"""Architecture spaces: seeded sampling, valid models that graph capture accepts, the held-out split."""

from __future__ import annotations

import pytest
import torch

from ghnorth_cli.threads import intra_op_threads
from ghnorth_cli.archspace import (
    FAMILIES,
    NAMED,
    SPACES,
    ArchSampler,
    ArchSpaceError,
    build_arch,
    get_space,
    heldout_archs,
)
from ghnorth_cli.graph import capture_graph


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is faster than several, above all on a busy machine."""
    with intra_op_threads(1):
        yield


def _draw(space: str, seed: int, n: int, **kwargs) -> list:
    sampler = ArchSampler(get_space(space), generator=torch.Generator().manual_seed(seed), **kwargs)
    return [sampler.sample() for _ in range(n)]


def test_same_seed_same_architectures_and_init_seeds():
    a, b = _draw("tiny", 3, 12), _draw("tiny", 3, 12)
    assert [(s.key, s.seed) for s in a] == [(s.key, s.seed) for s in b]
    assert [s.key for s in _draw("tiny", 4, 12)] != [s.key for s in a]


def test_tiny_space_mixes_all_families():
    assert {s.family for s in _draw("tiny", 0, 40)} == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampled_models_run_and_pass_graph_capture(family):
    for sample in _draw(f"tiny-{family}", 1, 3):
        model = build_arch(sample, num_classes=5, img_size=32)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5), sample.key
        graph = capture_graph(model, img_size=32, ve_cutoff=50)
        assert graph.n_nodes > 3 and graph.param_nodes[-1].last_bias


def test_build_is_reproducible_from_the_sample():
    sample = _draw("tiny", 5, 1)[0]
    one, two = (build_arch(sample, num_classes=3, img_size=32) for _ in range(2))
    for (name, p), q in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.equal(p, q), name


def test_heldout_split_is_fixed_distinct_and_never_sampled_for_training():
    space = get_space("tiny-vit")
    held = heldout_archs(space, count=6)
    assert [s.key for s in held] == [s.key for s in heldout_archs(space, count=6)]
    assert len({s.key for s in held}) == 6
    drawn = _draw("tiny-vit", 0, 60, exclude=frozenset(s.key for s in held))
    assert not {s.key for s in drawn} & {s.key for s in held}


def test_named_models_join_the_space():
    drawn = _draw("tiny-resnet", 0, 20, extra_archs=("timm:test_resnet",))
    named = [s for s in drawn if s.family == NAMED]
    assert named and named[0].label == "timm:test_resnet"
    model = build_arch(named[0], num_classes=4, img_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_label_and_key_ignore_the_init_seed():
    sample = _draw("tiny", 2, 1)[0]
    assert sample.label.startswith(sample.family + "-")
    assert sample.to_dict()["settings"] == sample.settings


def test_unknown_space_names_the_known_ones():
    with pytest.raises(ArchSpaceError, match="tiny"):
        get_space("huge")
    assert "small" in SPACES


def test_too_many_heldout_for_a_small_space_is_an_error():
    from ghnorth_cli.archspace.space import ArchSpace
    from ghnorth_cli.archspace.families import Budget

    space = ArchSpace("one", ("vit",), Budget(widths=(8,), depths=(1,), max_channels=8), "almost no choice")
    with pytest.raises(ArchSpaceError, match="fewer than"):
        heldout_archs(space, count=30)  # it has 24
