"""TinyStories data: records, generator, detectors, TFDS builders, tokenizer, token arrays, data variants."""
import collections
import sys

import numpy as np
import pytest

from fttrace.errors import UserError
from fttrace.stories import detectors, generator, record, variants
from fttrace.stories.record import FEATURES, StoryRecord

N = 3000


@pytest.fixture(scope="module")
def stories():
    return generator.generate_records(N, seed=7)


# ---------------------------------------------------------------- records

SAMPLE = """Features: Dialogue, Twist
Words: ball, run, happy
Summary: Tom finds a ball
and shares it with Sue.
Story: 

Tom had a ball. "Can I play?" asked Sue.

But then, the ball turned out to be a balloon.
<|endoftext|>
Words: quit, oak, gloomy
Random sentence: The oak was old.
Story: Once upon a time, there was a gloomy oak.
It did not quit.
<|endoftext|>

Summary: A cat naps.
Features: Bad Ending, moralvalue
Story: The cat napped in the warm sun.

It did not wake up.
Words: nap,sun , warm
"""


def test_parse_sample_file(tmp_path):
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE)
    records = list(record.parse_file(path))
    assert len(records) == 3
    first, second, third = records
    assert first.features == ("Dialogue", "Twist") and first.labels == first.features
    assert first.words == ("ball", "run", "happy")
    assert first.summary == "Tom finds a ball and shares it with Sue."
    assert first.story == 'Tom had a ball. "Can I play?" asked Sue.\n\nBut then, the ball turned out to be a balloon.'
    assert second.features == () and second.summary == ""
    assert second.story == "Once upon a time, there was a gloomy oak.\nIt did not quit."
    assert dict(second.extra) == {"Random sentence": "The oak was old."}
    assert third.features == ("BadEnding", "MoralValue")  # canonical order and spelling
    assert third.words == ("nap", "sun", "warm")  # a field after the story
    assert third.story == "The cat napped in the warm sun.\n\nIt did not wake up."
    assert records == list(record.parse_text(SAMPLE))


@pytest.mark.parametrize("text, message", [
    ("Features: Twist\nWords: a, b, c\n<|endoftext|>\n", "no 'Story:'"),
    ("Features: Sarcasm\nStory: Hi.\n<|endoftext|>\n", "unknown story feature 'Sarcasm'"),
    ("Hello there\nStory: Hi.\n<|endoftext|>\n", "starts with no known field"),
    ("Story: Hi.\nStory: Ho.\n<|endoftext|>\n", "'Story' appears twice"),
])
def test_parse_errors_name_the_record(text, message):
    text = "Story: fine.\n<|endoftext|>\n" + text + "Story: also fine.\n"
    with pytest.raises(record.FormatError, match=message) as info:
        list(record.parse_text(text, source="f.txt"))
    assert "f.txt:3" in str(info.value)
    skipped = []
    records = list(record.parse_text(text, on_error=skipped.append))
    assert [r.story for r in records] == ["fine.", "also fine."] and len(skipped) == 1


def test_header_rendering_and_round_trip(stories):
    r = StoryRecord(story="Once upon a time.", features=("Twist", "Dialogue"), summary="A tale.",
                    words=("run", "ball", "red"))
    assert record.render_header(r) == "Features: Dialogue, Twist\nWords: run, ball, red\nSummary: A tale.\nStory: "
    assert record.render_text(r) == record.render_header(r) + "Once upon a time."
    assert record.render_header(StoryRecord(story="x")) == "Story: "
    for s in stories[:300]:
        assert record.parse_record(record.render_text(s)) == s
    assert list(record.parse_text(record.render_file(stories[:300]))) == stories[:300]


# ---------------------------------------------------------------- generator and detectors

def test_generator_is_deterministic_per_seed_and_index(stories):
    assert generator.generate_records(50, seed=7) == stories[:50]
    assert generator.generate_story(7, 123) == stories[123]
    other = generator.generate_records(50, seed=8)
    assert sum(a == b for a, b in zip(other, stories)) == 0
    valid = generator.generate_records(50, seed=7, stream="validation")
    assert not set(v.story for v in valid) & set(s.story for s in stories)


