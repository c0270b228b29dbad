"""A model file that is not valid Python (line 4)."""


def model(y:
    pass
