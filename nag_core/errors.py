"""User-facing errors: each says what is wrong and what to do, so callers (CLI, nodes) can show the
message alone instead of a traceback from deep inside torch."""


class NAGFoleyError(Exception):
    """Base class for every error this pack raises on purpose."""


class WeightsError(NAGFoleyError):
    """A weight file is missing, damaged, of the wrong kind or does not match the model."""


class MediaError(NAGFoleyError):
    """A video or audio input cannot be used."""


class ConfigError(NAGFoleyError):
    """Settings that cannot work together (duration, variant, mode, ...)."""


class MediaWarning(UserWarning):
    """An input was usable but not as asked (shorter than requested, cut short or damaged): the
    message says what was used and why. Also kept on the result (``VideoClip.warning``)."""


def not_a_file(path) -> str:
    """The one wording for a folder sitting where a file belongs (so a user is not told a file
    is "missing" that they can see)."""
    return f"{path} is a directory, expected a file; remove or rename it"
