"""Planted canaries: memorised in pretraining, suppressed by fine-tuning, unlocked (or not) by benign fine-tuning."""
