"""Built-in augmentation policies: none, interpretable (still looks like anatomy), aggressive (Keras classic)."""

from medcls.plugins.hookspecs import hookimpl

INTERPRETABLE = dict(rotate_deg=10.0, shift=0.05, shear=0.0, zoom=0.05, lr_flip=0.0, ud_flip=0.0,
                     brightness=0.1, gamma=0.1, noise_std=0.01)
# The classic Keras recipe: rotation 40, shifts 0.2, shear 0.2, zoom 0.2, flips, brightness 0.5-1.5.
# Keras's shear_range is in degrees; here shear is MONAI's shear factor (0.2 is about 11 degrees),
# which is what the recipe intends to show: images that no longer look like anatomy.
AGGRESSIVE = dict(rotate_deg=40.0, shift=0.2, shear=0.2, zoom=0.2, lr_flip=0.5, ud_flip=0.5,
                  brightness=0.5, gamma=0.0, noise_std=0.0)


def create_none():
    from medcls.core.augment import NoAugmentation

    return NoAugmentation()


def create_policy(**params):
    from medcls.core.affine_augment import GeometryIntensityPolicy

    return GeometryIntensityPolicy(**params)


def flips_lr(params: dict) -> bool:
    """Whether the policy, with these parameters, mirrors images left-right."""
    return params.get("lr_flip", 0) > 0


@hookimpl
def medcls_register_policies(register):
    register("none", create_none, description="No augmentation", params={})
    register("interpretable", create_policy, params=INTERPRETABLE, flips_lr=flips_lr,
             description="Small rotation/shift/zoom, mild intensity: images still look like anatomy")
    register("aggressive", create_policy, params=AGGRESSIVE, flips_lr=flips_lr,
             description="Keras classic: rotation 40, shift/shear/zoom 0.2, both flips, brightness 0.5-1.5")