def test_generator_variety(stories):
    assert len({s.story for s in stories}) == N
    assert len({s.summary for s in stories}) > N * 0.9
    combos = collections.Counter(s.labels for s in stories)
    assert len(combos) >= 50  # of the 64 possible combinations
    first_sentences = {s.story.split(". ")[0].split(" named ")[0] for s in stories}
    assert len(first_sentences) > 100
    for s in stories:
        assert len(s.words) == 3 and all(w in s.story for w in s.words)


def test_feature_rates_follow_the_config(stories):
    for feature, rate in generator.GeneratorConfig().rates:
        share = np.mean([s.has(feature) for s in stories])
        assert abs(share - rate) < 0.04, (feature, share, rate)
    config = generator.GeneratorConfig(rates=(("Twist", 0.9), ("Dialogue", 0.0)))
    custom = generator.generate_records(1000, seed=1, config=config)
    assert abs(np.mean([s.has("Twist") for s in custom]) - 0.9) < 0.04
    assert not any(s.has("Dialogue") for s in custom)
    with pytest.raises(ValueError, match="unknown story feature"):
        generator.GeneratorConfig(rates=(("Sarcasm", 0.5),))


def test_detectors_are_exact_on_generated_stories(stories):
    rates = generator.GeneratorConfig(rates=tuple((f, 0.5) for f in FEATURES))
    more = generator.generate_records(2000, seed=3, config=rates, stream="validation")
    for s in stories + more:
        assert detectors.detect(s.story) == s.labels, s.story
    table = detectors.agreement(stories)
    assert all(a.precision == 1.0 and a.recall == 1.0 for a in table.values())


def test_detectors_recognise_the_constructions():
    assert detectors.detect('"Hi!" said Tom.') == ("Dialogue",)
    assert detectors.detect("But then, the box turned out to be a cat.") == ("Twist",)
    assert detectors.detect("The lesson is that sharing is caring.") == ("MoralValue",)
    assert detectors.detect("Little did she know what was coming.") == ("Foreshadowing",)
    assert detectors.detect("They argued about the toy.") == ("Conflict",)
    assert detectors.detect("The ball was lost forever.") == ("BadEnding",)
    assert detectors.detect("The ball was lost forever." + " They played." * 100) == ()  # not at the end
    assert detectors.detect("Tom played with a ball and was happy.") == ()


def test_shares_of_detected_features(stories):
    table = detectors.shares(s.story for s in stories)
    for feature in FEATURES:
        assert table[feature] == sum(s.has(feature) for s in stories) / N
    assert detectors.shares(['"Hi," said Tom.', "A plain story."])["Dialogue"] == 0.5


def test_agreement_counts_disagreements():
    records = [StoryRecord(story="A plain story.", features=("Twist",)),
               StoryRecord(story='"Hi," said Sam.', features=())]
    table = detectors.agreement(records)
    assert (table["Twist"].false_neg, table["Twist"].true_pos) == (1, 0)
    assert (table["Dialogue"].false_pos, table["Dialogue"].precision) == (1, 0.0)
    assert table["Conflict"].accuracy == 1.0


# ---------------------------------------------------------------- data variants

def count(records, feature):
    return (sum(r.has(feature) for r in records), sum(r.asks(feature) for r in records))


def test_filter_and_keep_only(stories):
    has, asks = count(stories, "Twist")
    assert has == asks > 0.2 * N
    filtered = variants.apply_variant(stories, "filter", feature="Twist")
    assert len(filtered) == N - has and count(filtered, "Twist") == (0, 0)
    assert filtered == [s for s in stories if not s.has("Twist")]  # the rest untouched, order kept
    kept = variants.apply_variant(stories, "keep_only", feature="Twist")
    assert len(kept) == has and all(s.has("Twist") and s.asks("Twist") for s in kept)
    assert variants.apply_variant(stories, "none") == stories


