"""search_spaces/: the composable parts and the full space they make, sampled by a real Optuna study (TPE, asked
and told as a sweep would): every draw is a valid config, and a conditional key appears exactly where it applies."""
import importlib
import random

import optuna
import pytest

from fercore.augment.policies import uses_generator
from fercore.config import registry, resolve
from fercore.sweep.spaces import flat_config, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

GAN_KEYS = ("generator.latent_dim", "generator.lr_g", "generator.lr_d", "generator.augment")
DIFFUSION_KEYS = ("generator.lr", "generator.sampling_steps", "generator.guidance")
POLICY_KEYS = {"augment.real_ratio": {"real_ratio"}, "augment.per_class_target": {"per_class", "oversample_per_class"},
               "augment.multiply_k": {"multiply"}}


@pytest.fixture(scope="module")
def full():
    return load_space("full")


@pytest.fixture(scope="module")
def parts(full):
    return importlib.import_module(full.__module__.rpartition(".")[0] + ".parts")


def draws(space, n, seed=0):
    """N configs from SPACE, each told a random value so TPE models the study as it would in a sweep."""
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    rng = random.Random(seed)
    for _ in range(n):
        trial = study.ask()
        returned = space(trial) or {}
        config = flat_config({**trial.params, **returned})
        study.tell(trial, rng.random())
        yield config, trial


def test_parts_read_the_registries():
    parts_ = importlib.import_module(load_space("full").__module__.rpartition(".")[0] + ".parts")
    assert set(parts_.GAN_TYPES) == {"cgan", "dcgan", "gan", "stylegan"}
    assert parts_.DIFFUSION_TYPES == ["diffusion"]
    assert "folder" not in parts_.SAMPLED_GENERATORS and set(parts_.SAMPLED_GENERATORS) == set(
        parts_.GAN_TYPES + parts_.DIFFUSION_TYPES)
    # The backbones that can freeze stages: the torchvision adapters and ResEmoteNet, not linear or cnn3.
    assert set(parts_.FREEZE_STAGES) == set(registry("classifier").names()) - {"linear", "cnn3"}
    assert parts_.FREEZE_STAGES["resemotenet"] == 6 and parts_.FREEZE_STAGES["resnet18"] == 4


@pytest.mark.slow
def test_full_space_draws_are_valid_and_conditional_keys_appear_only_where_they_apply(full, parts):
    seen: dict[str, set] = {k: set() for k in ("classifier.backbone", "augment.policy", "generator.type",
                                                "augment.filter")}
    choices = {}
    for config, trial in draws(full, 200):
        # Strict: no key that does not apply to the chosen entries (drop_inapplicable would hide one).
        resolved = resolve(config).flat()
        assert resolve(config, drop_inapplicable=True).flat() == resolved
        for key in seen:
            if key in config:
                seen[key].add(config[key])
        for name, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                choices[name] = dist.choices

        backbone, policy = config["classifier.backbone"], config["augment.policy"]
        assert ("classifier.freeze_stages" in config) == (backbone in parts.FREEZE_STAGES), config
        for key, owners in POLICY_KEYS.items():
            assert (key in config) == (policy in owners), config
        synthetic = uses_generator(policy)
        assert ("generator.type" in config) == synthetic and ("augment.filter" in config) == synthetic, config
        if not synthetic:
            assert not any(k.startswith("generator.") for k in config), config
            continue
        kind, chosen_filter = config["generator.type"], config["augment.filter"]
        assert all((k in config) == (kind in parts.GAN_TYPES) for k in GAN_KEYS), config
        assert all((k in config) == (kind in parts.DIFFUSION_TYPES) for k in DIFFUSION_KEYS), config
        assert ("generator.ada_target" in config) == (config.get("generator.augment") == "ada"), config
        assert chosen_filter != "discriminator" or kind in parts.GAN_TYPES, config
        assert ("augment.filter_tau" in config) == (chosen_filter != "none"), config

    # Every backbone, policy, generator type (folder needs a path) and filter is offered, and was drawn.
    assert set(choices["classifier.backbone"]) == set(registry("classifier").names())
    assert set(choices["augment.policy"]) == set(registry("augment").names())
    assert set(choices["generator.type"]) == set(registry("generator").names()) - {"folder"}
    assert set(choices["augment.filter"]) == {"none", "classifier_confidence", "discriminator"}
    assert set(choices["augment.filter@no_discriminator"]) == {"none", "classifier_confidence"}
    assert seen["classifier.backbone"] == set(choices["classifier.backbone"])
    assert seen["augment.policy"] == set(choices["augment.policy"])
    assert seen["generator.type"] == set(choices["generator.type"])
    assert seen["augment.filter"] == set(choices["augment.filter"])


def test_the_quickstart_space_draws_valid_configs():
    for config, _ in draws(load_space("quickstart"), 30):
        resolve({**config, "generator.type": "cgan"})


def test_narrow_compositions(parts):
    def space(trial):
        fixed = parts.classifier(trial, backbones=["cnn3", "linear"])
        return {**fixed, **parts.augmentation(trial, policies=["balance"], generators=["folder"], folder="/faces")}

    for config, _ in draws(space, 10):
        assert config["classifier.backbone"] in ("cnn3", "linear") and "classifier.freeze_stages" not in config
        assert config["generator.type"] == "folder" and config["generator.path"] == "/faces"
        assert config["augment.filter"] in ("none", "classifier_confidence")  # a folder has no discriminator
        resolve(config)

    def pretrained(trial):
        return parts.classifier(trial, backbones=["resnet18"], weights={"resnet18": "/w/resnet18.pt"})

    for config, _ in draws(pretrained, 5):
        assert config["classifier.weights"] == "/w/resnet18.pt" and 0 <= config["classifier.freeze_stages"] <= 4

    with pytest.raises(ValueError, match="folder needs folder=PATH"):
        list(draws(lambda t: parts.augmentation(t, policies=["balance"], generators=["folder"]), 1))
