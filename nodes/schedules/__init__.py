"""Schedule nodes: each outputs Sigmas (decreasing, ending in 0), and sigma operations."""


def nodes() -> list[type]:
    from .karras import Karras

    return [Karras]
