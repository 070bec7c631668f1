"""The checks across keys of params.yaml: tasks and their classes, labels, the positive class,
backbones against the image size and the layers to unfreeze, label typos.

Each takes the built :class:`~cxr.core.config.Config` and raises
:class:`~cxr.core.checks.ConfigError` naming the key and what it accepts.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from cxr.core.backbones import BACKBONES
from cxr.core.checks import ConfigError

if TYPE_CHECKING:
    from cxr.core.config import Config


def check_semantics(config: Config, source: str) -> None:
    if config.task not in config.classes:
        raise ConfigError(f"{source}: task: {config.task!r} is not a task; allowed: {sorted(config.classes)}")
    labels = set(config.label_names())
    for task, groups in config.classes.items():
        wildcards = [name for name, members in groups.items() if members == "*"]
        if len(wildcards) > 1:
            raise ConfigError(f"{source}: classes.{task}: at most one class may be '*', got {wildcards}")
        for name, members in groups.items():
            for label in [] if members == "*" else members:
                if label not in labels:
                    raise ConfigError(
                        f"{source}: classes.{task}.{name}: label {label!r} is not produced by "
                        f"`labels`; allowed: {sorted(labels)}"
                    )
    check_label_typos(config, source)
    fractions = config.split.fractions
    if any(value <= 0 for value in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(f"{source}: split.train/val/test must be positive and sum to 1, got {fractions}")
    sections = config.sources.image_sources()
    if not config.sources.use:
        raise ConfigError(f"{source}: sources.use: at least one source is needed; allowed: {sections}")
    if not config.sources.external:
        raise ConfigError(
            f"{source}: sources.external: the shortcut audit needs one external test source; "
            f"allowed: {sections} not in sources.use"
        )
    for key in ("use", "external"):
        for name in getattr(config.sources, key):
            if name in config.sources.sections and name not in sections:
                raise ConfigError(
                    f"{source}: sources.{key}: {name!r} is an annotation set, not an image source; "
                    f"image sources: {sections}"
                )
            if name not in config.sources.sections:
                raise ConfigError(
                    f"{source}: sources.{key}: {name!r} has no section sources.{name}; "
                    f"sources with a section: {sections}"
                )
    both = sorted(set(config.sources.use) & set(config.sources.external))
    if both:
        raise ConfigError(
            f"{source}: sources.external: {both} also in sources.use; an external test source must never be trained on"
        )
    for key, names in (("backbones", config.backbones), ("backbone", [config.backbone])):
        for name in names:
            if name not in BACKBONES:
                raise ConfigError(f"{source}: {key}: unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    if config.backbone not in config.backbones:
        raise ConfigError(
            f"{source}: backbone: {config.backbone!r} is not in backbones {config.backbones}; finetune refines "
            f"a trained backbone (set both, e.g. -S 'backbones=[{config.backbone}]' -S backbone={config.backbone})"
        )
    if config.positive_class not in config.class_names():
        raise ConfigError(
            f"{source}: positive_class: {config.positive_class!r} is not a class of task "
            f"{config.task!r}; allowed: {config.class_names()}"
        )
    if config.train.image_size != "native":
        for name in config.backbones:
            if config.train.image_size < BACKBONES[name].min_size:
                raise ConfigError(
                    f"{source}: train.image_size: {name} needs at least {BACKBONES[name].min_size} px, "
                    f"got {config.train.image_size}"
                )
    ceiling = BACKBONES[config.backbone].unfreezable_layers
    if config.finetune.unfreeze > ceiling:
        raise ConfigError(
            f"{source}: finetune.unfreeze: {config.finetune.unfreeze} is more than the "
            f"{ceiling} layers of {config.backbone}'s base that can be unfrozen"
        )
    if sorted(config.synthetic.patients) != sections:
        raise ConfigError(
            f"{source}: synthetic.patients: needs one count per source section {sections}, "
            f"got {sorted(config.synthetic.patients)}"
        )
    if config.synthetic.min_size > config.synthetic.max_size:
        raise ConfigError(f"{source}: synthetic.min_size must not exceed synthetic.max_size")


def check_label_typos(config: Config, source: str) -> None:
    """A label of ``labels`` that no task's classes name, spelled like one they do name (``VIRALL`` for
    ``VIRAL``, ``Normal`` for ``NORMAL``), is a typo that would silently drop its images from every task
    that lists classes by name; labels no class names and like none (``LIPOID``) are left out by design."""
    named = {
        label
        for groups in config.classes.values()
        for members in groups.values()
        if members != "*"
        for label in members
    }
    for label in sorted(set(config.label_names()) - named):
        close = difflib.get_close_matches(label.upper(), {name.upper(): name for name in named}, n=1, cutoff=0.8)
        if close:
            findings = sorted(finding for finding, value in config.labels.items() if value == label)
            tasks = sorted(
                task
                for task, groups in config.classes.items()
                if not any(members == "*" for members in groups.values())
            )
            raise ConfigError(
                f"{source}: labels: {label!r} (for {', '.join(map(repr, findings))}) is named by no "
                f"class of any task; did you mean {close[0]!r}? Its images would be left out of "
                f"{', '.join(tasks) or 'every task'}"
            )
