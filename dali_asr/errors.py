"""The errors dali-asr raises on purpose; each message names the file, row group, row or key,
and what was expected."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or value that dali-asr cannot use; the message names the key."""


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message names the path."""


class BadAudioError(RuntimeError):
    """Raised instead of skipping when ``dali_asr.on_bad_audio`` is ``error``."""
