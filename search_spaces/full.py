"""Everything fercore can vary, in one space: every backbone, mixing policy, quality filter and generator type (but
folder, which serves images made elsewhere), each with its own hyperparameters only where they apply (see parts.py).
Large: for long GPU sweeps. Training budgets (classifier.epochs, generator.epochs) belong in the sweep's fixed values.
A space of your own composes the parts the same way, with narrower choices, e.g.
    classifier(trial, backbones=["cnn3", "resnet18"]); augmentation(trial, policies=["none", "real_ratio"])."""
from .parts import augmentation, classifier


def space(trial):
    return {**classifier(trial), **augmentation(trial)}
