"""Text-to-text: data reading, prompting, LoRA/QLoRA on a tiny causal LM, saving, merging, the CLI."""

from __future__ import annotations

import json

import pytest

from tenni.errors import ConfigError, DataError
from tenni.generate import Generator, read_pairs
from tenni.generate.metrics import text_metrics

from .conftest import copy_pairs

FAST = {"epochs": 8, "min_steps": 0, "learning_rate": 1e-2, "r": 8, "alpha": 16, "lora_dropout": 0.0}
DECODE = {"max_new_tokens": 4}


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tiny_llm):
    """A LoRA copy model (one word), and its untrained zero-shot baseline's scores."""
    train, test = copy_pairs(48, 1, length=1), copy_pairs(20, 2, length=1)
    untrained = Generator("prompt", str(tiny_llm), {"k": 0}, decoding=DECODE).fit(train).evaluate(test)
    lora = Generator("lora", str(tiny_llm), FAST, decoding=DECODE).fit(train)
    return lora, untrained, test


# --- data ----------------------------------------------------------------------------------------------------

def test_columns_are_detected_in_csv_tsv_and_jsonl(tmp_path):
    csv_pairs = read_pairs(write(tmp_path / "a.csv", "prompt,response\nhello there,hi\nbye now,ciao\n"))
    assert csv_pairs.inputs == ["hello there", "bye now"] and csv_pairs.outputs == ["hi", "ciao"]
    tsv = read_pairs(write(tmp_path / "a.tsv", "question\tanswer\n2+2?\t4\n"))
    assert tsv.inputs == ["2+2?"] and tsv.outputs == ["4"]
    jsonl = read_pairs(write(tmp_path / "a.jsonl", '{"source": "x y", "target": "y x"}\n'))
    assert jsonl.columns == {"input": "source", "output": "target"}


def test_alpaca_rows_join_instruction_and_input(tmp_path):
    rows = ('{"instruction": "Reverse the words.", "input": "a b", "output": "b a"}\n'
            '{"instruction": "Say hi.", "input": "", "output": "hi"}\n')
    pairs = read_pairs(write(tmp_path / "alpaca.jsonl", rows))
    assert pairs.inputs == ["Reverse the words.\n\na b", "Say hi."]


def test_chat_messages_jsonl(tmp_path):
    line = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    pairs = read_pairs(write(tmp_path / "chat.jsonl", json.dumps(line) + "\n"))
    assert pairs.outputs == ["hello"] and [m["role"] for m in pairs.conversations[0]] == ["system", "user"]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"input": ["a", "b"], "output": ["1", "2"]}), tmp_path / "p.parquet")
    assert read_pairs(tmp_path / "p.parquet").outputs == ["1", "2"]


def test_missing_output_column_is_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        read_pairs(write(tmp_path / "x.csv", "input,notes\nhello,foo\n"))
    msg = str(err.value)
    assert "no output column" in msg and "x.csv" in msg and "input, notes" in msg and "\n" not in msg


