"""GHN and GHN-orth inits as checkpoints, made once per (arch, image size, init, seed) and cached.

The cached file lives in the experiment's ``inits/`` folder under a name that says what it is and
hashes everything it depends on; a later run (or a resumed experiment) reuses it. Runs executing
at the same time (``--jobs``, Ray, Slurm) take a file lock on the init (``NAME.lock`` beside it),
so the first makes it and the others wait for it and read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from ghnorth_cli.experiment.initspec import InitSpec, OrthSettings

log = logging.getLogger(__name__)

# Class counts of the datasets fine-tuning knows, so the predicted classifier has the right shape
# (fine-tuning keeps it only when it fits the data; None keeps the model's own).
KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion-mnist": 10}

# Predicts the parameters of ``model`` in place with the GHN named ``ghn``; returns provenance.
GhnPredictor = Callable[..., dict[str, Any]]


class LoadedGhnPredictor:
    """Predicts with ``ghnorth_cli.ghn.predict``, loading each GHN (name, file or URL) once."""

    def __init__(self, *, device: str = "cpu") -> None:
        self.device = device
        self._ghns: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A worker process (pool, Ray, Slurm) loads the GHNs it needs itself: never ship them.
        return {"device": self.device, "_ghns": {}}

    def check(self, ghn: str) -> None:
        """Load (downloading if needed) the GHN now, so a missing one stops the experiment early."""
        from ghnorth_cli.ghn.predict import as_ghn

        if ghn not in self._ghns:
            self._ghns[ghn] = as_ghn(ghn, device=self.device)

    def __call__(self, model, *, ghn: str, img_size: int) -> dict[str, Any]:
        from ghnorth_cli.ghn.predict import predict

        self.check(ghn)
        prediction = predict(model, self._ghns[ghn], img_size=img_size, inplace=True)
        trained_on = None
        if prediction.classifier_predicted:  # fine-tuning keeps it only where it was made for the data
            from ghnorth_cli.ghn_training.evaluate import classifier_classes

            trained_on = classifier_classes(ghn, num_classes=self._ghns[ghn].config.num_classes).data
        return {"predicted": len(prediction.params), "kept": prediction.kept,
                "classifier_predicted": prediction.classifier_predicted, "classifier_data": trained_on}


def init_key(init: InitSpec, *, arch: str, img_size: int, small_input: bool, seed: int, num_classes: int | None,
             settings: dict[str, Any] | None) -> dict[str, Any]:
    return {"arch": arch, "img_size": img_size, "small_input": small_input, "seed": seed, "num_classes": num_classes,
            "init": {"kind": init.kind, "source": init.source}, "postprocess": settings}


def cached_init_path(cache_dir: Path, key: dict[str, Any], *, init: InitSpec) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    arch = key["arch"].replace(":", "-").replace("/", "-")
    return cache_dir / f"{arch}-{init.slug}-{key['img_size']}px-s{key['seed']}-{digest}.safetensors"


def materialize_init(
    init: InitSpec,
    *,
    arch: str,
    img_size: int,
    small_input: bool | None = None,
    seed: int,
    data: str,
    cache_dir: str | Path,
    orth: OrthSettings,
    predictor: GhnPredictor,
) -> Path:
    """The checkpoint of a ``ghn:G`` / ``ghn-orth:G`` init, predicted (and post-processed) at most once."""
    from ghnorth_cli.models import resolve_spec

    if not init.needs_materializing:
        raise ValueError(f"{init.label} needs no materializing")
    num_classes = KNOWN_CLASSES.get(data.lower())
    small = img_size <= 32 if small_input is None else small_input
    spec = resolve_spec(arch, num_classes=num_classes, img_size=img_size, small_input=small)
    settings = orth.for_arch(spec.name) if init.kind == "ghn-orth" else None
    key = init_key(init, arch=spec.arch, img_size=img_size, small_input=spec.small_input, seed=seed,
                   num_classes=num_classes, settings=settings)
    path = cached_init_path(Path(cache_dir), key, init=init)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.is_file():  # another run made it while this one waited
            return path
        _make_init(path, init, spec=spec, key=key, img_size=img_size, seed=seed, settings=settings,
                   predictor=predictor)
    return path


def _make_init(path: Path, init: InitSpec, *, spec, key: dict[str, Any], img_size: int, seed: int,
               settings: dict[str, Any] | None, predictor: GhnPredictor) -> None:
    import torch

    from ghnorth_cli.checkpoint import model_tensors, provenance, write_checkpoint
    from ghnorth_cli.models import classifier_tensor_names, create_model, tied_tensor_names
    from ghnorth_cli.postprocess import postprocess

    model = create_model(spec, seed=seed)
    info = predictor(model, ghn=init.source, img_size=img_size)
    tensors, order = model_tensors(model)
    history = [provenance(command="predict", options={"ghn": init.source, "img_size": img_size}, seed=seed, **info)]
    if settings is not None:
        tensors, _ = postprocess(tensors, order, beta=settings["beta"], orth_from=settings["orth_from"],
                                 noise_layers=settings["noise_layers"], generator=torch.Generator().manual_seed(seed),
                                 classifier=classifier_tensor_names(model), tied=tied_tensor_names(model))
        history.append(provenance(command="postprocess", options=settings, seed=seed))
    write_checkpoint(path, tensors, spec=spec, order=order, history=history, extra={"ghnorth.experiment_init": key})
    log.info("init %s for %s (%d px, seed %d) -> %s", init.label, spec.arch, img_size, seed, path)
