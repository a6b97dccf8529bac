# Copyright (c) mmbcn contributors. All rights reserved.
"""A config whose text is formatted once per content.

mmengine 0.10 formats a config's text (``Config.pretty_text``) with yapf
each time it is read, and a Runner reads it five or six times in a run:
the logged config, the dumped config, the run's metadata, each
checkpoint's ``meta.cfg`` and TensorBoard's copy. yapf takes 0.2-0.7 s of
CPU for the shipped configs, every time, for the same text.
:class:`FormattedOnceConfig` keeps what yapf returned for each text it
formatted, so the same content is formatted once per process and a changed
config is formatted again: the text is always exactly mmengine's.
"""
import copy

from mmengine.config import Config

# the unformatted text (mmengine's own, before yapf) -> the formatted one;
# the oldest entry goes when there are more than _KEEP
_FORMATTED: dict = {}
_KEEP = 16


class FormattedOnceConfig(Config):
    """:class:`mmengine.config.Config` whose ``pretty_text`` is formatted by
    yapf once per content (copies made by the Runner keep the class)."""

    @property
    def pretty_text(self) -> str:
        if not self._format_python_code:
            return super().pretty_text
        plain = copy.copy(self)
        object.__setattr__(plain, '_format_python_code', False)
        text = Config.pretty_text.fget(plain)
        formatted = _FORMATTED.get(text)
        if formatted is None:
            formatted = super().pretty_text
            if len(_FORMATTED) >= _KEEP:
                del _FORMATTED[next(iter(_FORMATTED))]
            _FORMATTED[text] = formatted
        return formatted


def formatted_once(cfg: Config) -> FormattedOnceConfig:
    """A copy of ``cfg`` (as ``copy.copy``: nested values shared) that
    formats its text once per content."""
    once = copy.copy(cfg)
    object.__setattr__(once, '__class__', FormattedOnceConfig)
    return once
