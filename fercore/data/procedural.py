"""Procedural faces: the built-in default data set, drawn on the fly because a real FER data set cannot be shipped.

Every image is a grayscale face rendered with numpy, vectorised over a batch of images: each per-image
parameter is a (B, 1, 1) array, evaluated over the (H, W) pixel grid; every shape (face, ears, hair, brows,
eyes, nose, mouth, glasses, hand) is a signed distance turned into a one-pixel soft edge. All geometry lives in
face-relative units (face half-height ~0.9), so the same drawing works at any image_size (32, 48, 64, ...).

What carries the label: only the geometry of brows, eyes, mouth and nose. EXPRESSIONS below is the one table of
per-class offsets from the neutral face; a face of class c gets

    parameter = k * EXPRESSIONS[c][parameter] + person_noise

where k in [K_MIN, 1] is a per-image expression intensity (a faint smile ... a full grin) and person_noise is a
per-image Gaussian with the scale in PERSON_NOISE (some people's brows sit low, some mouths curve down at rest).

    happy     mouth corners up, wider mouth, cheek folds; in about half the images an open smile with teeth.
    sad       inner brow ends raised (slanted brows), mouth corners down, slightly narrowed eyes.
    surprise  whole brows high (forehead lines), eyes wide open, mouth a round open "O".
    fear      brows raised and drawn together, eyes wide, mouth stretched sideways and slightly open.
    angry     brows lowered and drawn together (a "V", frown lines), narrowed eyes, thin pressed lips.
    disgust   nose wrinkle and raised nostrils, upper lip raised, narrowed eyes, lowered brows, cheek folds.
    neutral   all offsets zero.

What varies regardless of the label (nuisance): face width, height and jaw taper, face size in the frame,
position, in-plane rotation (+-12 degrees), a small yaw-like shift of the features, eye and mouth size and
placement, brow thickness/arch/darkness, skin, hair and background intensity, hair style (hairline, volume, long
or short), a lighting gradient and 3D-like face shading, glasses (some dark sunglasses), a hand over part of the
face, blur, contrast and sensor noise.

Where the confusions come from: the intensity k runs down to K_MIN, so a weak sad face is nearly neutral; fear
and surprise share raised brows, wide eyes and an open mouth (they differ in brow squeeze, inner-brow slant and
mouth shape), angry and disgust share lowered, drawn-together brows and narrowed eyes (they differ in the nose
wrinkle, the raised upper lip and the lip press). Person noise makes the class distributions overlap, and
occluders (sunglasses, a hand over the mouth) remove the evidence from some images outright. At 48 x 48 an eye is
only two or three pixels tall, as in FER2013, so the task is far from trivial.

Sizes follow FER2013: per class, round(FER2013_TRAIN[c] * scale) training images (at least 1), and a validation
and a test split each of round(train_count * 3589 / 28709) (at least 1), the ratio of FER2013's PublicTest /
PrivateTest to its Training split. Each split is drawn from its own random stream of the seed; the rows are then
shuffled together with a further stream. Same seed -> byte-identical arrays.
"""
from __future__ import annotations

import math

import numpy as np

from fercore.data.options import DataOptions
from fercore.data.faceset import FaceSet, make_faceset
from fercore.images import with_channels
from fercore.labels import CLASSES, resolve_classes

# ---------------------------------------------------------------------------------------------------------------
# The expression table: offsets from the neutral face at full intensity (k = 1). Units are face-relative (face
# half-height ~0.9; a pixel at 48 x 48 is ~0.045), except eye_open (log factor on eye height), mouth_width
# (relative change of the mouth half-width) and the 0..1 strengths. Signs: "up" is positive.
#
#   brow_raise   whole brow up               brow_inner  inner brow end up (negative: down, the angry "V")
#   brow_squeeze inner ends toward midline   eye_open    log eye-height factor (+ wide, - narrowed)
#   mouth_corner corner lift (smile +)       mouth_open  jaw drop: lower lip down (opening)
#   upper_lip    upper lip raised            mouth_width relative half-width change (+ stretched)
#   lip_press    lips thinned, 0..1          teeth       teeth shown when open, 0..1
#   nose_wrinkle 0..1                        cheek_fold  nasolabial fold strength, 0..1
#   open_chance  probability that mouth_open / upper_lip apply in an image (else the mouth stays closed)
# ---------------------------------------------------------------------------------------------------------------
PARAMS = ("brow_raise", "brow_inner", "brow_squeeze", "eye_open", "mouth_corner", "mouth_open", "upper_lip",
          "mouth_width", "lip_press", "teeth", "nose_wrinkle", "cheek_fold")

