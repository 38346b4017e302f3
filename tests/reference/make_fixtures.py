"""Writes the reference fixtures the [reference] tests compare against.

Every tests/reference/fixtures_<area>.py module defines make(out_dir: pathlib.Path) and writes
what the reference packages (transformers, PEFT, gguf, tokenizers, safetensors) produce into
out_dir/<area>/. A module is rerun only when its source changed (stamp = SHA-256 of the file),
so a second `make test` costs nothing here.
"""
import hashlib
import importlib.util
import os
import pathlib
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    out_root = pathlib.Path(sys.argv[1])
    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    modules = sorted(here.glob("fixtures_*.py"))
    for path in modules:
        area = path.stem[len("fixtures_"):]
        out = out_root / area
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        stamp = out / ".stamp"
        if stamp.exists() and stamp.read_text() == digest:
            continue
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"fixtures: {area}", flush=True)
        module.make(out)
        stamp.write_text(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
