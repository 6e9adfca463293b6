"""Japanese and other languages: detection, encodings Excel writes, language-aware backbone and baseline."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tenni.api import choose_backbone, make_estimator
from tenni.data import read_dataset
from tenni.errors import ConfigError, DataError
from tenni.language import detect_languages, main_language

JA_TOPICS = {
    "天気": (["雨", "雪", "台風", "晴れ", "霧", "雷"],
           ["明日は{w}になるでしょう", "週末は{w}の予報です", "{w}のため電車が遅れています", "今朝は{w}で寒かった"]),
    "料理": (["カレー", "寿司", "ラーメン", "天ぷら", "味噌汁", "餃子"],
           ["夕食に{w}を作りました", "この店の{w}はとてもおいしい", "母の{w}のレシピを教えてください",
            "{w}を注文しました"]),
    "スポーツ": (["サッカー", "野球", "テニス", "マラソン", "水泳", "柔道"],
             ["{w}の試合で勝ちました", "毎朝{w}の練習をしています", "{w}の決勝は延長戦になった", "{w}で新記録が出た"]),
}


def ja_texts(per_class: int, seed: int):
    rng = random.Random(seed)
    texts, labels = [], []
    for label, (words, templates) in JA_TOPICS.items():
        for _ in range(per_class):
            texts.append(rng.choice(templates).format(w=rng.choice(words)) + rng.choice(["。", "！", "ね。"]))
            labels.append(label)
    return texts, labels


def test_detects_japanese_and_latin():
    texts, _ = ja_texts(5, 0)
    assert main_language(texts) == "ja"
    assert main_language(["The forecast says rain tomorrow.", "We cooked pasta."]) == "latin"
    assert main_language(["今天下雨了", "我喜欢吃饺子"]) == "zh"
    assert detect_languages(["Привет, как дела?"]) == {"ru": 1.0}


def _write(path, text: str, encoding: str, newline="\r\n"):
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


CSV = "text,label\n請求が二重になっています,請求\n荷物がまだ届きません,配送\nＡＢＣ１２３の注文です,配送\n"


@pytest.mark.parametrize("encoding", ["cp932", "utf-8-sig", "utf-8", "utf-16"])
def test_excel_encodings_are_detected(tmp_path, encoding):
    ds = read_dataset(_write(tmp_path / "ja.csv", CSV, encoding))
    assert ds.inputs[0] == "請求が二重になっています"
    assert ds.labels == ["請求", "配送", "配送"]
    assert ds.sources[1].endswith(":3")


def test_full_width_labels_are_normalised(tmp_path):
    path = _write(tmp_path / "w.csv", "text,label\nこんにちは,Ａ\nさようなら,A\n", "utf-8")
    assert read_dataset(path).labels == ["A", "A"]


def test_undecodable_file_names_line_and_encodings_tried(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes("text,label\n正しい行,a\n".encode() + b"caf\xe9 au lait,b\n")
    with pytest.raises(DataError) as info:
        read_dataset(path)
    message = str(info.value)
    assert "line 3" in message and "utf-8, cp932" in message and "--encoding" in message
    assert read_dataset(path, encoding="latin-1").labels == ["a", "b"]


def test_scratch_uses_character_ngrams_for_japanese():
    texts, labels = ja_texts(12, 1)
    est = make_estimator("scratch").fit(texts, labels)
    assert est.vectorizer_["analyzer"] == "char_wb"
    test_texts, test_labels = ja_texts(6, 2)
    assert np.mean(est.predict(test_texts) == np.asarray(test_labels)) >= 0.8
    english = make_estimator("scratch").fit(["good film", "bad film", "great plot", "awful plot"],
                                            ["p", "n", "p", "n"])
    assert english.vectorizer_["analyzer"] == "word"


def test_auto_backbone_picks_multilingual_for_japanese(capsys):
    texts, _ = ja_texts(3, 0)
    assert choose_backbone("auto", texts) == "text/e5-small-multilingual"
    assert "Japanese" in capsys.readouterr().err
    assert choose_backbone("auto", ["The forecast says rain"]) == "text/minilm"


def test_english_backbone_on_japanese_warns_in_one_line(capsys):
    texts, _ = ja_texts(3, 0)
    assert choose_backbone("text/minilm", texts) == "text/minilm"
    err = capsys.readouterr().err.strip()
    assert "Japanese" in err and "text/e5-small-multilingual" in err


def test_auto_keeps_a_trainable_backbone_for_trainable_strategies():
    texts, _ = ja_texts(3, 0)
    assert choose_backbone("auto", texts, strategy="lora") == "text/minilm"


def test_frozen_backbone_refuses_training_strategies():
    texts, labels = ja_texts(4, 0)
    with pytest.raises(ConfigError, match="frozen"):
        make_estimator("finetune", "text/e5-small-multilingual").fit(texts, labels)


def test_multilingual_probe_learns_japanese():
    texts, labels = ja_texts(8, 3)
    est = make_estimator("probe", "text/e5-small-multilingual").fit(texts, labels)
    test_texts, test_labels = ja_texts(5, 4)
    assert np.mean(est.predict(test_texts) == np.asarray(test_labels)) >= 0.8


def test_default_for_japanese_is_the_multilingual_hybrid(tmp_path):
    import tenni

    train, test = ja_texts(8, 3), ja_texts(5, 4)
    model = tenni.fit(train, test=test, baseline=True)
    assert model.backbone_name == "text/e5-small-multilingual" and model.strategy == "auto"
    assert model.estimator.chosen_.name in {"probe", "hybrid"}  # the frozen backbone rules out training
    assert set(model.estimator.race_) == {"probe", "hybrid"}
    assert model.metrics["results"][0]["accuracy"] >= 0.8
    assert model.data_summary["languages"].get("ja", 0) > 0.9
    model.save(tmp_path / "m")
    assert tenni.load(tmp_path / "m").predict(["明日は台風になるでしょう。"]) == ["天気"]
    assert "天気" in (tmp_path / "m" / "report.html").read_text(encoding="utf-8")