EXPRESSIONS: dict[str, dict[str, float]] = {
    #           brow_raise  brow_inner  brow_squeeze  eye_open  mouth_corner  mouth_open  upper_lip  mouth_width
    #           lip_press  teeth  nose_wrinkle  cheek_fold  open_chance
    "angry":    dict(brow_raise=-0.060, brow_inner=-0.100, brow_squeeze=0.060, eye_open=-0.55, mouth_corner=-0.020,
                     mouth_open=0.000, upper_lip=0.000, mouth_width=-0.15,
                     lip_press=0.8, teeth=0.0, nose_wrinkle=0.15, cheek_fold=0.15, open_chance=0.0),
    "disgust":  dict(brow_raise=-0.050, brow_inner=-0.040, brow_squeeze=0.040, eye_open=-0.55, mouth_corner=-0.030,
                     mouth_open=0.012, upper_lip=0.055, mouth_width=0.00,
                     lip_press=0.2, teeth=0.6, nose_wrinkle=1.00, cheek_fold=0.60, open_chance=0.6),
    "fear":     dict(brow_raise=0.090, brow_inner=0.050, brow_squeeze=0.045, eye_open=0.65, mouth_corner=-0.025,
                     mouth_open=0.070, upper_lip=0.012, mouth_width=0.18,
                     lip_press=0.0, teeth=0.5, nose_wrinkle=0.00, cheek_fold=0.10, open_chance=0.7),
    "happy":    dict(brow_raise=0.012, brow_inner=0.000, brow_squeeze=0.000, eye_open=-0.35, mouth_corner=0.135,
                     mouth_open=0.075, upper_lip=0.012, mouth_width=0.25,
                     lip_press=0.0, teeth=0.9, nose_wrinkle=0.00, cheek_fold=0.80, open_chance=0.5),
    "sad":      dict(brow_raise=0.000, brow_inner=0.100, brow_squeeze=0.025, eye_open=-0.25, mouth_corner=-0.085,
                     mouth_open=0.000, upper_lip=0.000, mouth_width=-0.06,
                     lip_press=0.3, teeth=0.0, nose_wrinkle=0.00, cheek_fold=0.00, open_chance=0.0),
    "surprise": dict(brow_raise=0.135, brow_inner=0.020, brow_squeeze=0.000, eye_open=0.80, mouth_corner=0.000,
                     mouth_open=0.150, upper_lip=0.025, mouth_width=-0.40,
                     lip_press=0.0, teeth=0.1, nose_wrinkle=0.00, cheek_fold=0.00, open_chance=0.9),
    "neutral":  dict(brow_raise=0.000, brow_inner=0.000, brow_squeeze=0.000, eye_open=0.00, mouth_corner=0.000,
                     mouth_open=0.000, upper_lip=0.000, mouth_width=0.00,
                     lip_press=0.0, teeth=0.0, nose_wrinkle=0.00, cheek_fold=0.00, open_chance=0.0),
}

# Per-image "resting face" noise (standard deviations), added whatever the class: what makes classes overlap.
PERSON_NOISE: dict[str, float] = dict(
    brow_raise=0.028, brow_inner=0.025, brow_squeeze=0.015, eye_open=0.22, mouth_corner=0.028, mouth_open=0.010,
    upper_lip=0.008, mouth_width=0.10, lip_press=0.15, teeth=0.0, nose_wrinkle=0.10, cheek_fold=0.15,
)

