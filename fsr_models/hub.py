"""The former name of `fsr_models.folders` (the zoo's folders: loading and saving them, locally and from the Hub),
kept so that code written for it runs unchanged."""

from .folders import *  # noqa: F403
