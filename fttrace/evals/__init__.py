"""Evaluations run as phases after fine-tuning (the microscope): each is jitted and vmapped over members."""

EVALS: dict = {}