K_MIN = 0.25  # weakest expression intensity; k ~ K_MIN + (1 - K_MIN) * U^0.8

# Each face mixes in a share m ~ max_share * U^MIX_POWER of its class's look-alike (m = 0.5: a coin toss).
CONFUSER: dict[str, tuple[str, float]] = dict(  # class -> (look-alike, max_share)
    angry=("disgust", 0.45), disgust=("angry", 0.45), fear=("surprise", 0.45), surprise=("fear", 0.45),
    sad=("neutral", 0.45), neutral=("sad", 0.25), happy=("neutral", 0.45))
MIX_POWER = 1.5

# FER2013 Training-split class counts, canonical order; validation/test each get this ratio of the train count.
FER2013_TRAIN = (3995, 436, 4097, 7215, 4830, 3171, 4965)
EVAL_RATIO = 3589 / 28709

_CHUNK = 64  # images rendered at once (small arrays stay in cache; bounds memory)


def split_counts(scale: float) -> dict[str, list[int]]:
    """Images per class for each split at SCALE: {"train": [...], "val": [...], "test": [...]}."""
    if not scale > 0:
        raise ValueError(f"procedural scale must be > 0, got {scale}")
    train = [max(1, _round(n * scale)) for n in FER2013_TRAIN]
    held = [max(1, _round(n * EVAL_RATIO)) for n in train]
    return {"train": train, "val": list(held), "test": list(held)}


