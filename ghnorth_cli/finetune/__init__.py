"""Fine-tuning a classifier from a ghnorth checkpoint or a baseline init (``ghnorth finetune``)."""

from ghnorth_cli.finetune.config import RECIPES, FinetuneConfig, Recipe, apply_recipe
from ghnorth_cli.finetune.run import FinetuneResult, finetune

__all__ = ["RECIPES", "FinetuneConfig", "FinetuneResult", "Recipe", "apply_recipe", "finetune"]
