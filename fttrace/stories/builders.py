"""TFDS builders of story records, written as array_record and read without TensorFlow.

  tinystories_instruct  the public TinyStories-Instruct text files, placed by the user in a manual directory
  generated_stories     records of `generator.py`, with the size, seed and feature rates of its builder config

Both have splits `train` and `validation` and the same features: `story`, `summary`, `words` (text, words
joined by ", "), and `features` / `labels` (one bool per FEATURES entry: the header's requests and the story's
true features). The `Random sentence:` field of TinyStories-Instruct is not kept. Example order is the order
of the source (shuffling disabled), so `validation[i]` of the generated set is the generator's validation
record i. `prepare` builds a dataset into a data directory of the caller's choosing; `data_source` /
`read_records` read it back through `builder.as_data_source()`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from fttrace.errors import UserError, io_reason
from fttrace.stories import generator
from fttrace.stories.record import FEATURES, FormatError, StoryRecord, feature_vector, parse_file

SPLITS = ("train", "validation")
INSTRUCT_FILES = {"train": "TinyStories-Instruct-train.txt", "validation": "TinyStories-Instruct-valid.txt"}
INSTRUCT_URL = "https://huggingface.co/datasets/roneneldan/TinyStoriesInstruct"
MAX_MALFORMED = 0.01  # share of malformed blocks tolerated in a TinyStories-Instruct file


def _features() -> tfds.features.FeaturesDict:
    flags = tfds.features.Tensor(shape=(len(FEATURES),), dtype=np.bool_)
    return tfds.features.FeaturesDict({
        "story": tfds.features.Text(), "summary": tfds.features.Text(), "words": tfds.features.Text(),
        "features": flags, "labels": flags})


def example_from_record(record: StoryRecord) -> dict:
    return {"story": record.story, "summary": record.summary, "words": ", ".join(record.words),
            "features": np.asarray(feature_vector(record.features)),
            "labels": np.asarray(feature_vector(record.labels))}


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_from_example(example: dict) -> StoryRecord:
    words = _text(example["words"])
    return StoryRecord(
        story=_text(example["story"]), summary=_text(example["summary"]),
        words=tuple(w for w in words.split(", ") if w),
        features=tuple(f for f, on in zip(FEATURES, example["features"]) if on),
        labels=tuple(f for f, on in zip(FEATURES, example["labels"]) if on))


class TinystoriesInstruct(tfds.core.GeneratorBasedBuilder):
    """TinyStories-Instruct (Eldan & Li, 2023) from the user's copy of its text files."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {INSTRUCT_FILES['train']} and {INSTRUCT_FILES['validation']} from {INSTRUCT_URL} and place "
        "them in the manual directory.")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=_features(), disable_shuffling=True,
                                     homepage=INSTRUCT_URL)

    def _split_generators(self, dl_manager):
        directory = Path(dl_manager._manual_dir)
        missing_instruct_files(directory, raise_error=True)
        return {split: self._generate_examples(directory / name) for split, name in INSTRUCT_FILES.items()}

    def _generate_examples(self, path: Path) -> Iterator[tuple[int, dict]]:
        # The public files hold a few malformed blocks (truncated records), which are skipped; many of them
        # mean the file is not TinyStories-Instruct text.
        skipped: list[FormatError] = []
        count = 0

        def skip(error: FormatError):
            skipped.append(error)
            if _too_many(len(skipped), count):
                raise UserError(f"{path} does not look like TinyStories-Instruct text: {len(skipped)} malformed "
                                f"records among the first {count + len(skipped)}; the first: {skipped[0]}")

        for count, record in enumerate(parse_file(path, on_error=skip), start=1):
            yield count - 1, example_from_record(record)
        if count == 0:
            raise UserError(f"{path} holds no TinyStories-Instruct record")
        if skipped:
            logging.warning("%s: skipped %d malformed records of %d; the first: %s", path, len(skipped),
                            count + len(skipped), skipped[0])


def _too_many(malformed: int, good: int) -> bool:
    return malformed > max(10, MAX_MALFORMED * good)


