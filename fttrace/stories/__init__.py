"""TinyStories data for the fine-tuning study: records, a procedural generator, feature detectors, TFDS
builders, a SentencePiece tokenizer, token arrays and the data variants that remove or relabel a feature.

  record.py      StoryRecord, the instruction header, parsing of TinyStories-Instruct text files
  generator.py   seeded procedural stories with exactly annotated features
  detectors.py   one construction detector per feature; agreement with labels
  builders.py    TFDS builders `tinystories_instruct` and `generated_stories` (array_record, no TensorFlow)
  tokenizer.py   SentencePiece training, saving, reuse; encode/decode
  tokens.py      records -> one int32 token array with document boundaries and per-document feature flags
  variants.py    filter, filter_label, mix_match, refusal, keep_only and their compositions
  study.py       the stories study kind (fttrace/engine/runner.py): delete a feature by fine-tuning, recover it
  prepared.py    builder -> cached tokenizer and token arrays

Typical use (the TFDS modules are imported on demand; this package's own import stays light):

    from fttrace.stories import builders, prepared, variants
    builder = builders.prepare(builders.generated_builder(data_dir, train_size=20_000, seed=0))
    # or: builders.prepare(builders.instruct_builder(data_dir), manual_dir=...)
    tokenizer = prepared.tokenizer_for(builder, vocab_size=1024)
    pretrain = prepared.token_arrays(builder, "train", tokenizer)
    finetune = prepared.token_arrays(builder, "train", tokenizer,
                                     variants.Variant.parse("filter+mix_match", feature="Twist"))
    recovery = prepared.token_arrays(builder, "train", tokenizer,
                                     variants.Variant.parse("keep_only", feature="Twist"))
"""
from fttrace.stories.record import FEATURES, StoryRecord, parse_file, parse_text, render_header, render_text
from fttrace.stories.generator import GeneratorConfig, generate_records, generate_story
from fttrace.stories.detectors import agreement, detect
from fttrace.stories.variants import Variant, apply_variant

__all__ = ["FEATURES", "StoryRecord", "parse_file", "parse_text", "render_header", "render_text",
           "GeneratorConfig", "generate_records", "generate_story", "agreement", "detect", "Variant",
           "apply_variant"]
