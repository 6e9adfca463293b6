"""Reading image and audio data: folders, tables, formats, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tenni.data import as_dataset, read_dataset
from tenni.data.media import infer_modality, load_audio, load_image, windows
from tenni.errors import DataError


def test_image_folder_with_train_level_is_read_as_images(image_folder):
    ds = read_dataset(image_folder)  # train/ is used; test/ is the test set of `fit`
    assert ds.modality == "image" and ds.class_counts() == {"cool": 12, "warm": 12}
    suffixes = {p.rsplit(".", 1)[-1] for p in ds.inputs}
    assert suffixes == {"png", "jpg", "bmp", "tiff"}
    for p in ds.inputs:
        assert load_image(p).mode == "RGB"  # grayscale and RGBA converted


def test_image_table_of_paths(image_folder, tmp_path):
    train = read_dataset(image_folder / "train")
    rows = ["path,label"] + [f"{p},{y}" for p, y in zip(train.inputs[:6], train.labels[:6])]
    (tmp_path / "files.csv").write_text("\n".join(rows) + "\n")
    ds = read_dataset(tmp_path / "files.csv")
    assert ds.modality == "image" and ds.inputs == train.inputs[:6]
    jsonl = tmp_path / "rel" / "files.jsonl"
    jsonl.parent.mkdir()
    import json
    import shutil

    shutil.copy(train.inputs[0], jsonl.parent / "a.png")
    jsonl.write_text(json.dumps({"image": "a.png", "label": "x"}) + "\n")
    rel = read_dataset(jsonl, labeled=False)
    assert rel.inputs == [str((jsonl.parent / "a.png").resolve())]


def test_missing_file_in_table_names_the_row(tmp_path):
    (tmp_path / "files.csv").write_text("path,label\nnope.png,a\n")
    with pytest.raises(DataError, match=r"files.csv:2: no such file 'nope.png'"):
        read_dataset(tmp_path / "files.csv")


def test_audio_folder_any_rate_and_channels(tone_folder):
    ds = read_dataset(tone_folder / "train")
    assert ds.modality == "audio" and ds.class_counts() == {"high": 10, "low": 10}
    assert {p.rsplit(".", 1)[-1] for p in ds.inputs} == {"wav", "flac", "ogg", "mp3"}
    rates = {load_audio(p)[1] for p in ds.inputs}
    assert rates == {8000, 16000, 22050}
    wav, rate = load_audio(ds.inputs[2], 16000)  # a stereo 22.05 kHz file: mono, resampled
    assert rate == 16000 and wav.ndim == 1 and 0.3 * 16000 < len(wav) < 0.9 * 16000


def test_windows_pad_short_and_split_long():
    assert windows(np.ones(10, np.float32), 100).shape == (1, 100)
    long = windows(np.ones(1000, np.float32), 100, max_windows=5)
    assert long.shape == (5, 100)


def _bad_folder(tmp_path, image_folder, kind):
    import shutil

    root = tmp_path / kind
    shutil.copytree(image_folder / "train", root)
    bad = root / "warm" / f"bad_{kind}.png"
    if kind == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return root, bad


@pytest.mark.parametrize("kind", ["empty", "corrupt"])
def test_bad_images_stop_the_run_with_their_paths(tmp_path, image_folder, kind):
    root, bad = _bad_folder(tmp_path, image_folder, kind)
    with pytest.raises(DataError, match=rf"1 bad image file\(s\) of 25: .*{bad.name}.*--skip-bad-files"):
        read_dataset(root)
    ds = read_dataset(root, skip_bad_files=True)
    assert len(ds) == 24 and str(bad.resolve()) not in ds.inputs


def test_silent_and_corrupt_audio_are_bad(tmp_path, tone_folder):
    import shutil

    import soundfile as sf

    root = tmp_path / "tones"
    shutil.copytree(tone_folder / "train", root)
    sf.write(root / "low" / "silent.wav", np.zeros(8000, np.float32), 8000)
    (root / "high" / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 50)
    pattern = r"2 bad audio file\(s\).*silent.*broken.flac|2 bad audio.*broken.*silent"
    with pytest.raises(DataError, match=pattern) as info:
        read_dataset(root)
    assert ": )" not in str(info.value), "every decode failure says why"
    assert len(read_dataset(root, skip_bad_files=True)) == 20


def test_in_memory_paths_become_a_media_dataset(image_folder):
    train = read_dataset(image_folder / "train")
    ds = as_dataset((train.inputs, train.labels))
    assert ds.modality == "image" and infer_modality(ds.inputs) == "image"
    assert infer_modality(["just some text", "more"]) == "text"


def test_other_files_in_class_folders_are_counted_not_silently_dropped(image_folder, tmp_path, capsys):
    import shutil

    root = tmp_path / "imgs"
    shutil.copytree(image_folder / "train", root)
    (root / "warm" / "notes.txt").write_text("taken on a Tuesday")
    ds = read_dataset(root)
    assert len(ds) == 24
    assert "ignored 1 file(s) that are not image files (.txt)" in capsys.readouterr().err


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    from PIL import Image

    from tenni.data.media import load_image

    wide = Image.new("RGB", (80, 40), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    wide.save(tmp_path / "phone.jpg", exif=exif)
    wide.save(tmp_path / "plain.jpg")
    assert load_image(str(tmp_path / "phone.jpg")).size == (40, 80)
    assert load_image(str(tmp_path / "plain.jpg")).size == (80, 40)
