"""I/O nodes: files and pictures (side effects: not cached)."""


def nodes() -> list[type]:
    from .class_grid import ClassGrid
    from .image_grid import ImageGrid
    from .plot_samples import PlotSamples
    from .save_tensor import SaveTensor
    from .save_texts import SaveTexts
    from .save_unmask_order import SaveUnmaskOrder
    from .save_image import SaveImage
    from .load_image import LoadImage
    from .load_mask import LoadMask

    return [SaveTensor, SaveTexts, PlotSamples, ImageGrid, ClassGrid, SaveUnmaskOrder, SaveImage, LoadImage, LoadMask]
