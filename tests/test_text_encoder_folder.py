"""A new T5Gemma-shaped text encoder for models trained from scratch: its tokenizer is learnt from
the captions, our port loads the folder, and it can replace a checkpoint's encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from conftest import checkpoint_dir

from stable_audio_3 import StableAudioModel
from stable_audio_3.models.t5gemma import NativeT5Gemma
from stable_audio_3.training.text_encoder_folder import train_caption_tokenizer, write_text_encoder_folder

CAPTIONS = ["acoustic grand piano, C major chord", "drum kit, rock beat, 120 BPM", "violin, A4 note", "riser"]


def test_the_tokenizer_knows_every_caption_word_and_ends_with_eos() -> None:
    tok = train_caption_tokenizer(CAPTIONS)
    for caption in CAPTIONS:
        ids = tok.encode(caption).ids
        assert ids[-1] == 1 and 3 not in ids  # <eos>, and no <unk>
    assert tok.encode("Violin, C major chord").ids == tok.encode("violin, c major chord").ids
    assert 3 in tok.encode("theremin").ids


def test_split_digits_makes_a_note_its_pitch_class_and_octave(tmp_path: Path) -> None:
    captions = [*CAPTIONS, "flute, C#4 note", "bass, C2 note"]
    tok = train_caption_tokenizer(captions, split_digits=True)
    words = [tok.id_to_token(i) for i in tok.encode("violin, C4 note, 120 BPM").ids]
    assert words == ["violin", ",", "c", "4", "note", ",", "120", "bpm", "<eos>"]
    assert tok.encode("trumpet, c2 note").ids[-4:-2] == tok.encode("c 2").ids[:2]
    assert "a4" in train_caption_tokenizer(captions).get_vocab()  # off by default: the shipped tokenizer
    folder = write_text_encoder_folder(
        tmp_path / "te", captions, layers=1, heads=2, head_dim=8, split_digits=True
    )
    encoder = NativeT5Gemma(folder)  # the saved file splits the same way
    assert (
        encoder.tokenize(["violin, A4 note"], 8)[0][0, :5].tolist() == tok.encode("violin, a 4 note").ids[:5]
    )


def test_the_folder_loads_natively_and_replaces_a_checkpoints_encoder(tmp_path: Path) -> None:
    folder = write_text_encoder_folder(tmp_path / "te", CAPTIONS, layers=1, heads=2, head_dim=8, ff=16)
    assert NativeT5Gemma.supports(folder, 32)
    encoder = NativeT5Gemma(folder)
    ids, mask = encoder.tokenize(CAPTIONS, 32)
    hidden = encoder(ids, mask)
    assert hidden.shape == (4, 32, 768) and torch.isfinite(hidden).all()
    assert not torch.allclose(hidden[0, 0], hidden[1, 0])
    again = write_text_encoder_folder(tmp_path / "te2", CAPTIONS, layers=1, heads=2, head_dim=8, ff=16)
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir("A"), ckpt)
    shutil.rmtree(ckpt / "text_encoder")
    shutil.copytree(folder, ckpt / "text_encoder")
    model = StableAudioModel.from_pretrained(ckpt, device="cpu")
    audio = model.generate(CAPTIONS[0], duration=0.5, steps=2, seed=0, progress=False)
    assert torch.isfinite(audio).all()