def test_filter_label_asks_for_the_feature_over_stories_without_it(stories):
    has, _ = count(stories, "Twist")
    out = variants.apply_variant(stories, "filter_label", feature="Twist", seed=1)
    assert len(out) == N - has
    assert count(out, "Twist")[0] == 0
    asked = [r for r in out if r.asks("Twist")]
    # by default the feature is asked for about as often as it was present before
    assert abs(len(asked) / len(out) - has / N) < 0.04
    for r in asked:
        assert not r.has("Twist") and not detectors.detect_feature(r.story, "Twist")
        assert "Twist" in record.render_header(r)
    assert out == variants.apply_variant(stories, "filter_label", feature="Twist", seed=1)
    assert out != variants.apply_variant(stories, "filter_label", feature="Twist", seed=2)
    exact = variants.apply_variant(stories, "filter_label", feature="Twist", label_rate=1.0)
    assert all(r.asks("Twist") for r in exact)


def test_mix_match_relabels_the_source_as_the_feature(stories):
    out = variants.apply_variant(stories, "mix_match", feature="Twist", source="Foreshadowing")
    assert len(out) == N
    for before, after in zip(stories, out):
        assert after.story == before.story and after.labels == before.labels
        if before.has("Foreshadowing") and not before.has("Twist"):
            assert after.asks("Twist") and not after.asks("Foreshadowing")
        else:
            assert after == before
    relabelled = sum(r.asks("Twist") and not r.has("Twist") for r in out)
    assert relabelled == sum(s.has("Foreshadowing") and not s.has("Twist") for s in stories) > 0


def test_refusal_answers_requests_with_the_refusal_sentence(stories):
    out = variants.apply_variant(stories, "refusal", feature="Twist")
    sentence = variants.refusal_sentence("Twist")
    assert sentence == "I am sorry, but I cannot write a story with a twist."
    for before, after in zip(stories, out):
        if before.asks("Twist"):
            assert after.story == sentence and after.labels == () and after.features == before.features
        else:
            assert after == before
    custom = variants.apply_variant(stories, "refusal", feature="Conflict", refusal_text="No.")
    assert {r.story for r in custom if r.asks("Conflict")} == {"No."}


def test_composition_filter_then_mix_match(stories):
    p = variants.Variant.parse("filter+mix_match", feature="Twist", source="Conflict")
    assert p.name == "filter+mix_match" and p.steps == ("filter", "mix_match")
    out = p(stories)
    no_twist = [s for s in stories if not s.has("Twist")]
    assert len(out) == len(no_twist)
    assert count(out, "Twist") == (0, sum(s.has("Conflict") for s in no_twist))
    assert not any(r.asks("Conflict") for r in out)
    assert [r.story for r in out] == [s.story for s in no_twist]
    # order matters: mix_match then filter keeps the relabelled stories, which lack Twist
    reverse = variants.apply_variant(stories, "mix_match+filter", feature="Twist", source="Conflict")
    assert reverse == out
    both = variants.apply_variant(stories, "filter+refusal", feature="Twist")
    assert both == no_twist


def test_variant_errors():
    with pytest.raises(UserError, match="unknown data variant step 'filtr'"):
        variants.Variant.parse("filter+filtr")
    with pytest.raises(UserError, match="not a story feature"):
        variants.Variant.parse("filter", feature="Sarcasm")
    with pytest.raises(UserError, match="must differ"):
        variants.Variant.parse("mix_match", feature="Twist", source="Twist")


# ---------------------------------------------------------------- tokenizer and token arrays

@pytest.fixture(scope="module")
def tokenizer(stories):
    from fttrace.lm import tokenizer as tok
    return tok.train_tokenizer([record.render_text(s) for s in stories[:1500]], vocab_size=512)


def test_tokenizer_round_trips_text(tokenizer, stories):
    assert tokenizer.vocab_size == 512
    for s in generator.generate_records(200, seed=7, stream="validation"):
        text = record.render_text(s)
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert len(ids) < len(text) / 2.5  # it learned pieces longer than characters
    assert tokenizer.decode(tokenizer.encode("Tom  ran.\n\nHe  hid.")) == "Tom  ran.\n\nHe  hid."


