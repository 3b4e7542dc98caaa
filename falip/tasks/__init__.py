"""Tasks: what to encode from a split and how to score it. ``task.name`` picks one from :data:`TASKS`."""
from .base import Line, Task
from .classification import ClassificationTask
from .pointcloud import PointCloudTask
from .predict import PredictTask, predict
from .rec import RecTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (RecTask, ClassificationTask, PointCloudTask, PredictTask)}

__all__ = ["Task", "Line", "RecTask", "ClassificationTask", "PointCloudTask", "PredictTask", "predict", "TASKS"]