def missing_instruct_files(directory, raise_error: bool = False) -> list[str]:
    """The TinyStories-Instruct files absent from `directory`; with `raise_error`, a UserError naming them."""
    directory = Path(directory)
    missing = [name for name in INSTRUCT_FILES.values() if not (directory / name).is_file()]
    if missing and raise_error:
        raise UserError(
            f"TinyStories-Instruct files missing from {directory}: {', '.join(missing)} "
            f"(expected {INSTRUCT_FILES['train']} and {INSTRUCT_FILES['validation']} there; download them from "
            f"{INSTRUCT_URL})")
    return missing


@dataclasses.dataclass
class GeneratedStoriesConfig(tfds.core.BuilderConfig):
    train_size: int = 20_000
    validation_size: int = 2_000
    seed: int = 0
    rates: tuple[tuple[str, float], ...] = tuple(generator.DEFAULT_RATES.items())


def generated_config(train_size: int = 20_000, validation_size: int = 2_000, seed: int = 0,
                     rates: dict[str, float] | None = None) -> GeneratedStoriesConfig:
    """A config named after its parameters, so that each set is cached in a directory of its own."""
    gen = generator.GeneratorConfig(tuple((rates or {}).items()))
    code = "_".join(f"{f[:2].lower()}{round(r * 1000)}" for f, r in gen.rates)  # rates in thousandths
    digest = hashlib.sha256(repr(gen.rates).encode()).hexdigest()[:6]  # tells apart rates that round alike
    name = f"train{train_size}_valid{validation_size}_seed{seed}_{code}_{digest}"
    return GeneratedStoriesConfig(name=name, train_size=train_size, validation_size=validation_size, seed=seed,
                                  rates=gen.rates)


class GeneratedStories(tfds.core.GeneratorBasedBuilder):
    """Procedural stories of `generator.py` in the TinyStories-Instruct record format."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [generated_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=_features(), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {"train": self._generate_examples("train", c.train_size),
                "validation": self._generate_examples("validation", c.validation_size)}

    def _generate_examples(self, stream: str, size: int) -> Iterator[tuple[int, dict]]:
        c = self.builder_config
        config = generator.GeneratorConfig(c.rates)
        for index in range(size):
            yield index, example_from_record(generator.generate_story(c.seed, index, config, stream))


def instruct_builder(data_dir) -> TinystoriesInstruct:
    return TinystoriesInstruct(data_dir=str(data_dir), file_format="array_record")


def generated_builder(data_dir, **config) -> GeneratedStories:
    """`config`: train_size, validation_size, seed, rates (see `generated_config`)."""
    return GeneratedStories(data_dir=str(data_dir), config=generated_config(**config),
                            file_format="array_record")


def prepare(builder: tfds.core.DatasetBuilder, manual_dir=None) -> tfds.core.DatasetBuilder:
    """Write the dataset under the builder's data directory unless it is there already.

    `manual_dir` (TinyStories-Instruct) defaults to `<data_dir>/downloads/manual`.
    """
    tfds.disable_progress_bar()  # callers report their own progress; TFDS's bars would interleave with it
    if isinstance(builder, TinystoriesInstruct) and not builder.is_prepared():
        directory = Path(manual_dir) if manual_dir else Path(builder._data_dir_root) / "downloads" / "manual"
        missing_instruct_files(directory, raise_error=True)
        manual_dir = directory
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=None if manual_dir is None else str(manual_dir),
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
    except OSError as e:  # a full disk, no permission: one line (TFDS chains its own errors onto the OS's)
        raise UserError(f"cannot prepare the dataset {builder.info.full_name} in {builder.data_dir}: "
                        f"{io_reason(e)}; fix that and run again (the preparation starts over)") from None
    return builder


def data_source(builder: tfds.core.DatasetBuilder, split: str):
    """Random access to a prepared split (array_record; no TensorFlow)."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if not builder.is_prepared():
        raise UserError(f"{builder.name} is not prepared under {builder.data_dir}: run prepare(builder) first")
    return builder.as_data_source(split=split)


def read_records(builder: tfds.core.DatasetBuilder, split: str, limit: int | None = None) -> list[StoryRecord]:
    """The records of a prepared split, in order (the first `limit` of them if given)."""
    count = len(data_source(builder, split))
    return list(iter_records(builder, split, range(count if limit is None else min(limit, count))))


def iter_records(builder: tfds.core.DatasetBuilder, split: str, indices: Sequence[int] | None = None
                 ) -> Iterator[StoryRecord]:
    source = data_source(builder, split)
    for i in range(len(source)) if indices is None else indices:
        yield record_from_example(source[i])
