"""Training: the argument dataclasses of the example scripts, model builders, collators, Trainer subclasses, LoRA
and run bookkeeping (resume, results). Library-only (not shipped with Hub checkpoints)."""
