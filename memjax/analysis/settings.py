"""Analysis settings: frozen dataclasses read from an `analysis.<name>` config node."""

from __future__ import annotations


def _freeze(value):
    """Lists (JSON, command line) become tuples, recursively, so settings are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


class AnalysisSettings:
    """Base of the settings dataclasses; subclasses add fields and `validate`."""

    @classmethod
    def from_config(cls, node):
        values = node.to_dict() if hasattr(node, 'to_dict') else dict(node or {})
        settings = cls(**{key: _freeze(value) for key, value in values.items()})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raises ConfigError for bad values; nothing to check by default."""