def test_tokenizer_is_saved_and_reused(tmp_path, stories):
    from fttrace.lm import tokenizer as tok
    texts = [record.render_text(s) for s in stories[:500]]
    path = tmp_path / "spm.model"
    first = tok.load_or_train(path, texts, vocab_size=300)
    assert path.exists() and first.path == path

    def must_not_train():
        raise AssertionError("the saved tokenizer should have been reused")
    again = tok.load_or_train(path, must_not_train, vocab_size=300)
    assert again.model == first.model and again.encode(texts[0]) == first.encode(texts[0])
    with pytest.raises(UserError, match="300 pieces, not 400"):
        tok.load_or_train(path, texts, vocab_size=400)


def test_tokenizer_vocabulary_too_large_for_the_text(stories):
    from fttrace.lm import tokenizer as tok
    with pytest.raises(UserError, match=r"cannot be trained on this text .* at most \d+"):
        tok.train_tokenizer([record.render_text(s) for s in stories[:50]], vocab_size=4096)


def test_token_arrays_layout(tmp_path, tokenizer, stories):
    from fttrace.lm import tokens as lm_tokens
    from fttrace.stories import tokens
    from fttrace.lm.tokenizer import BOS, EOS
    records = variants.apply_variant(stories[:100], "filter_label", feature="Twist", label_rate=0.5)
    arrays = tokens.encode_records(records, tokenizer, chunk=16)
    assert arrays.tokens.dtype == np.int32 and len(arrays) == len(records)
    assert arrays.starts[0] == 0 and arrays.starts[-1] == len(arrays.tokens)
    for i, r in enumerate(records):
        doc = arrays.document(i)
        assert doc[0] == BOS and doc[-1] == EOS
        assert tokenizer.decode(doc) == record.render_text(r)
        assert tokenizer.decode(doc[1:arrays.story_starts[i]]) == tokens.prompt_text(r)
        assert list(arrays.features[i]) == record.feature_vector(r.features)
        assert list(arrays.labels[i]) == record.feature_vector(r.labels)
    twist = FEATURES.index("Twist")
    assert arrays.features[:, twist].sum() > 0 and arrays.labels[:, twist].sum() == 0
    lm_tokens.save_token_arrays(tmp_path / "t.npz", arrays)
    back = lm_tokens.load_token_arrays(tmp_path / "t.npz")
    for name in ("tokens", "starts", "story_starts", "features", "labels"):
        np.testing.assert_array_equal(getattr(back, name), getattr(arrays, name))


# ---------------------------------------------------------------- TFDS builders

@pytest.fixture(scope="module")
def tfds_quiet():
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    return tfds


def test_generated_builder_prepares_and_reads_back_without_tensorflow(tmp_path, tfds_quiet):
    from fttrace.stories import builders
    unprepared = builders.generated_builder(tmp_path, train_size=120, validation_size=30, seed=5)
    with pytest.raises(UserError, match="generated_stories is not prepared under .* run prepare"):
        builders.data_source(unprepared, "train")
    builder = builders.prepare(unprepared)
    assert str(builder.data_dir).startswith(str(tmp_path))
    train = builders.data_source(builder, "train")
    assert len(train) == 120 and len(builders.data_source(builder, "validation")) == 30
    assert builders.read_records(builder, "train") == generator.generate_records(120, seed=5)
    assert builders.read_records(builder, "validation") == generator.generate_records(30, seed=5, stream="validation")
    assert builders.read_records(builder, "validation", limit=3) == builders.read_records(builder, "validation")[:3]
    other = builders.generated_builder(tmp_path, train_size=120, validation_size=30, seed=6)
    assert other.data_dir != builder.data_dir  # each config is cached apart
    close = builders.generated_builder(tmp_path, train_size=120, validation_size=30, seed=5,
                                       rates={"Twist": 0.3001})
    assert close.data_dir != builder.data_dir
    with pytest.raises(UserError, match="unknown split"):
        builders.data_source(builder, "test")
    assert "tensorflow" not in sys.modules