def test_empty_output_names_the_row(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv:3: empty output \(column 'output'\)"):
        read_pairs(write(tmp_path / "e.csv", "input,output\na,b\nc,\n"))
    with pytest.raises(DataError, match="chat.jsonl:1: no output"):
        read_pairs(write(tmp_path / "chat.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n'))


def test_input_longer_than_the_context_names_file_and_row(tiny_llm, tmp_path):
    long = " ".join(["red"] * 80)  # the tiny model's context is 64 tokens
    path = write(tmp_path / "long.csv", f"input,output\nred,red\n{long},red\n")
    with pytest.raises(DataError, match=r"long\.csv:3: the input \+ output take \d+ tokens, more than the model's "
                                        r"context of 64"):
        Generator("lora", str(tiny_llm), FAST).fit(path)
    gen = Generator("prompt", str(tiny_llm), {"k": 0}).fit(([("red")], ["red"]))
    with pytest.raises(DataError, match="item 0: the input"):
        gen.generate([long])


# --- strategies ----------------------------------------------------------------------------------------------

def test_prompt_baseline_zero_and_k_shot(tiny_llm, tiny_backbone):
    train = copy_pairs(12, 1)
    zero = Generator("prompt", str(tiny_llm), {"k": 0}, decoding=DECODE).fit(train)
    assert len(zero.generate(["red cat", "sun moon"])) == 2
    few = Generator("prompt", str(tiny_llm), {"k": 3, "retriever": str(tiny_backbone)}, decoding=DECODE).fit(train)
    prompt = few._prompts(_as(["red cat"]), 4)[0]
    assert len(prompt) > len(zero._prompts(_as(["red cat"]), 4)[0])  # the shots are in the prompt
    assert len(few.generate(["red cat"])) == 1


def test_k_shot_drops_examples_to_fit_the_context(tiny_llm, tiny_backbone):
    train = copy_pairs(12, 1, length=6)
    gen = Generator("prompt", str(tiny_llm), {"k": 8, "retriever": str(tiny_backbone)}, decoding=DECODE).fit(train)
    prompt = gen._prompts(_as(["red cat dog"]), 4)[0]
    assert len(prompt) + 4 <= 64


def _as(inputs):
    from tenni.generate import as_pairs

    return as_pairs(inputs, labeled=False)


def test_lora_learns_copy_far_above_untrained(trained):
    lora, untrained, test = trained
    scores = lora.evaluate(test)
    assert untrained["exact_match"] <= 0.1
    assert scores["exact_match"] >= 0.5 and scores["rougeL"] >= untrained["rougeL"] + 0.4
    assert lora.training["steps"] > 0 and lora.training["val_examples"] > 0


def test_save_load_gives_identical_greedy_outputs(trained, tmp_path, tiny_llm):
    lora, _, test = trained
    lora.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "tenni.json").read_text())
    assert manifest["task"] == "generate" and manifest["strategy"]["name"] == "lora"
    assert (tmp_path / "m" / "generation_config.json").is_file()
    loaded = Generator.load(tmp_path / "m")
    assert loaded.generate(test) == lora.generate(test)


def test_merge_writes_a_plain_hf_folder(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    lora, _, test = trained
    lora.save(tmp_path / "m")
    Generator.load(tmp_path / "m").merge(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "merged" / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([lora._prompts(_as([test[0][0]]), 4)[0]])
    with torch.inference_mode():
        ours = lora._model(input_ids=ids).logits
        theirs = merged(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_decoding_options(trained):
    lora, _, test = trained
    first = lora.generate(test[0][:3])
    cut = lora.generate(test[0][:3], stop=[first[0]] if first[0] else ["x"])
    assert cut[0] == "" or cut[0] != first[0]
    assert len(lora.generate(test[0][:3], temperature=0.8, top_p=0.9, seed=1)) == 3
    assert all(len(o.split()) <= 1 for o in lora.generate(test[0][:3], max_new_tokens=1))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        lora.generate(test[0][:1], max_new_tokens=0)


def test_resume_from_checkpoint(tiny_llm, tmp_path):
    train = copy_pairs(24, 3, length=1)
    config = dict(FAST, epochs=2, checkpoint_dir=str(tmp_path / "ckpt"))
    first = Generator("lora", str(tiny_llm), config).fit(train)
    assert (tmp_path / "ckpt" / "state.json").is_file()
    again = Generator("lora", str(tiny_llm), config).fit(train)  # finished: resumes at the end, trains nothing
    assert again.training["steps"] == first.training["steps"]
    a, b = first.adapter_state(), again.adapter_state()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_qlora_runs_or_says_why(tiny_llm_64):
    from tenni.generate.backbone import bitsandbytes_problem

    problem = bitsandbytes_problem()
    if problem:
        with pytest.raises(ConfigError, match="bitsandbytes"):
            Generator("qlora", str(tiny_llm_64), FAST).fit(copy_pairs(8, 1, length=1))
        pytest.skip(problem)
    gen = Generator("qlora", str(tiny_llm_64), dict(FAST, epochs=2), decoding=DECODE).fit(copy_pairs(24, 1, 1))
    assert gen.training["steps"] > 0 and len(gen.generate(["red"])) == 1


def test_q4_blocks_hold_a_q4_grid_exactly_and_round_other_weights_to_it():
    import torch

    from tenni.generate.quant4 import Q4Linear, quantize_linears

    torch.manual_seed(0)
    codes = torch.randint(0, 16, (8, 4, 32)).float()
    codes[..., 0], codes[..., 1] = 0, 15  # every block spans its grid, as a Q4_1 file's do
    scale, offset = (torch.rand(8, 4, 1) / 10).half(), (torch.randn(8, 4, 1) / 10).half()
    grid = torch.nn.Linear(128, 8, bias=False)
    with torch.no_grad():
        grid.weight.copy_((codes * scale.float() + offset.float()).reshape(8, 128))
    assert torch.equal(Q4Linear(grid).dequantize(), grid.weight)  # a GGUF-expanded base: nothing lost
    q40 = torch.randint(1, 15, (8, 4, 32)).float()  # Q4_0: w = d * (q - 8), no block reaching code 15
    q40[..., 0] = 0  # its largest-magnitude weight (-8d), of either sign
    d = (torch.rand(8, 4, 1) / 10 * torch.where(torch.rand(8, 4, 1) < 0.5, -1, 1)).half()
    with torch.no_grad():
        grid.weight.copy_(((q40 - 8) * d.float()).reshape(8, 128))
    assert torch.equal(Q4Linear(grid).dequantize(), grid.weight)
    other = torch.nn.Linear(64, 16)
    step = (other.weight.reshape(16, 2, 32).amax(-1) - other.weight.reshape(16, 2, 32).amin(-1)) / 15
    error = (Q4Linear(other).dequantize() - other.weight).abs().reshape(16, 2, 32).amax(-1)
    assert bool((error <= step / 2 + 1e-3).all())  # round to nearest, the fp16 scale's rounding aside
    x = torch.randn(3, 64)
    assert torch.allclose(Q4Linear(other)(x), torch.nn.functional.linear(x, Q4Linear(other).weight, other.bias))
    model = torch.nn.Sequential(torch.nn.Linear(64, 40), torch.nn.Linear(40, 8))
    facts = quantize_linears(model)
    assert facts["replaced"] == 1 and facts["kept"] == 1 and isinstance(model[0], Q4Linear)  # 40 wide: no blocks


def test_qlora_on_q4_blocks_learns_and_round_trips(tiny_llm, tmp_path):
    """qlora over the base's 4-bit blocks: no bitsandbytes needed; it learns the copy task, and a saved model
    loads with the same blocks and gives the same greedy outputs."""
    train, test = copy_pairs(48, 1, length=1), copy_pairs(20, 2, length=1)
    gen = Generator("qlora", str(tiny_llm), dict(FAST, quant="q4"), decoding=DECODE).fit(train)
    assert gen.evaluate(test)["exact_match"] >= 0.5
    gen.save(tmp_path / "m")
    loaded = Generator.load(tmp_path / "m")
    assert loaded.config.quant == "q4" and loaded.generate(test[0]) == gen.generate(test[0])


def test_qlora_picks_the_bases_own_blocks_where_it_came_from_a_q4_gguf(tiny_llm, tmp_path):
    import shutil

    from tenni.generate.backbone import native_q4

    assert not native_q4(tiny_llm)
    converted = shutil.copytree(tiny_llm, tmp_path / "converted")
    (converted / "tenni-converted.json").write_text(json.dumps({"source": "/x/Some-Model.Q4_1.gguf"}))
    assert native_q4(converted)
    gen = Generator("qlora", str(converted), dict(FAST, epochs=1), decoding=DECODE).fit(copy_pairs(16, 1, 1))
    assert gen.config.quant == "q4"
    with pytest.raises(ConfigError, match="quant="):
        Generator("qlora", str(tiny_llm), {"quant": "int3"})


def test_unknown_options_are_refused(tiny_llm):
    with pytest.raises(ConfigError, match="'rank' is not an option"):
        Generator("lora", str(tiny_llm), {"rank": 4})
    with pytest.raises(ConfigError, match="unknown generation strategy"):
        Generator("finetune", str(tiny_llm))


def test_metrics_are_fractions():
    m = text_metrics(["the cats sat", "b"], ["the cat sat", "B "])
    assert m["exact_match"] == 0.5 and m["rougeL"] == 1.0  # stemming: cats = cat
    assert 0 < m["chrf"] < 1


# --- command line ---------------------------------------------------------------------------------------------

def test_cli_fit_predict_evaluate_merge(tiny_llm, tmp_path, capsys):
    from tenni.cli import app

    train, test = copy_pairs(40, 1, length=1), copy_pairs(8, 2, length=1)
    data = write(tmp_path / "train.csv", "input,output\n" + "".join(f"{i},{o}\n" for i, o in zip(*train)))
    held = write(tmp_path / "test.csv", "input,output\n" + "".join(f"{i},{o}\n" for i, o in zip(*test)))
    args = ["fit", str(data), "--task", "generate", "--backbone", str(tiny_llm), "--strategy", "lora", "--test",
            str(held), "-o", str(tmp_path / "m"), "--json", "--set", "epochs=4", "--set", "learning_rate=0.01",
            "--set", "min_steps=0"]
    app(args + ["--no-baseline"], standalone_mode=False)
    result = json.loads(capsys.readouterr().out)
    row = result["results"][0]
    assert row["strategy"] == "lora" and {"rougeL", "exact_match", "chrf"} <= row.keys()
    assert 0 <= row["rougeL"] <= 1
    app(["predict", str(tmp_path / "m"), str(held), "-o", str(tmp_path / "out.jsonl"), "--max-new-tokens", "3"],
        standalone_mode=False)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and set(lines[0]) == {"input", "output"}
    capsys.readouterr()
    app(["evaluate", str(tmp_path / "m"), str(held), "--json"], standalone_mode=False)
    assert "rougeL" in json.loads(capsys.readouterr().out)
    app(["merge", str(tmp_path / "m"), "-o", str(tmp_path / "merged")], standalone_mode=False)
    assert (tmp_path / "merged" / "config.json").is_file()
    assert "Examples" in (tmp_path / "m" / "README.md").read_text()
    assert not (tmp_path / "m.partial").exists()  # the per-epoch checkpoints go once the model is saved


def test_cli_bad_input_is_one_line(tmp_path, tiny_llm):
    import subprocess
    import sys

    bad = write(tmp_path / "bad.csv", "input,notes\nhello,x\n")
    proc = subprocess.run([sys.executable, "-m", "tenni.cli", "fit", str(bad), "--task", "generate", "--backbone",
                           str(tiny_llm)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no output column" in proc.stderr and "Traceback" not in proc.stderr


def test_fit_measures_the_prompt_baseline_beside_lora(tiny_llm, tiny_backbone):
    from tenni.generate import fit

    train = copy_pairs(40, 1, length=1)
    model = fit(train, test=copy_pairs(10, 2, length=1), backbone=str(tiny_llm), instruction="copy :",
                config=dict(FAST, epochs=4, retriever=str(tiny_backbone)), decoding=DECODE)
    names = [r["strategy"] for r in model.metrics["results"]]
    assert names == ["lora", "prompt (3-shot)"]
    assert model.metrics["transfer_gain"]["rougeL"] == pytest.approx(
        model.metrics["results"][0]["rougeL"] - model.metrics["results"][1]["rougeL"])
    assert model._conversation([{"role": "user", "content": "red"}])[-1]["content"] == "copy :\n\nred"


def test_assess_reports_prompting_and_base_loss(tiny_llm, tiny_backbone):
    from tenni.generate import assess

    result = assess(copy_pairs(16, 1, length=1), backbone=str(tiny_llm), retriever=str(tiny_backbone),
                    decoding=DECODE, max_examples=6)
    assert result["n_scored"] == 6 and result["base_loss_per_token"] > 0
    assert {"prompt_0shot", "prompt_3shot"} <= result.keys()
    assert result["recommendation"]["strategy"] in ("prompt", "lora")


def test_cli_fit_table_and_instruction_needs_generate(tiny_llm, tmp_path, capsys):
    from tenni.cli import app

    train = copy_pairs(24, 1, length=1)
    data = write(tmp_path / "train.csv", "input,output\n" + "".join(f"{i},{o}\n" for i, o in zip(*train)))
    app(["fit", str(data), "--task", "generate", "--backbone", str(tiny_llm), "--no-baseline", "--set", "epochs=1",
         "--set", "min_steps=0", "--instruction", "copy :"], standalone_mode=False)
    text = capsys.readouterr().out
    assert "ROUGE-L" in text and "lora" in text and "not saved" in text
    with pytest.raises(ConfigError, match="--instruction is for --task generate"):
        app(["fit", str(data), "--instruction", "copy :"], standalone_mode=False)


def test_k_shot_prompt_model_saves_its_pool(tiny_llm, tiny_backbone, tmp_path):
    train = copy_pairs(10, 1)
    gen = Generator("prompt", str(tiny_llm), {"k": 2, "retriever": str(tiny_backbone)}, decoding=DECODE,
                    instruction="copy :").fit(train)
    gen.save(tmp_path / "p")
    loaded = Generator.load(tmp_path / "p")
    assert loaded.shots.outputs == gen.shots.outputs and loaded.instruction == "copy :"
    assert loaded.generate(["red cat"]) == gen.generate(["red cat"])
    with pytest.raises(ConfigError, match="no trained weights to merge"):
        loaded.merge(tmp_path / "merged")


def test_generation_curve_lora_beside_prompting(tiny_llm, tiny_backbone, tmp_path, capsys):
    from tenni.cli import app

    train, test = copy_pairs(40, 1, length=1), copy_pairs(10, 2, length=1)
    data = write(tmp_path / "train.csv", "input,output\n" + "".join(f"{i},{o}\n" for i, o in zip(*train)))
    held = write(tmp_path / "test.csv", "input,output\n" + "".join(f"{i},{o}\n" for i, o in zip(*test)))
    args = ["curve", str(data), "--task", "generate", "--backbone", str(tiny_llm), "--test", str(held),
            "--budgets", "4,40", "--seeds", "1", "--max-new-tokens", "4", "-o", str(tmp_path / "c")]
    for key, value in dict(FAST, retriever=str(tiny_backbone)).items():
        args += ["--set", f"{key}={value}"]
    app(args, standalone_mode=False)
    result = json.loads((tmp_path / "c" / "curve.json").read_text())
    assert result["sizes"] == [4, 40] and set(result["curves"]) == {"lora", "prompt3"}
    lora = result["curves"]["lora"]["rougeL"]
    assert lora["40"][0] > result["zeroshot"]["rougeL"] + 0.3  # learned to copy from 40 pairs
    assert lora["40"][0] > lora["4"][0]
    assert (tmp_path / "c" / "curve.png").stat().st_size > 0 and "ROUGE-L" in capsys.readouterr().out
    with pytest.raises(DataError, match="41 training pairs asked for, 40 available"):
        app(args + ["--budgets", "41", "-o", str(tmp_path / "d")], standalone_mode=False)
