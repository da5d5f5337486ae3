"""The settings of one Generate: each one's default and limits, defined once here and used by the pipeline, the
command line and the Blender properties (which derive their min/max from these). No torch: Blender's own process
validates a script's values with it before anything is sent to the worker."""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """A number setting: values from minimum to maximum (inclusive; maximum None = any finite value) are accepted;
    soft_min/soft_max bound a UI slider's drag range."""

    default: float
    minimum: float
    maximum: float | None = None
    soft_min: float | None = None
    soft_max: float | None = None

    def span(self) -> str:
        return f"from {self.minimum:g} to {self.maximum:g}" if self.maximum is not None else f"of at least {self.minimum:g}"


RESOLUTION = Limits(default=256, minimum=32, maximum=1024, soft_min=128, soft_max=512)  # marching-cubes grid per axis; 1024³ float32 is 4.3 GB
THRESHOLD = Limits(default=25.0, minimum=0.1, soft_max=100.0)  # iso level on the density; ≤ 0 would fill the volume
FOREGROUND_RATIO = Limits(default=0.85, minimum=0.5, maximum=1.0)  # how much of the model's view the object fills
REMOVE_BACKGROUND = True
# Pictures are downscaled to this longest side before anything else. The model resizes its input to 512×512;
# 2048 px keeps the foreground at ≥ 512 px whenever it spans a quarter of the picture, while a float32 RGBA working
# copy stays ≤ 64 MB.
MAX_SIDE = 2048


@dataclass
class GenerateSettings:
    remove_background: bool = REMOVE_BACKGROUND
    foreground_ratio: float = FOREGROUND_RATIO.default
    resolution: int = RESOLUTION.default
    threshold: float = THRESHOLD.default
    texture_size: int = 0  # the Output settings (core.asset.AssetSettings, which holds their limits) from here on
    face_limit: int = 0
    remove_floaters: bool = False
    watertight: bool = False

    def asset(self):
        from dataclasses import fields

        from .asset import AssetSettings

        return AssetSettings(**{field.name: getattr(self, field.name) for field in fields(AssetSettings)})

    def validate(self):
        """Raise core.errors.InputError naming the first setting outside its limits."""
        from .errors import InputError

        self.asset().validate()
        if not isinstance(self.remove_background, bool):
            raise InputError(f"Remove background must be True or False, not {self.remove_background!r}.")
        for label, value, limits, whole in (("Resolution", self.resolution, RESOLUTION, True),
                                            ("Threshold", self.threshold, THRESHOLD, False),
                                            ("Foreground ratio", self.foreground_ratio, FOREGROUND_RATIO, False)):
            if not _within(value, limits, whole):
                kind = "a whole number" if whole else "a number"
                raise InputError(f"{label} must be {kind} {limits.span()}, not {value!r}.")


def _within(value, limits: Limits, whole: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        return False
    if not math.isfinite(value) or value < limits.minimum:
        return False
    return limits.maximum is None or value <= limits.maximum
