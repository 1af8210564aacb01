"""Synthetic speakers from espeak-ng, as log-mel spectrogram signals (frames, mels).

Each speaker is one espeak-ng voice variant with a fixed accent and base pitch;
each utterance is a different random sentence with a small jitter of speed and
pitch. This is synthetic speech: it shows the 1D pipeline working end to end,
not accuracy on human voices.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np

# Variants whose timbre differs (robotic and whisper voices left out).
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty",
            "belinda", "benjamin", "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward",
            "Gene", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "Jacky", "john",
            "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel",
            "Mike", "Mr", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert",
            "sandro", "shelby", "steph", "travis", "victor", "zac", "grandpa", "grandma")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbcwmd")
WORDS = ("river table garden yellow window morning quiet simple number music paper happy "
         "winter summer orange basket doctor silver market pocket castle bottle rabbit "
         "forest mirror planet rocket pencil butter ladder dinner button camera letter "
         "monkey candle jacket island pillow guitar engine shadow thunder velvet lemon "
         "coffee harbor meadow puzzle signal travel wonder").split()

SAMPLE_RATE = 22050
N_FFT = 512
HOP = 256
N_MELS = 40


class SpeechUnavailableError(RuntimeError):
    """espeak-ng is not installed (apt-get install espeak-ng)."""


def speakers(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct speakers: (variant, accent, base pitch)."""
    if n > len(VARIANTS):
        raise ValueError(f"at most {len(VARIANTS)} speakers, asked for {n}")
    rng = np.random.default_rng(seed)
    return [{"variant": v, "accent": ACCENTS[i % len(ACCENTS)],
             "pitch": int(rng.integers(25, 75))}
            for i, v in enumerate(VARIANTS[:n])]


def synthesise(text: str, speaker: dict, speed: int, pitch: int) -> np.ndarray:
    """Mono float32 waveform of ``text`` spoken by ``speaker``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechUnavailableError("espeak-ng is not installed (apt-get install espeak-ng)")
    voice = f"{speaker['accent']}+{speaker['variant']}"
    done = subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=True)
    with wave.open(io.BytesIO(done.stdout)) as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise SpeechUnavailableError(f"unexpected espeak-ng output: {w.getframerate()} Hz, "
                                         f"{8 * w.getsampwidth()}-bit")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE,
                   fmin: float = 60.0, fmax: float = 8000.0) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    bins = np.floor((n_fft + 1) * mel_to_hz(mels) / sr).astype(int)
    fb = np.zeros((n_mels, n_fft // 2 + 1), np.float32)
    for m in range(1, n_mels + 1):
        lo, mid, hi = bins[m - 1], bins[m], bins[m + 1]
        fb[m - 1, lo:mid] = (np.arange(lo, mid) - lo) / max(mid - lo, 1)
        fb[m - 1, mid:hi] = (hi - np.arange(mid, hi)) / max(hi - mid, 1)
    return fb


def log_mel(wav: np.ndarray, fb: np.ndarray | None = None) -> np.ndarray:
    """Log-mel spectrogram (frames, mels) of a waveform."""
    fb = mel_filterbank() if fb is None else fb
    if len(wav) < N_FFT:
        wav = np.pad(wav, (0, N_FFT - len(wav)))
    n = 1 + (len(wav) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    frames = wav[idx] * np.hanning(N_FFT).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return np.log(power @ fb.T + 1e-6).astype(np.float32)


def trim_silence(spec: np.ndarray, margin_db: float = 8.0) -> np.ndarray:
    """Drop leading/trailing frames much quieter than the utterance's median energy."""
    energy = spec.mean(axis=1)
    voiced = np.where(energy > np.median(energy) - margin_db / 4.34)[0]
    return spec[voiced[0]:voiced[-1] + 1] if len(voiced) else spec


def fix_length(spec: np.ndarray, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Crop (randomly when ``rng`` is given, else centred) or pad to ``frames`` frames."""
    if len(spec) < frames:
        reps = int(np.ceil(frames / len(spec)))
        spec = np.concatenate([spec] * reps)
    start = (rng.integers(0, len(spec) - frames + 1) if rng is not None
             else (len(spec) - frames) // 2)
    return spec[start:start + frames]


def make_dataset(n_speakers: int = 48, utterances: int = 12, frames: int = 96, seed: int = 0,
                 progress=None) -> dict[str, np.ndarray]:
    """Signals (N, frames, mels) float32 and speaker labels (N,)."""
    rng = np.random.default_rng(seed)
    fb = mel_filterbank()
    xs, ys = [], []
    spk = speakers(n_speakers, seed)
    for s, speaker in enumerate(spk):
        for _ in range(utterances):
            text = " ".join(rng.choice(WORDS, size=6))
            wav = synthesise(text, speaker, speed=int(rng.integers(140, 185)),
                             pitch=int(np.clip(speaker["pitch"] + rng.integers(-4, 5), 0, 99)))
            xs.append(fix_length(trim_silence(log_mel(wav, fb)), frames, rng))
            ys.append(s)
        if progress is not None:
            progress(s + 1, len(spk))
    return {"x": np.stack(xs), "y": np.asarray(ys, np.int32),
            "names": np.asarray([f"{p['accent']}+{p['variant']}" for p in spk])}
