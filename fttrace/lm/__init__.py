"""Language models on story data: the TinyStories part of the study (does fine-tuning delete a feature, or hide it?).

  corpus.py   every data variant of a study (protocols) in one resident token array; documents sampled on device
  steps.py    next-token loss and the vmapped LM training loop (per-member LR, divergence freeze)
  decode.py   batched sampling of every member at once with a key/value cache (temperature, top-k, max length)
  measure.py  feature rate of generations prompted for F, linear probes of "the header asks for F"
  study.py    the run tree: pretrain -> deletion fine-tuning -> recovery, and the control; results and resume
"""
