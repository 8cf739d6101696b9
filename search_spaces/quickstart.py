"""Quickstart space: backbone, classifier learning rate, mixing policy and, when synthetic images are used,
the cGAN's latent size and learning rates. Define-by-run: only `trial.suggest_*` calls, no computation."""


def space(trial):
    trial.suggest_categorical("classifier.backbone", ["cnn3", "resnet18"])
    trial.suggest_float("classifier.lr", 3e-4, 3e-3, log=True)
    policy = trial.suggest_categorical("augment.policy", ["none", "balance"])
    if policy != "none":
        trial.suggest_int("generator.latent_dim", 32, 128, log=True)
        trial.suggest_float("generator.lr_g", 1e-4, 1e-3, log=True)
        trial.suggest_float("generator.lr_d", 1e-4, 1e-3, log=True)
    return {"generator.type": "cgan"}
