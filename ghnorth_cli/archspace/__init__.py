"""Architecture spaces for training GHNs: families of small classifiers, sampled with a seed."""

from ghnorth_cli.archspace.families import FAMILIES, Budget, Family
from ghnorth_cli.archspace.space import (
    NAMED,
    SPACES,
    ArchSample,
    ArchSampler,
    ArchSpace,
    ArchSpaceError,
    build_arch,
    get_space,
    heldout_archs,
)

__all__ = ["FAMILIES", "NAMED", "SPACES", "ArchSample", "ArchSampler", "ArchSpace", "ArchSpaceError", "Budget",
           "Family", "build_arch", "get_space", "heldout_archs"]
