"""Data nodes: real data sets that ship inside PyPI packages, with fixed train/held-out splits."""


def nodes() -> list[type]:
    from .digits import DataDigits
    from .mnist import DataMnist

    return [DataDigits, DataMnist]
