"""Named evaluation protocols: the settings with which a paper's or a tool's table was measured.

Accuracies measured under different protocols are not interchangeable: on the same set, the augmentation recipe,
the learning-rate schedule and the reported metric move the number by points. A protocol names one complete recipe,
with its source; every setting stays overridable, and the results files record the protocol's name and every
setting used.

- ``hmdc`` (the default), the HMDC authors' ``--method Test`` (method doc section 7): 2000 epochs; SGD, momentum
  0.9, weight decay 5e-4; per-model learning rates (ConvNet 1e-2, ResNet18/50 1e-3, ResNet101 1e-4, ViT-Tiny/Small
  1e-3, ViT-Base 1e-4), constant; batch 128; augmentation ``idc`` (flip, colour, one geometric op and cutout on
  every image); cutmix p 0.5 for CNNs; tested every 10 epochs; the best accuracy (selected on the test set).
- ``dsa``, DC/DSA's ``evaluate_synset`` as DM and MTT reuse it: 1000 epochs; SGD, momentum 0.9, weight decay 5e-4;
  learning rate 0.01 for every model, times 0.1 from epoch E/2 on (``half``); batch 256; augmentation ``dsa``
  (one op per batch, ``ParamDiffAug`` parameters); no cutmix; tested after the last epoch; the final accuracy.
- ``ddranking``, DD-Ranking 0.2.0's ``configs/Demo_LRS_Hard_Label.yaml`` run by ``LabelRobustScoreHard``: 1000
  epochs; SGD, momentum 0.9, weight decay 5e-4; learning rate 0.01 (the config's ``default_lr``), ``StepLR``
  with ``step_size`` 500 stepped per epoch (``step:500``); batch 128 (``syn_batch_size``); augmentation ``dsa``;
  no cutmix; tested every 10 epochs; the best accuracy (selected on the test set).

A set's learned learning rate (MTT's ``lr_best.pt``) replaces the protocol's rate under every protocol unless
``use_learned_lr`` is false.

Why ``hmdc`` is the default: this library reproduces the HMDC paper, whose tables (and this project's
``docs/results.md``) were measured with it, and an existing output folder stays bound to the settings it was started
with. To set a number beside the DC/DSA/DM/MTT tables, use ``dsa``; beside DD-Ranking's hard-label scores,
``ddranking``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hmdc_modules._validation import describe

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "Protocol", "protocol_settings"]

DEFAULT_PROTOCOL = "hmdc"
"""The protocol used when none is named (see the module's text for why)."""


@dataclass(frozen=True)
class Protocol:
    """A named evaluation recipe.

    Attributes:
        name: The protocol's name (``--protocol``).
        title: One line saying what it is.
        source: Where its settings come from.
        settings: The [`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings] values it fixes (the others
            keep their defaults).
    """

    name: str
    title: str
    source: str
    settings: dict[str, Any]


PROTOCOLS: dict[str, Protocol] = {
    "hmdc": Protocol(
        name="hmdc",
        title="the HMDC authors' protocol (the paper's tables)",
        source="HMDC's scripts/run_test_condensation.sh --method Test (method doc section 7)",
        settings={
            "protocol": "hmdc",
            "epochs": 2000,
            "eval_every": 10,
            "batch_size": 128,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "lr": None,
            "lr_schedule": "constant",
            "augment": "idc",
            "cutmix_p": 0.5,
            "metric": "best",
        },
    ),
    "dsa": Protocol(
        name="dsa",
        title="the DC/DSA/DM/MTT convention (their published tables)",
        source="DC/DSA utils.evaluate_synset and ParamDiffAug (aug_mode 'S'), epoch_eval_train 1000, batch_train "
        "256, lr_net 0.01; DM and MTT evaluate with the same function",
        settings={
            "protocol": "dsa",
            "epochs": 1000,
            "eval_every": 0,
            "batch_size": 256,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "lr": 0.01,
            "lr_schedule": "half",
            "augment": "dsa",
            "cutmix_p": 0.0,
            "metric": "final",
        },
    ),
    "ddranking": Protocol(
        name="ddranking",
        title="DD-Ranking's hard-label demo configuration",
        source="DD-Ranking 0.2.0: configs/Demo_LRS_Hard_Label.yaml (num_epochs 1000, syn_batch_size 128, sgd, "
        "momentum 0.9, weight_decay 5e-4, lr_scheduler step, step_size 500, data_aug_func dsa, default_lr 0.01) "
        "run by metrics.LabelRobustScoreHard (test every 10 epochs, best accuracy kept)",
        settings={
            "protocol": "ddranking",
            "epochs": 1000,
            "eval_every": 10,
            "batch_size": 128,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "lr": 0.01,
            "lr_schedule": "step:500",
            "augment": "dsa",
            "cutmix_p": 0.0,
            "metric": "best",
        },
    ),
}
"""The named protocols, by name."""


def protocol_settings(name: str = DEFAULT_PROTOCOL, **overrides: Any) -> Any:
    """The [`EvalSettings`][hmdc_modules.evaluation.records.EvalSettings] of a protocol, with ``overrides`` applied.

    Args:
        name: ``"hmdc"``, ``"dsa"`` or ``"ddranking"``.
        **overrides: Any ``EvalSettings`` field (``epochs=100``, ``data_root=...``, ``lr_schedule="step:50"``).

    Returns:
        The settings; their ``protocol`` field keeps ``name``.

    Raises:
        TypeError: If ``name`` is not a string, or an override has the wrong type.
        ValueError: If ``name`` is unknown, an override names no setting or is out of range.

    Examples:
        >>> s = protocol_settings("dsa", epochs=100)
        >>> s.protocol, s.epochs, s.lr_schedule, s.augment, s.cutmix_p, s.metric
        ('dsa', 100, 'half', 'dsa', 0.0, 'final')
    """
    from hmdc_modules.evaluation.records import EvalSettings

    if not isinstance(name, str):
        raise TypeError(f"`name` must be a protocol name str, got {describe(name)}")
    if name not in PROTOCOLS:
        raise ValueError(f"`name` must be one of {sorted(PROTOCOLS)}, got {name!r}")
    fields = {f.name for f in dataclasses.fields(EvalSettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"`overrides` name no setting: {unknown} (settings: {sorted(fields)})")
    return EvalSettings(**{**PROTOCOLS[name].settings, **overrides})
