"""The answer-position study kind (PCFG and Tracr tasks): its run tree (study), its sweep grid (sweep), its default
config (defaults), its tasks (tasks/) and its measurements (evals/)."""
