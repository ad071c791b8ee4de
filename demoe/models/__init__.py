"""The networks: DeMoE and its dense baseline."""

from demoe.models.demoe import DeMoE
from demoe.models.dense import DenseNAFNet
from demoe.tasks import TASK_INDEX, TASKS, task_index

ARCHITECTURES = {"DeMoE": DeMoE, "DenseNAFNet": DenseNAFNet}

__all__ = ["ARCHITECTURES", "DeMoE", "DenseNAFNet", "TASKS", "TASK_INDEX", "task_index"]
