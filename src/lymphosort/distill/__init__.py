"""lymphosort.distill: the distillation losses (one registry, `losses.DISTILL_LOSSES`). The
shipped recipe is `train.config.DistillConfig`'s defaults; feature hooks by module path live
in models.hooks (quantisation uses them too)."""
