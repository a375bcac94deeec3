"""A trial before any rank starts: the model takes the data, the optimizer its options.

The config checks (:mod:`apts.config.validate`) know the keys of the yaml files and build
the optimizer once; what only torch knows is found here, in the launching process, on
the CPU, once the data is loaded: the run's model is built on the data's shape and takes
two training samples, and an optimizer given options beyond its yaml file takes one step
on them. A model that cannot take the images (``model=cnn`` on 2x2 images) or a setting
torch refuses only when it steps (``+optimizer.capturable=true`` on the CPU) is then one
line and exit 2, with nothing written, instead of a traceback in every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from apts.config.factory import needs
from apts.config.paths import CONFIG_DIR
from apts.data.dataset import Dataset, to_float
from apts.errors import ConfigError, one_line
from apts.training.loop import switch_mode
from apts.training.setup import build_model, build_optimizer, optimizer_factory


def added_options(ocfg: dict) -> set[str]:
    """The optimizer's keys that its yaml file does not have (``+optimizer.capturable=true``):
    torch keywords that the config checks know only by name."""
    path = CONFIG_DIR / "optimizer" / f"{ocfg.get('name')}.yaml"
    shipped = set(OmegaConf.load(path).get("optimizer", {})) if path.is_file() else set()
    return set(ocfg) - shipped


def trial_step(cfg: dict, ds: Dataset, *, step: bool | None = None) -> None:
    """Build ``cfg``'s model on ``ds`` and (``step``) take one optimizer step on two samples;
    a failure is a one-line :class:`ConfigError`. The caller's RNG state is left as it was.

    ``step=None`` steps only when the optimizer has options that its yaml file does not
    (the shipped ones are tested to step); building a torch optimizer and its first step
    import ``torch._dynamo`` (about 2 s), which a launcher that trains nothing should not
    pay. ``step=False`` checks the model only (the optimizer's construction is checked by
    :func:`apts.config.validate.validate`; a CUDA run: some options are for the GPU)."""
    if step is None:
        step = bool(added_options(cfg["optimizer"]))
    mname, oname = cfg["model"].get("name", "?"), cfg["optimizer"].get("name", "?")
    x = to_float(ds.train_x[:2], ds.mean, ds.std)
    y = ds.train_y[:2]
    with torch.random.fork_rng(devices=[]):
        try:
            model = build_model(cfg["model"], ds.shape, ds.num_classes)
            F.cross_entropy(model(x), y)
        except Exception as e:
            raise ConfigError(
                f"model={mname} cannot take {ds.name}'s images (shape {list(ds.shape)}, "
                f"{ds.num_classes} classes): {one_line(e)}; choose another model or dataset"
            ) from None
        if not step:
            return
        try:
            opt = build_optimizer(cfg["optimizer"], model, None)  # one process
            switch_mode(opt, "train")  # schedule-free steps in train mode only

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            if needs(optimizer_factory(cfg["optimizer"]), "requires_closure"):
                opt.step(closure)
            else:
                closure()
                opt.step()
        except Exception as e:
            raise ConfigError(
                f"optimizer={oname} does not take its options: {one_line(e)}; "
                "check the optimizer.* overrides (apts-train --help lists them)"
            ) from None
