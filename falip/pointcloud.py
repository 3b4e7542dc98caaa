"""Point clouds the PointCLIP way, from Python: ``depth_maps`` (B, N, 3) -> (B, 6, 128, 128), ``model_inputs``
(the 3-channel, resized CLIP inputs) and ``foreground_region`` (a view's region of attention).

    import torch
    from falip import FoveatedCLIP
    from falip.pointcloud import depth_maps, model_inputs, foreground_region
    from falip.prompts import FALIP

    model = FoveatedCLIP.from_pretrained("openai/clip-vit-base-patch16")
    views = model_inputs(depth_maps(points), model.image_size)          # points: (1, 1024, 3)
    regions = [foreground_region(view) for view in views]              # one per view (None: empty)

The experiments (``falip-run experiment=modelnet40_3d``) run the same steps through
:class:`falip.tasks.pointcloud.PointCloudTask`.
"""
from .data.pointcloud.projection import (NUM_VIEWS, RESOLUTION, TRANSLATION, VIEW_ANGLES, depth_maps,
                                         euler_to_matrix, foreground_region, model_inputs)
from .tasks.pointcloud import PointCloudTask, search_view_weights

__all__ = ["depth_maps", "model_inputs", "foreground_region", "euler_to_matrix", "VIEW_ANGLES", "TRANSLATION",
           "NUM_VIEWS", "RESOLUTION", "PointCloudTask", "search_view_weights"]
