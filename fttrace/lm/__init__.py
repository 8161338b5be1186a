"""Language-model parts every LM study kind shares (the stories and canary kinds build on them).

  corpus.py    every data variant of a study in one resident token array; documents sampled on device
  steps.py     next-token loss and the vmapped LM training loop (per-member LR, divergence freeze)
  decode.py    batched sampling of every member at once with a key/value cache (temperature, top-k, max length)
  measure.py   feature rate of generations prompted for F, linear probes of "the header asks for F"
  phases.py    the part of a study kind both LM studies share (seed groups and shards, loops)
  defaults.py  the phase section of an LM study's config
"""
