"""The jobs built on the statistics: ranking pre-trained models for a target task
(``ranking``), NC-guided fine-tuning (``finetune``) and few-shot soft masks (``fewshot``)."""

from . import fewshot, finetune, ranking
from .ranking import ModelRanking, rank_models

__all__ = ["ModelRanking", "fewshot", "finetune", "rank_models", "ranking"]
