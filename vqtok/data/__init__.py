"""Datasets and audio/image I/O."""

from vqtok.data.audio import AUDIO_EXTENSIONS, AudioFolder, AudioInfo, list_audio_files, load_audio, resample
from vqtok.data.images import IMAGE_EXTENSIONS, ImageFolder, list_image_files, load_image
from vqtok.data.mnist import MNIST, download_mnist, load_mnist, read_idx
from vqtok.data.rules import RULES, fsdd_rule, hash_rule, hash_split
from vqtok.data.stream import AudioStream
from vqtok.data.tokens import TokenDataset
from vqtok.prior.vocab import Vocab

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MNIST",
    "RULES",
    "TokenDataset",
    "Vocab",
    "AudioFolder",
    "AudioInfo",
    "AudioStream",
    "ImageFolder",
    "download_mnist",
    "fsdd_rule",
    "hash_rule",
    "hash_split",
    "list_audio_files",
    "list_image_files",
    "load_audio",
    "load_image",
    "load_mnist",
    "read_idx",
    "resample",
]
