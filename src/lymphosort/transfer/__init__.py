"""lymphosort.transfer: zero-shot transfer, fine-tuning and few-shot curves.

`zeroshot.zero_shot` evaluates a run on another task (threshold and temperature from
validation); `finetune.finetune` adapts it from K shots per class (linear / partial /
full, or `redistill` into a student); `fewshot.few_shot` runs the grid and the curve.
"""
