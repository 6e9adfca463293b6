"""The label check finds planted label flips, duplicates and train/test leakage."""

from __future__ import annotations

from tenni.assess import check_labels


def test_finds_planted_label_flips(train_data):
    texts, labels = list(train_data[0]), list(train_data[1])
    others = {"food": "sports", "sports": "weather", "weather": "food"}
    planted = [3, 17, 30]
    for i in planted:
        labels[i] = others[labels[i]]
    result = check_labels((texts, labels), backbone="text/minilm")
    flagged = {int(m["source"].split()[-1]) for m in result.suspected_mislabels}
    assert len(flagged & set(planted)) >= 2, result.suspected_mislabels
    assert len(flagged - set(planted)) <= 2, "too many false alarms on clean examples"
    for m in result.suspected_mislabels:
        if int(m["source"].split()[-1]) in planted:
            assert m["suggested"] == train_data[1][int(m["source"].split()[-1])]


def test_finds_duplicates_conflicts_and_leakage(train_data, test_data):
    texts, labels = list(train_data[0]), list(train_data[1])
    texts += [texts[0].upper().rstrip(".!") + " !", texts[1]]  # exact duplicates (case, spacing, punctuation)
    labels += [labels[0], "sports" if labels[1] != "sports" else "food"]  # one conflicting
    test_texts = [texts[5], "A completely new sentence about gardening."]
    result = check_labels((texts, labels), test=(test_texts, None), backbone="text/minilm")
    assert len(result.duplicate_groups) >= 2
    assert any(len(set(g["labels"])) > 1 for g in result.duplicate_groups)
    assert [leak["test"] for leak in result.leakage] == ["item 0"]
    assert "conflicting" in result.summary()


def test_byte_identical_image_copies_are_exact_duplicates_and_leaks(image_folder, tiny_vit, tmp_path):
    """Images are the same when their bytes are, whatever their names: a copy filed under the other class is an
    exact duplicate with conflicting labels, and a training image copied into the test set is an exact leak."""
    import shutil

    root = tmp_path / "imgs"
    shutil.copytree(image_folder / "train", root / "train")
    original = sorted((root / "train" / "warm").iterdir())[0]
    shutil.copy(original, root / "train" / "cool" / ("copy" + original.suffix))
    test = root / "test" / "warm"
    test.mkdir(parents=True)
    shutil.copy(original, test / ("leaked" + original.suffix))
    result = check_labels(str(root / "train"), test=str(root / "test"), backbone=str(tiny_vit))
    conflicts = [g for g in result.duplicate_groups if len(set(g["labels"])) > 1]
    assert len(conflicts) == 1 and len(conflicts[0]["sources"]) == 2
    assert [leak["kind"] for leak in result.leakage if "leaked" in leak["test"]] == ["exact"]


def test_texts_of_only_emoji_or_punctuation_are_not_all_duplicates():
    result = check_labels((["😀", "😡", "!!!", "???", "😀"] * 2, ["a", "b"] * 5), backbone="text/minilm")
    groups = sorted(len(g["sources"]) for g in result.duplicate_groups)
    assert groups == [2, 2, 2, 4]  # each distinct string with its copies, no more


def test_exact_form_ignores_case_spacing_and_punctuation():
    from tenni.assess.check import _normal_form

    assert _normal_form("WASTE of  money.") == _normal_form("waste of money")
    assert _normal_form("Great product, loved it!") == _normal_form("great product loved it")
    assert _normal_form("!!!") != _normal_form("???")
    for a, b in [("not bad :)", "not bad :("), ("great 👍", "great 👎"), ("C++", "C#"), ("-1", "+1")]:
        assert _normal_form(a) != _normal_form(b)