def draw_procedural(scale: float = 0.1, seed: int = 0, image_size: int = 48,
                    options: DataOptions | None = None) -> FaceSet:
    """Draw the procedural FER-style data set: uint8 image_size x image_size faces, FER2013 class proportions.

    The faces are gray; options.channels 3 repeats the gray value in three channels (the colour pipeline's test data).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    counts = split_counts(scale)
    images, labels, splits = [], [], []
    for split_id, name in enumerate(("train", "val", "test")):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919, split_id]))
        lab = np.repeat(np.arange(len(CLASSES)), counts[name])
        lab = lab[rng.permutation(len(lab))]
        images.append(_render_split(rng, lab, image_size))
        labels.append(lab)
        splits.append(np.full(len(lab), split_id, dtype=np.uint8))
    images, labels, splits = np.concatenate(images), np.concatenate(labels), np.concatenate(splits)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 7919, 99])).permutation(len(labels))
    images, labels, splits = images[order], labels[order], splits[order]
    source = f"procedural(scale={scale}, seed={seed})"
    # Its faces are FER2013's seven; data.drop_classes leaves some out (data.classes may only reorder them).
    options = options or DataOptions(image_size=image_size, seed=seed)
    classes = resolve_classes(options, CLASSES, source)
    new_ids = classes.remap(CLASSES)[labels]
    keep = new_ids >= 0
    images = with_channels(images[keep], options.channels)
    return make_faceset(images, new_ids[keep], splits[keep], source=source, class_names=classes.names)


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


# ---------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------

def _draw_params(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    n = len(labels)
    U = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    N = lambda sd: rng.normal(0.0, sd, n)  # noqa: E731
    B = lambda p: rng.random(n) < p  # noqa: E731
    p: dict[str, np.ndarray] = {}

    # Expression: k * table + person noise.
    table = np.array([[EXPRESSIONS[c][name] for name in PARAMS] for c in CLASSES])  # 7 x P
    chance = np.array([EXPRESSIONS[c]["open_chance"] for c in CLASSES])
    k = K_MIN + (1 - K_MIN) * rng.random(n) ** 0.8
    mix = np.array([CONFUSER[c][1] for c in CLASSES])[labels] * rng.random(n) ** MIX_POWER
    other = np.array([CLASSES.index(CONFUSER[c][0]) for c in CLASSES])[labels]
    opened = rng.random(n) < chance[labels]
    for j, name in enumerate(PARAMS):
        delta = ((1 - mix) * table[labels, j] + mix * table[other, j]) * k
        if name in ("mouth_open", "upper_lip", "teeth"):
            delta = np.where(opened, delta, 0.25 * delta if name == "upper_lip" else 0.0)
        p[name] = delta + N(PERSON_NOISE[name]) if PERSON_NOISE[name] else delta
    for name in ("mouth_open", "upper_lip", "lip_press", "teeth", "nose_wrinkle", "cheek_fold"):
        p[name] = np.clip(p[name], 0.0, 1.0)
    p["brow_asym"] = N(0.012)  # one brow higher than the other
    p["corner_asym"] = N(0.012)  # lopsided mouth

    # Head geometry and pose (image units: the image spans [-1, 1]).
    p["scale"] = U(1.00, 1.18)
    p["cx"] = N(0.04)
    p["cy"] = 0.02 + N(0.04)
    p["rot"] = np.clip(N(0.06), -0.21, 0.21)
    p["yaw"] = np.clip(N(0.035), -0.08, 0.08)
    p["face_a"] = U(0.62, 0.74)
    p["face_b"] = U(0.86, 0.96)
    p["taper"] = U(0.10, 0.30)
    p["eye_y"] = -0.10 + N(0.018)
    p["eye_x"] = U(0.25, 0.30)
    p["eye_w"] = U(0.10, 0.13)
    p["eye_h"] = U(0.045, 0.062)
    p["gaze"] = N(0.02)
    p["brow_gap"] = U(0.16, 0.21)  # brow height above the eye centre at rest
    p["brow_th"] = U(0.025, 0.040)
    p["brow_arch"] = U(0.0, 0.04)
    p["brow_dark"] = U(0.60, 0.90)
    p["nose_y"] = 0.22 + N(0.015)
    p["mouth_y"] = 0.48 + N(0.025)
    p["mouth_w"] = U(0.19, 0.25)
    p["lip_dark"] = U(0.15, 0.35)

    # Appearance.
    p["skin"] = U(0.50, 0.85)
    p["bg"] = U(0.15, 0.85)
    p["bg_grad"] = N(0.10)
    light = U(0.0, 0.25)
    ang = U(0, 2 * np.pi)
    p["light_x"], p["light_y"] = light * np.cos(ang), light * np.sin(ang)
    p["shade"] = U(0.10, 0.40)
    dark_hair = B(0.8)
    p["hair"] = np.where(dark_hair, U(0.08, 0.30), U(0.45, 0.80))
    p["hairline"] = U(-0.80, -0.50)
    p["hair_vol"] = U(0.02, 0.16)
    p["hair_long"] = np.where(B(0.4), U(0.4, 1.3), U(-0.15, 0.15))  # long hair or down to the ears
    p["collar"] = U(1.15, 1.45)
    p["clothes"] = U(0.15, 0.85)
    p["bald"] = B(0.06)
    p["glasses"] = B(0.10)
    p["sunglasses"] = B(0.03)
    p["hand"] = B(0.06)
    p["hand_x"] = U(-0.55, 0.55)
    p["hand_y"] = U(0.25, 1.00)
    p["hand_tone"] = U(0.85, 1.10)
    p["contrast"] = U(0.80, 1.20)
    p["blur"] = U(0.0, 1.0) ** 2 * 1.0  # 0 .. 1 pass of a [1 2 1] blur
    p["noise"] = U(0.0, 0.03)
    return {name: np.asarray(v, dtype=np.float32) for name, v in p.items()}


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------

def _render_split(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    params = _draw_params(rng, labels)
    out = np.empty((len(labels), size, size), dtype=np.uint8)
    for start in range(0, len(labels), _CHUNK):
        sl = slice(start, start + _CHUNK)
        chunk = {name: v[sl, None, None] for name, v in params.items()}
        out[sl] = _render(chunk, size, rng)
    return out


class _Frame:
    """Face-local coordinates u (right), v (down) of a pixel grid, for a batch of faces.

    The grid is either the whole image or, for the small facial features, a window of pixels around a point of
    the face (one window per image, gathered with fancy indexing), which keeps the per-feature work small.
    """

    def __init__(self, p, size, rows=None, cols=None):
        f32 = np.float32
        if rows is None:
            g = (np.arange(size, dtype=f32) + 0.5) / size * 2 - 1
            self.X, self.Y = g[None, None, :], g[None, :, None]
        else:
            self.X = ((cols + 0.5) * (2.0 / size) - 1).astype(f32)[:, None, :]
            self.Y = ((rows + 0.5) * (2.0 / size) - 1).astype(f32)[:, :, None]
        self.rows, self.cols = rows, cols
        s, c, sn = p["scale"], np.cos(p["rot"]), np.sin(p["rot"])
        dx, dy = (self.X - p["cx"]) / s, (self.Y - p["cy"]) / s  # small: (B,1,W) and (B,H,1)
        self.u = c * dx + sn * dy
        self.v = c * dy - sn * dx
        self.inv_px = s * f32(size / 2.0)  # pixels per face unit, (B,1,1)

    @classmethod
    def window(cls, p, size, u0, v0, half_u, half_v):
        """The pixels around face point (u0, v0) (B,1,1 arrays) that cover +-half_u x +-half_v face units."""
        s, c, sn = p["scale"], np.cos(p["rot"]), np.sin(p["rot"])
        x = p["cx"] + s * (c * u0 - sn * v0)
        y = p["cy"] + s * (sn * u0 + c * v0)
        s_max, rot_max = float(s.max()), float(np.abs(p["rot"]).max())
        cm, sm = math.cos(rot_max), math.sin(rot_max)
        kx = 2 * math.ceil((half_u * cm + half_v * sm) * s_max * size / 2) + 2
        ky = 2 * math.ceil((half_v * cm + half_u * sm) * s_max * size / 2) + 2
        kx, ky = min(kx, size), min(ky, size)
        col0 = np.rint((x[:, 0, 0] + 1) * size / 2 - 0.5).astype(np.int64) - kx // 2
        row0 = np.rint((y[:, 0, 0] + 1) * size / 2 - 0.5).astype(np.int64) - ky // 2
        col0 = np.clip(col0, 0, size - kx)  # keep the window inside the image
        row0 = np.clip(row0, 0, size - ky)
        return cls(p, size, row0[:, None] + np.arange(ky), col0[:, None] + np.arange(kx))

    def soft(self, d):
        """Coverage of the region d < 0 (d a signed distance in face units), with a one-pixel soft edge."""
        a = d * self.inv_px
        np.subtract(0.5, a, out=a)
        return np.clip(a, 0.0, 1.0, out=a)

    def get(self, img):
        if self.rows is None:
            return img
        return img[np.arange(len(img))[:, None, None], self.rows[:, :, None], self.cols[:, None, :]]

    def put(self, img, win):
        if self.rows is not None:  # out-of-image pixels were clipped away, so every index is unique
            img[np.arange(len(img))[:, None, None], self.rows[:, :, None], self.cols[:, None, :]] = win


def _ellipse(uu, vv, a, b):
    """Approximate signed distance to an axis-aligned ellipse with semi-axes a, b."""
    return (np.sqrt((uu / a) ** 2 + (vv / b) ** 2) - 1.0) * np.minimum(a, b)


def _render(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    f32 = np.float32
    b = len(p["skin"])
    fr = _Frame(p, size)
    u, v, soft = fr.u, fr.v, fr.soft
    X, Y = fr.X, fr.Y

    # Background with its own gradient.
    img = np.broadcast_to(p["bg"] + p["bg_grad"] * (X - 0.5 * Y), (b, size, size)).astype(f32)

    skin, fa, fb, vol = p["skin"], p["face_a"], p["face_b"], p["hair_vol"]
    au = np.abs(u)
    # Shoulders (clothes), neck and ears, behind the face.
    shoulder = soft(p["collar"] - 0.35 * np.clip((au - 0.3) * 2.0, 0, 1) - v)
    img += (p["clothes"] - img) * shoulder
    ear = soft(_ellipse(au - (fa - 0.03), v + 0.02, 0.085, 0.16))
    neck = soft(np.maximum(au - 0.34, np.maximum(0.3 - v, v - p["collar"] - 0.05)))
    img += (skin * 0.85 - img) * np.maximum(ear, neck)

    # Hair behind the head: the top of an ellipse above v = -0.12, straight sides from there to hair_long.
    hair_w = fa + vol
    d_top = np.maximum((np.sqrt((u / hair_w) ** 2 + ((v + 0.12) / (fb + 0.08 + vol)) ** 2) - 1.0) * fa, v + 0.12)
    d_sides = np.maximum(au - hair_w, np.maximum(v - p["hair_long"], -0.13 - v))
    hair = soft(np.minimum(d_top, d_sides)) * (1 - p["bald"])
    img += (p["hair"] - img) * hair

    # Face: an egg-shaped ellipse (narrower jaw), with 3D-like shading towards the edge.
    a_eff = fa * (1.0 - p["taper"] / fb * np.maximum(v, 0.0))
    face_r = np.sqrt((u / a_eff) ** 2 + (v / fb) ** 2)
    face = soft((face_r - 1.0) * fa)
    img += (skin * (1.0 - p["shade"] * np.minimum(face_r, 1.0) ** 3) - img) * face

    # Fringe: hair over the top of the face above the hairline (reaching a bit past the face edge, no seam).
    fringe = soft(np.maximum(v - p["hairline"] - 0.12 * (u / fa) ** 2, (face_r - 1.1) * fa)) * (1 - p["bald"])
    img += (p["hair"] - img) * fringe

    # Facial features, each group drawn in a window of pixels around it.
    up = _Frame.window(p, size, p["yaw"], f32(-0.31), 0.62, 0.40)
    up.put(img, _upper_features(up.get(img), up, p))
    lo = _Frame.window(p, size, p["yaw"], f32(0.34), 0.50, 0.44)
    lo.put(img, _lower_features(lo.get(img), lo, p))

    _occluders(img, fr, p)

    # Lighting, contrast, blur, noise.
    img *= 1.0 + p["light_x"] * X + p["light_y"] * Y
    img = 0.5 + (img - 0.5) * p["contrast"]
    img = _blur(img, p["blur"])
    img += p["noise"] * rng.standard_normal(img.shape, dtype=f32)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _upper_features(img, fr, p):
    """Brows, forehead and frown lines, eyes, nose-bridge wrinkle."""
    soft = fr.soft
    uf, v = fr.u - p["yaw"], fr.v
    q, side = np.abs(uf), np.sign(uf)  # both sides at once: q is the distance from the face midline

    # Brows: a tapered stroke from the inner end (q_in, v_in) to the outer end (q_out, v_out), per side.
    eye_y = p["eye_y"]
    v_b = eye_y - p["brow_gap"] - p["brow_raise"] - side * p["brow_asym"]
    q_in = 0.08 - p["brow_squeeze"]
    q_out = p["eye_x"] + 0.17
    v_in = v_b - p["brow_inner"] + 0.6 * p["brow_squeeze"]
    v_out = v_b + 0.015
    t = (q - q_in) / (q_out - q_in)
    f = v_in + (v_out - v_in) * t - p["brow_arch"] * 4 * t * (1 - t)
    d_brow = np.maximum(np.abs(v - f) - p["brow_th"] * (1.0 - 0.45 * t), (np.abs(t - 0.5) - 0.5) * (q_out - q_in))
    img *= 1.0 - p["brow_dark"] * soft(d_brow)

    # Forehead lines (raised brows) and frown lines (squeezed brows).
    lines = np.clip(p["brow_raise"] / 0.1, 0, 1) * 0.45
    for off in (0.11, 0.19):
        d_line = np.maximum(np.abs(v - (v_b - off + 0.03 * (uf / 0.3) ** 2)) - 0.009, q - 0.28)
        img *= 1.0 - lines * soft(d_line)
    frown = np.clip(p["brow_squeeze"] / 0.045, 0, 1) * 0.4
    d_frown = np.maximum(np.abs(q - (q_in - 0.02)) - 0.01, np.abs(v - (v_in + 0.06)) - 0.06)
    img *= 1.0 - frown * soft(d_frown)

    # Eyes: socket shadow, sclera, iris, dark upper lid.
    e_du = q - p["eye_x"]
    e_dv = v - eye_y
    socket = np.clip(1.0 - np.sqrt((e_du / 0.2) ** 2 + ((e_dv + 0.01) / 0.12) ** 2), 0, 1)
    img *= 1.0 - 0.25 * socket
    eh = np.clip(p["eye_h"] * np.exp(p["eye_open"]), 0.012, 0.12)
    d_eye = _ellipse(e_du, e_dv, p["eye_w"], eh)
    a_eye = soft(d_eye)
    a_iris = soft(np.sqrt((e_du - side * p["gaze"]) ** 2 + e_dv ** 2) - 0.048)
    eye_val = (0.55 + 0.35 * p["skin"]) * (1 - a_iris) + 0.10 * a_iris
    img += (eye_val - img) * a_eye
    lid = soft(np.maximum(np.abs(d_eye) - 0.018, e_dv - 0.3 * eh))
    img *= 1.0 - 0.75 * lid

    # Nose-bridge wrinkle (disgust): short horizontal creases between the eyes.
    wr = 0.5 * p["nose_wrinkle"]
    for off in (-0.05, 0.0, 0.05):
        img *= 1.0 - wr * soft(np.maximum(np.abs(v - (eye_y + 0.1 + off)) - 0.011, q - 0.075))
    return img


def _lower_features(img, fr, p):
    """Nose, cheek folds, lips, mouth opening and teeth."""
    soft = fr.soft
    uf, v = fr.u - p["yaw"], fr.v
    q, side = np.abs(uf), np.sign(uf)

    # Nose: shadow under the tip, nostrils (raised and flared by the wrinkle).
    ny = p["nose_y"] - 0.02 * p["nose_wrinkle"]
    img *= 1.0 - 0.22 * np.clip(1.0 - np.sqrt((uf / 0.13) ** 2 + ((v - ny - 0.01) / 0.05) ** 2), 0, 1)
    img *= 1.0 - 0.5 * soft(_ellipse(q - 0.055 - 0.01 * p["nose_wrinkle"], v - ny, 0.03, 0.018))

    # Mouth: midline y_mid(u) curves with the corner lift; opening between y_up and y_lo; lips as bands.
    my = p["mouth_y"]
    w = p["mouth_w"] * (1.0 + p["mouth_width"])
    corner = p["mouth_corner"] + side * p["corner_asym"]
    r2 = np.clip((uf / w) ** 2, 0, 1)
    y_mid = my - corner * r2
    prof = np.sqrt(1.0 - r2)
    y_up = y_mid - (p["upper_lip"] + 0.3 * p["mouth_open"]) * prof
    y_lo = y_mid + p["mouth_open"] * prof
    inside_w = q - w

    # Cheek (nasolabial) folds from the nose wing to outside the mouth corner.
    q0, q1 = 0.12, w + 0.06
    tf = (q - q0) / (q1 - q0)
    fold_y = ny + (my + 0.02 - corner - ny) * tf
    d_fold = np.maximum(np.abs(v - fold_y) - 0.012, (np.abs(tf - 0.5) - 0.5) * (q1 - q0))
    img *= 1.0 - 0.35 * p["cheek_fold"] * soft(d_fold)

    # Lips.
    lip_scale = (1.0 - 0.75 * p["lip_press"]) * (0.3 + 0.7 * prof)
    d_lips = np.maximum(np.maximum(y_up - 0.03 * lip_scale - v, v - y_lo - 0.045 * lip_scale), inside_w)
    img *= 1.0 - p["lip_dark"] * soft(d_lips)

    # Opening (dark) with upper teeth, then the dark line where the lips meet.
    a_open = soft(np.maximum(np.maximum(y_up - v, v - y_lo), inside_w)) * np.clip((y_lo - y_up) * fr.inv_px, 0, 1)
    teeth_h = p["teeth"] * np.minimum(0.6 * (y_lo - y_up), 0.05)
    a_teeth = soft(v - (y_up + teeth_h)) * (teeth_h > 0.004)
    img += (0.10 + (0.75 * p["skin"] + 0.15) * a_teeth - img) * a_open
    img *= 1.0 - 0.7 * soft(np.maximum(np.abs(v - y_mid) - 0.012, inside_w)) * (1 - a_open)
    return img


def _occluders(img, fr, p):
    """Glasses, sunglasses and a hand, drawn on the subset of images that have them."""
    for key in ("glasses", "sunglasses"):
        idx = np.flatnonzero(p[key][:, 0, 0] > 0)
        if not len(idx):
            continue
        q = np.abs(fr.u[idx] - p["yaw"][idx])
        lq, ld = q - p["eye_x"][idx], fr.v[idx] - p["eye_y"][idx] - 0.01
        ax, ay = np.abs(lq) - 0.09, np.abs(ld) - 0.055  # rounded-box lens, corner radius 0.03
        lens = np.sqrt(np.clip(ax, 0, None) ** 2 + np.clip(ay, 0, None) ** 2) + np.minimum(np.maximum(ax, ay), 0) - 0.03
        ipx = fr.inv_px[idx]
        frame = np.clip(0.5 - (np.abs(lens) - 0.016) * ipx, 0, 1)
        bridge = np.clip(0.5 - np.maximum(np.abs(ld + 0.03) - 0.014, lq + 0.11) * ipx, 0, 1)
        sub = img[idx] * (1.0 - 0.7 * np.maximum(frame, bridge))
        if key == "sunglasses":
            sub += (0.08 - sub) * np.clip(0.5 - lens * ipx, 0, 1)
        img[idx] = sub
    idx = np.flatnonzero(p["hand"][:, 0, 0] > 0)
    if len(idx):
        hu = fr.u[idx] - p["hand_x"][idx]
        hv = fr.v[idx] - p["hand_y"][idx]
        d_hand = _ellipse(hu, hv, 0.30, 0.24)
        for kf in range(4):  # fingers pointing up from the palm
            base, length = -0.12, 0.30 - 0.05 * abs(kf - 1.5)
            fu = hu - (kf - 1.5) * 0.1
            fv = hv - np.clip(hv, base - length, base)
            d_hand = np.minimum(d_hand, np.sqrt(fu ** 2 + fv ** 2) - 0.045)
        a_hand = np.clip(0.5 - d_hand * fr.inv_px[idx], 0, 1)
        tone = np.clip(p["skin"][idx] * p["hand_tone"][idx], 0, 1) * (1.0 - 0.2 * np.clip(-hv / 0.4, 0, 1))
        img[idx] += (tone - img[idx]) * a_hand


def _blur(img: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Per-image blur: `amount` passes (fractional, 0..2) of a separable [1 2 1]/4 kernel, edges replicated."""
    def once(x):
        x = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        x = 0.25 * x[:, :-2] + 0.5 * x[:, 1:-1] + 0.25 * x[:, 2:]
        return 0.25 * x[:, :, :-2] + 0.5 * x[:, :, 1:-1] + 0.25 * x[:, :, 2:]

    a1 = np.clip(amount, 0, 1)
    a2 = np.clip(amount - 1, 0, 1)
    b1 = once(img)
    out = img + (b1 - img) * a1
    if np.any(a2 > 0):
        out += (once(b1) - b1) * a2
    return out