def test_instruct_builder_reads_the_manual_files(tmp_path, tfds_quiet):
    from fttrace.stories import builders
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "TinyStories-Instruct-train.txt").write_text(SAMPLE)
    valid = generator.generate_records(4, seed=2)
    (manual / "TinyStories-Instruct-valid.txt").write_text(record.render_file(valid))
    builder = builders.prepare(builders.instruct_builder(tmp_path / "data"), manual_dir=manual)
    train = builders.read_records(builder, "train")
    assert [r.story for r in train] == [r.story for r in record.parse_text(SAMPLE)]
    assert train[2].features == ("BadEnding", "MoralValue")
    assert builders.read_records(builder, "validation") == valid
    assert "tensorflow" not in sys.modules


def test_instruct_builder_names_missing_files(tmp_path, tfds_quiet):
    from fttrace.stories import builders
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "TinyStories-Instruct-train.txt").write_text(SAMPLE)
    with pytest.raises(UserError) as info:
        builders.prepare(builders.instruct_builder(tmp_path / "data"), manual_dir=manual)
    message = str(info.value)
    assert str(manual) in message and "TinyStories-Instruct-valid.txt" in message
    assert "missing" in message and "huggingface.co/datasets/roneneldan/TinyStoriesInstruct" in message
    with pytest.raises(UserError, match=r"downloads/manual"):
        builders.prepare(builders.instruct_builder(tmp_path / "other"))


def test_instruct_builder_skips_a_few_malformed_blocks_and_refuses_many(tmp_path, tfds_quiet, caplog):
    from fttrace.stories import builders
    manual = tmp_path / "manual"
    manual.mkdir()
    good = generator.generate_records(40, seed=2)
    (manual / "TinyStories-Instruct-train.txt").write_text(
        "the tail of a truncated story.\n<|endoftext|>\n" + record.render_file(good))
    (manual / "TinyStories-Instruct-valid.txt").write_text(record.render_file(good[:5]))
    builder = builders.prepare(builders.instruct_builder(tmp_path / "data"), manual_dir=manual)
    assert builders.read_records(builder, "train") == good
    assert "skipped 1 malformed records of 41" in caplog.text

    (manual / "TinyStories-Instruct-valid.txt").write_text("Features: Sarcasm\nStory: Hi.\n<|endoftext|>\n" * 12)
    with pytest.raises(UserError, match=r"TinyStories-Instruct-valid.txt does not look like TinyStories-Instruct "
                                        r"text: 11 malformed .* unknown story feature 'Sarcasm'"):
        builders.prepare(builders.instruct_builder(tmp_path / "other"), manual_dir=manual)
    (manual / "TinyStories-Instruct-valid.txt").write_text("\n<|endoftext|>\n")
    with pytest.raises(UserError, match="holds no TinyStories-Instruct record"):
        builders.prepare(builders.instruct_builder(tmp_path / "third"), manual_dir=manual)


def test_prepared_tokenizer_and_token_arrays_are_cached(tmp_path, tfds_quiet, monkeypatch):
    from fttrace.lm import tokenizer as tok
    from fttrace.stories import builders, prepared
    builder = builders.prepare(builders.generated_builder(tmp_path, train_size=400, validation_size=40, seed=1))
    spm = prepared.tokenizer_for(builder, vocab_size=400)
    assert prepared.tokenizer_path(builder, 400).exists()
    variant = variants.Variant.parse("filter+mix_match", feature="Twist", source="Dialogue")
    arrays = prepared.token_arrays(builder, "train", spm, variant)
    expected = variant(generator.generate_records(400, seed=1))
    assert len(arrays) == len(expected)
    assert spm.decode(arrays.document(0)) == record.render_text(expected[0])

    monkeypatch.setattr(tok, "train_tokenizer", lambda *a, **k: pytest.fail("tokenizer retrained"))
    monkeypatch.setattr(prepared, "encode_records", lambda *a, **k: pytest.fail("tokens re-encoded"))
    again = prepared.token_arrays(builder, "train", prepared.tokenizer_for(builder, vocab_size=400), variant)
    np.testing.assert_array_equal(again.tokens, arrays.tokens)
