"""Parts of search spaces, composed by full.py and by any space of yours: each suggests one part of a trial's config
with `trial.suggest_*` only, and suggests a key only where it applies:
- generator: the latent size, G and D learning rates and what D sees for adversarial types; learning rate, DDIM
  sampling steps and guidance for diffusion; ADA's target only with ADA.
- classifier: backbone and learning rate; frozen stages only for backbones that can freeze theirs (the torchvision
  ones, ResEmoteNet), up to each one's stage count. Without `weights` the frozen stages keep their random
  initialisation (fixed random features); with a pretrained file it is the usual fine-tuning.
- augmentation: the mixing policy and its own parameter (real_ratio only for real_ratio, ...); only when the policy
  adds synthetic images, the generator and the quality filter; the discriminator filter only for generators with a
  discriminator; filter_tau only when a filter is on.

Use from a space in the same folder: `from .parts import augmentation, classifier` (fercore loads each search_spaces
folder as a package). Names, types and stage counts come from fercore's registries, so a newly registered backbone,
generator type or policy joins the defaults; ranges are ours.

Optuna fixes a categorical's choices and treats a parameter as one thing per name, so where a choice changes what a
key means or which values it has, the suggestion is named `KEY@VARIANT` (`augment.filter_tau@discriminator`); the
sweep sets config key KEY from it.
"""
from fercore import config
from fercore.augment.policies import uses_generator


def _declares(section: str, name: str, key: str) -> bool:
    return any(p.name == key for p in config.section_params(section, name))


GENERATORS = config.registry("generator").names()
GAN_TYPES = [t for t in GENERATORS if _declares("generator", t, "lr_d")]  # adversarial: these have a discriminator
DIFFUSION_TYPES = [t for t in GENERATORS if _declares("generator", t, "sampling_steps")]
# `folder` serves images made elsewhere: nothing to tune, and it needs their path (augmentation(folder=PATH)).
SAMPLED_GENERATORS = [t for t in GENERATORS if not _declares("generator", t, "path")]
BACKBONES = config.registry("classifier").names()
FREEZE_STAGES = {b: int(p.high) for b in BACKBONES for p in config.section_params("classifier", b)
                 if p.name == "freeze_stages"}
POLICIES = config.registry("augment").names()
FILTERS = list(next(p for p in config.AUGMENT if p.name == "filter").choices)


def generator(trial, types=None) -> str:
    """Suggest generator.type among TYPES (default: every type but folder) and that type's own hyperparameters."""
    kind = trial.suggest_categorical("generator.type", list(types or SAMPLED_GENERATORS))
    if kind in GAN_TYPES:
        trial.suggest_int("generator.latent_dim", 16, 256, log=True)
        trial.suggest_float("generator.lr_g", 1e-5, 1e-2, log=True)
        trial.suggest_float("generator.lr_d", 1e-5, 1e-2, log=True)
        if trial.suggest_categorical("generator.augment", ["none", "diffaugment", "ada"]) == "ada":
            trial.suggest_float("generator.ada_target", 0.4, 0.8)
    elif kind in DIFFUSION_TYPES:
        trial.suggest_float("generator.lr", 1e-4, 3e-3, log=True)
        trial.suggest_int("generator.sampling_steps", 10, 100, log=True)
        trial.suggest_float("generator.guidance", 0.0, 5.0)
    return kind


def classifier(trial, backbones=None, weights=None) -> dict:
    """Suggest classifier.backbone among BACKBONES (default: all), its learning rate and, where the backbone can,
    how many stages to freeze. WEIGHTS maps a backbone to a pretrained state-dict file to start from; returned as
    the fixed value it implies."""
    backbone = trial.suggest_categorical("classifier.backbone", list(backbones or BACKBONES))
    trial.suggest_float("classifier.lr", 1e-4, 3e-3, log=True)
    if backbone in FREEZE_STAGES:  # Stage counts differ per backbone: one name each.
        trial.suggest_int(f"classifier.freeze_stages@{backbone}", 0, FREEZE_STAGES[backbone])
    return {"classifier.weights": weights[backbone]} if weights and backbone in weights else {}


def policy(trial, policies=None) -> str:
    """Suggest augment.policy among POLICIES (default: all) and the policy's own parameter."""
    chosen = trial.suggest_categorical("augment.policy", list(policies or POLICIES))
    if chosen == "real_ratio":
        trial.suggest_float("augment.real_ratio", 0.1, 0.9)
    elif chosen in ("per_class", "oversample_per_class"):  # the same target, met by synthetic or repeated real faces
        trial.suggest_int("augment.per_class_target", 250, 4000, log=True)
    elif chosen == "multiply":
        trial.suggest_float("augment.multiply_k", 0.25, 4.0, log=True)
    return chosen


def quality_filter(trial, generator_type: str, filters=None) -> str:
    """Suggest augment.filter among FILTERS (default: all) that GENERATOR_TYPE can serve, and its threshold."""
    filters = list(filters or FILTERS)
    usable = [f for f in filters if f != "discriminator" or generator_type in GAN_TYPES]
    if not usable:
        return "none"
    # Without a discriminator the choices differ, so the choice is another parameter to Optuna.
    chosen = trial.suggest_categorical("augment.filter" if usable == filters else "augment.filter@no_discriminator",
                                       usable)
    if chosen != "none":  # A classifier's confidence and a discriminator's score are different scales.
        trial.suggest_float(f"augment.filter_tau@{chosen}", 0.2, 0.8)
    return chosen


def augmentation(trial, policies=None, filters=None, generators=None, folder=None) -> dict:
    """The mixing policy; when it adds synthetic images, the generator that makes them and the filter that vets them.
    FOLDER, a folder of images made elsewhere (one subfolder per class), adds generator type folder to GENERATORS.
    Returns the fixed values the choices imply (generator.path for folder)."""
    if not uses_generator(policy(trial, policies)):  # real images only, or real ones repeated (oversample_*)
        return {}
    types = list(generators or SAMPLED_GENERATORS)
    if folder and "folder" not in types:
        types.append("folder")
    if "folder" in types and not folder:
        raise ValueError("generator type folder needs folder=PATH, the images it serves")
    kind = generator(trial, types)
    quality_filter(trial, kind, filters)
    return {"generator.path": str(folder)} if kind == "folder" else {}
