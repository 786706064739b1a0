"""The package's own exceptions: callers catch one base class, users read one sentence."""

from __future__ import annotations


class LymphosortError(Exception):
    """Base class of every error lymphosort raises on purpose."""


class IDXError(LymphosortError, ValueError):
    """An IDX file is malformed: the message names the file and what is wrong."""


class DatasetNotFoundError(LymphosortError, RuntimeError):
    """Dataset files are missing (RuntimeError, as the original LymphoMNIST raised)."""


class DownloadError(LymphosortError, OSError):
    """Every mirror failed, or a downloaded archive is unsafe or incomplete."""


class ConfigError(LymphosortError, ValueError):
    """A configuration value, preset or name is unknown or out of range."""


class AuditError(LymphosortError, ValueError):
    """The confound audit cannot run on this input (too few images, wrong shapes, class mismatch)."""
