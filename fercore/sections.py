"""The common keys of each config section (data, generator, augment, classifier, train) and the trial's seed, as
Param declarations: the ground floor under fercore.config, which adds what each selected registry entry declares.
Kept apart from fercore.config, which imports every registry, so that code reading results (fercore.report) can
know which keys every entry shares without importing a runtime registry."""
from __future__ import annotations

from fercore.params import Param

# Common parameters of each section. fercore.config adds the selector of a registry section ("generator.type", ...).
SEED = Param("seed", 0, 0, 2**31 - 1, help="seeds the generator, the mixing and the classifier of the trial")
DATA = (
    Param("source", "procedural", help="'procedural', a FER2013 .csv, a class-per-folder tree or a RAF-DB folder"),
    Param("scale", 0.1, 0.001, 10.0, help="procedural set size as a multiple of FER2013's class counts"),
    Param("seed", 0, 0, 2**31 - 1, help="seeds the procedural drawing and carved validation splits, fixed per sweep"),
    Param("image_size", 48, 16, 256, help="side of the square images, pixels; files of any size are resized to it"),
    Param("val_fraction", 0.1, 0.01, 0.5, help="share of training images carved out for validation where a layout has none"),
    Param("classes", "fer2013", help="the class set: 'fer2013' (FER2013's seven, folder names through aliases), "
                                     "'folders' (the tree's own class folders), or a list of class names"),
    Param("drop_classes", "", help="class names (a list) whose images are left out of the data set"),
    Param("aliases", "", help="names fercore does not know mapped to a class: a mapping, or 'name=class,...'"),
    Param("group", "", help="the subject of each image, for subject-aware splits: a regex whose first group names it "
                            "from the file's path relative to the data root (e.g. '^S(\\d+)_'), or a CSV column"),
    Param("folds", 0, 0, 100, help="k-fold: 0 none, else K folds (subject-aware with data.group); data.fold is the "
                                   "fold tested on, validation is carved from the training folds"),
    Param("fold", 0, 0, 99, help="with data.folds: the fold this trial tests on, 0..folds-1 (a grid can sweep it)"),
    Param("channels", 1, choices=(1, 3), help="1: gray; 3: color kept through generators and backbones"),
    Param("dedupe", "none", choices=("none", "drop"),
          help="the data set's own cross-split near-copies: 'none' keeps them (and warns); 'drop' removes every "
               "training face that nearly copies a validation or test face, and every validation face that copies "
               "a test face, before anything trains (counts in dedupe_removed_train / _val)"),
)
GENERATOR = (  # Every type has a budget and a batch; the rest (learning rates, latent size, ...) each type declares.
    Param("epochs", 5, 0, 10_000, help="generator training budget, passes over the training split"),
    Param("batch_size", 64, 2, 4096),
)
AUGMENT = (  # The policy (augment.policy) says how many synthetic images; the filter, which ones are good enough.
    Param("filter", "none", choices=("none", "classifier_confidence", "discriminator"),
          help="quality filter for synthetic images: the reference classifier's confidence in the conditioned class, "
               "or the generator's discriminator; rejected images are replaced by over-generating"),
    Param("filter_tau", 0.5, 0.0, 1.0, help="a synthetic image is kept when its filter score is >= this"),
    Param("filter_rounds", 5, 1, 50, help="over-generation rounds per class before a short class is an error"),
    Param("paired_baseline", True, help="pair a trial that uses synthetic images with the real-only baseline of the "
                                        "same classifier config and seed (cached), and record the uplift over it"),
)
CLASSIFIER = (
    Param("lr", 1e-3, 1e-6, 1.0, help="classifier learning rate"),
    Param("epochs", 5, 1, 1000, help="classifier training epochs"),
    Param("batch_size", 64, 2, 8192),
    Param("weight_decay", 0.0, 0.0, 1.0),
    Param("dropout", 0.5, 0.0, 0.95, help="dropout before the classifier head"),
    Param("optimizer", "adam", choices=("adam", "adamw", "sgd"), help="sgd uses classifier.momentum"),
    Param("momentum", 0.9, 0.0, 0.999, help="SGD momentum"),
    Param("schedule", "none", choices=("none", "cosine", "onecycle", "plateau"),
          help="learning-rate schedule; plateau multiplies it by classifier.plateau_factor when the validation loss "
               "has not improved for classifier.plateau_patience epochs (002 divides it by 10)"),
    Param("plateau_factor", 0.5, 0.01, 0.99, help="schedule=plateau: the rate is multiplied by this when it stalls"),
    Param("plateau_patience", 2, 0, 100, help="schedule=plateau: epochs without a better validation loss before the "
                                              "rate is cut"),
    Param("label_smoothing", 0.0, 0.0, 0.5),
    Param("class_weights", False, help="weight the loss by w_c = (1/n_c) / sum_k(1/n_k) * K (003); early stopping "
                                       "on val_loss and the plateau schedule then judge the weighted validation "
                                       "loss (val_weighted_loss)"),
    Param("patience", 0, 0, 1000, help="stop after this many epochs without improvement; 0 never stops early"),
    Param("early_stop", "val_macro_f1", choices=("val_macro_f1", "val_loss"),
          help="what early stopping and the kept epoch are judged by"),
)
TRAIN = (
    Param("flip", 0.5, 0.0, 1.0, help="probability of a horizontal flip per training image"),
    Param("translate", 2, 0, 16, help="largest random shift per training image, pixels"),
    Param("rotate", 0.0, 0.0, 45.0, help="largest random rotation, degrees either way (003 used 15)"),
    Param("crop", 0.0, 0.0, 0.9, help="random resized crop: up to this share of the area is cut away"),
    Param("erase", 0.0, 0.0, 1.0, help="probability of erasing one random rectangle per image"),
    Param("compile", False, help="torch.compile the classifier (worth it on a GPU for long trials)"),
    Param("device", "auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present, else CPU"),
    Param("precision", "auto", choices=("auto", "fp32", "bf16"), help="autocast: auto is bf16 on CUDA, fp32 on CPU"),
    Param("threads", 0, 0, 256, help="torch CPU threads; 0 leaves torch's default"),
    Param("deterministic", False, help="bit-repeatable runs on a GPU: torch.use_deterministic_algorithms (an op "
                                       "without a deterministic kernel warns) and cuDNN's deterministic, "
                                       "non-benchmarking kernels, for the whole trial; slower"),
)

# The keys a trial is shown by, beside its id, in the sweep's summary and the report.
DESCRIBED = ("classifier.backbone", "generator.type", "augment.policy")
