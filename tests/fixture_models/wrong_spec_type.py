"""A model file whose ``SPEC`` is a dict, not a ``ModelSpec``."""

SPEC = {"name": "wrong_spec_type", "model": None, "data": None}
