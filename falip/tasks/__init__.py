"""Tasks: what to encode from a split and how to score it. ``task.name`` picks one from :data:`TASKS`."""
from .base import Line, Task
from .classification import ClassificationTask
from .pointcloud import PointCloudTask
from .rec import RecTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (RecTask, ClassificationTask, PointCloudTask)}

__all__ = ["Task", "Line", "RecTask", "ClassificationTask", "PointCloudTask", "TASKS"]
